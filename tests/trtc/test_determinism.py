"""Compiling the same model twice gives the same bundle: byte-identical manifests (no timestamps,
no absolute paths, no hash-seed-dependent order), fixed member order and zip metadata; with the
TensorRT-RTX builder the engines, and so the whole files, are identical too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, List

import pytest

from models import tiny
from trtc import CompileSettings, compile


def _compile(params: Path, out: Path) -> Path:
    compile(CompileSettings(params=params, output=out, exclude_ops=("BatchNorm",), residual="mxnet"))
    return out


def _masked_manifest(path: Path) -> Dict[str, Any]:
    """The manifest with engine checksums blanked: a builder that is not bit-reproducible (full
    TensorRT picks tactics by timing) may differ there and only there."""
    manifest = json.loads(zipfile.ZipFile(path).read("manifest.json"))
    engines = {s["engine"] for s in manifest["stages"] if s["kind"] == "engine"}
    for stage in manifest["stages"]:
        if stage["kind"] == "engine":
            stage["bytes"], stage["sha256"] = 0, ""
    for name in engines:
        manifest["members"][name] = {}
    return manifest


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.export("pair", Path(tmp_path_factory.mktemp("pair-src")))


@pytest.fixture(scope="module")
def first(model_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _compile(model_files, Path(tmp_path_factory.mktemp("first")) / "pair.trtb")


def test_member_order_and_zip_metadata_are_fixed(first: Path) -> None:
    with zipfile.ZipFile(first) as zf:
        infos = zf.infolist()
        manifest = json.loads(zf.read("manifest.json"))
        assert zf.comment == b""
    names = [i.filename for i in infos]
    expected: List[str] = ["trtc-bundle", "manifest.json"]
    for stage in manifest["stages"]:  # members follow the stages, in order
        expected += [stage["engine"], stage["onnx"]] if stage["kind"] == "engine" \
            else [stage["symbol"]]
    expected.append(manifest["residual_params"])
    assert names == expected
    for info in infos:
        assert info.date_time == (1980, 1, 1, 0, 0, 0), info.filename
        assert info.compress_type == zipfile.ZIP_STORED
        assert info.create_system == 3 and info.external_attr == 0o644 << 16
        assert info.extra == b"" and info.comment == b""
    with zipfile.ZipFile(first) as zf:  # the .npz inside is fixed too
        import io

        for info in zipfile.ZipFile(io.BytesIO(zf.read("residual/params.npz"))).infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)


def test_no_timestamps_or_paths_in_the_manifest(first: Path, model_files: Path) -> None:
    raw = zipfile.ZipFile(first).read("manifest.json").decode()
    assert raw == json.dumps(json.loads(raw), indent=1, sort_keys=True)  # canonical form
    for stamp in (time.strftime("%Y-%m-%d"), time.strftime("%Y%m%d"), str(int(time.time()))[:6]):
        assert stamp not in raw
    assert str(model_files.parent) not in raw and os.sep + "tmp" not in raw
    assert not any(word in raw.lower() for word in ('"time', '"date', '"created', '"host'))


def test_the_same_model_compiles_to_the_same_bytes(first: Path, model_files: Path,
                                                   tmp_path: Path) -> None:
    """Twice in this process, from another directory, and from CLI processes with different
    hash seeds."""
    other_dir = tmp_path / "elsewhere"
    other_dir.mkdir()
    for name in (model_files.name, model_files.name.replace("-0000.params", "-symbol.json")):
        shutil.copy(model_files.parent / name, other_dir / name)
    second = _compile(model_files, tmp_path / "second.trtb")
    moved = _compile(other_dir / model_files.name, tmp_path / "moved.trtb")
    outputs = [second, moved]
    for seed in ("1", "2"):
        out = tmp_path / f"cli-{seed}.trtb"
        done = subprocess.run(
            [sys.executable, "-m", "trtc.cli", "compile", str(model_files), "-o", str(out),
             "--exclude-op", "BatchNorm", "--residual", "mxnet", "-q"],
            capture_output=True, text=True, timeout=600,
            env={**os.environ, "PYTHONHASHSEED": seed})
        assert done.returncode == 0, done.stderr
        outputs.append(out)
    reference_manifest = zipfile.ZipFile(first).read("manifest.json")
    for out in outputs:
        assert _masked_manifest(out) == _masked_manifest(first), out.name
        with zipfile.ZipFile(out) as zf:
            assert [i.filename for i in zf.infolist()] == \
                [i.filename for i in zipfile.ZipFile(first).infolist()]
            same_engines = all(zf.read(n) == zipfile.ZipFile(first).read(n)
                               for n in zf.namelist() if n.startswith("engines/"))
            if same_engines:  # TensorRT-RTX builds are bit-reproducible: everything is
                assert zf.read("manifest.json") == reference_manifest, out.name
                assert out.read_bytes() == first.read_bytes(), out.name
            for name in zf.namelist():  # everything but engines is reproducible by trtc itself
                if not name.startswith("engines/") and name != "manifest.json":
                    assert zf.read(name) == zipfile.ZipFile(first).read(name), (out.name, name)
