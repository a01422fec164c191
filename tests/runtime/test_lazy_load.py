"""Lazy, bounded loading (issue 15, part 3): ``load()`` reads and checksums only the members its
execution path needs (``path_members``), each verified on the very bytes it hands out, never
the whole file, and closes the file before it returns. ``read_bundle()`` still checks every
member at open by default (streamed in chunks). Real bundles from the real compiler; the GPU
path's member selection is checked without executing engines (none can run here)."""

from __future__ import annotations

import copy
import os
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest

from bundle_surgery import manifest_of, members_of, repack, write_members
from models import tiny
from trtc.runtime import BundleError, load
from trtc.runtime import bundle as bundle_format
from trtc.runtime import model as model_module
from trtc.runtime.bundle import Bundle, path_members, read_bundle


def _manifest(path: Path) -> Dict[str, Any]:
    with read_bundle(path) as bundle:
        return bundle.manifest


def _stripped(manifest: Dict[str, Any]) -> Dict[str, Any]:
    """``manifest`` with its first engine stage marked weight-stripped."""
    edited = copy.deepcopy(manifest)
    next(s for s in edited["stages"] if s["kind"] == "engine")["weights"] = "stripped"
    return edited


def _spans(path: Path) -> Dict[str, Tuple[int, int]]:
    """Where each member's bytes lie in the file, from zipfile's own view of it."""
    data = path.read_bytes()
    spans = {}
    for info in zipfile.ZipFile(path).infolist():
        name_length, extra_length = np.frombuffer(data, "<u2", 2, info.header_offset + 26)
        start = info.header_offset + 30 + int(name_length) + int(extra_length)
        spans[info.filename] = (start, start + info.file_size)
    return spans


def _corrupted(tmp_path: Path, source: Path, name: str) -> Path:
    """``source`` with member ``name``'s bytes flipped (same size; the manifest unchanged, so
    its sha256 no longer matches)."""
    members = [(n, bytes(b ^ 0xFF for b in d) if n == name else d) for n, d in members_of(source)]
    path = tmp_path / f"{name.replace('/', '-')}.trtb"
    path.write_bytes(write_members(members))
    return path


class _Reads:
    """Records the names Bundle.read_member is asked for (and still reads them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.names: List[str] = []
        real = Bundle.read_member

        def spy(bundle: Bundle, name: str) -> bytes:
            self.names.append(name)
            return real(bundle, name)

        monkeypatch.setattr(Bundle, "read_member", spy)


# ----------------------------------------------------------------------------------------------
# path_members: the one function that says what each path reads
# ----------------------------------------------------------------------------------------------
def test_path_members_of_an_all_target_bundle(good: Path) -> None:
    m = _manifest(good)
    assert m["paths"] == ["cpu", "gpu"]
    assert path_members(m, "cpu") == ["onnx/engine0.onnx"]
    assert path_members(m, "gpu") == ["engines/engine0.plan"]
    with pytest.raises(ValueError, match="'cpu' or 'gpu'"):
        path_members(m, "cuda")


def test_path_members_of_a_mixed_bundle(mixed: Path) -> None:
    m = _manifest(mixed)
    engines = [s for s in m["stages"] if s["kind"] == "engine"]
    residual = [s["symbol"] for s in m["stages"] if s["kind"] == "residual"]
    assert len(engines) == 2 and residual and m["residual_params"] == "residual/params.npz"
    shared = [m["residual_params"], *residual]
    assert sorted(path_members(m, "cpu")) == sorted([s["onnx"] for s in engines] + shared)
    assert sorted(path_members(m, "gpu")) == sorted([s["engine"] for s in engines] + shared)
    # together the two paths read every member, and no member twice
    for path in ("cpu", "gpu"):
        assert len(set(path_members(m, path))) == len(path_members(m, path))
    assert set(path_members(m, "cpu")) | set(path_members(m, "gpu")) == set(m["members"])


def test_path_members_of_a_weight_stripped_stage(mixed: Path) -> None:
    """The GPU path refits a stripped engine from its ONNX: it reads that ONNX, and only it."""
    m = _stripped(_manifest(mixed))
    first, second = [s for s in m["stages"] if s["kind"] == "engine"]
    gpu = path_members(m, "gpu")
    assert first["onnx"] in gpu and first["engine"] in gpu
    assert second["onnx"] not in gpu and second["engine"] in gpu
    assert path_members(m, "cpu") == path_members(_manifest(mixed), "cpu")


# ----------------------------------------------------------------------------------------------
# The CPU path reads what path_members lists, nothing else
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["good", "mixed"])
def test_cpu_load_reads_exactly_its_members(which: str, good: Path, mixed: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = {"good": good, "mixed": mixed}[which]
    reads = _Reads(monkeypatch)
    model = load(path, device="cpu")
    assert sorted(reads.names) == sorted(path_members(model.manifest, "cpu"))
    assert not any(name.startswith("engines/") for name in reads.names)


def test_load_never_reads_the_file_whole(mixed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening (verify=False) reads no member's bytes but the marker's and the manifest's;
    load() then reads each member of its path once, and no plan's bytes at all; opening with
    verify=True reads members a chunk at a time."""
    spans = _spans(mixed)
    calls: List[Tuple[int, int]] = []
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, at: calls.append((at, n)) or real(fd, n, at))

    def touched(name: str) -> List[Tuple[int, int]]:
        start, end = spans[name]
        return [(at, n) for at, n in calls if at < end and at + n > start]

    members = sorted(_manifest(mixed)["members"])
    calls.clear()
    read_bundle(mixed, verify=False).close()
    assert not any(touched(name) for name in members)
    calls.clear()
    model = load(mixed, device="cpu")
    for name in members:
        wanted = name in path_members(model.manifest, "cpu")
        start, end = spans[name]
        assert touched(name) == ([(start, end - start)] if wanted else []), name
    monkeypatch.setattr(bundle_format, "_CHUNK", 256)
    calls.clear()
    read_bundle(mixed).close()
    assert all(n <= 256 for name in members for _, n in touched(name))
    assert all(touched(name) for name in members)


# ----------------------------------------------------------------------------------------------
# Damage: what a path reads is verified before it is used; what it never reads goes unnoticed
# ----------------------------------------------------------------------------------------------
def test_a_damaged_member_fails_load_only_on_the_path_that_reads_it(tmp_path: Path,
                                                                    mixed: Path) -> None:
    """Each member of the mixed bundle in turn, its bytes flipped: read_bundle (verify=True)
    refuses every one; load(device='cpu') refuses exactly those its path reads, with the
    checksum error, and runs the others with the intact bundle's outputs."""
    feeds = tiny.random_feeds("pair")
    expected = load(mixed, device="cpu")(**feeds)
    needed = path_members(_manifest(mixed), "cpu")
    for name in sorted(_manifest(mixed)["members"]):
        path = _corrupted(tmp_path, mixed, name)
        message = (f"{path}: checksum mismatch in member '{name}'; the file is corrupted: "
                   "download or compile it again")
        with pytest.raises(BundleError) as info:
            read_bundle(path)
        assert str(info.value) == message
        if name in needed:
            with pytest.raises(BundleError) as info:
                load(path, device="cpu")
            assert str(info.value) == message
            continue
        assert name.startswith("engines/")
        got = load(path, device="cpu")(**feeds)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])


def test_bytes_changed_after_open_are_never_handed_out(tmp_path: Path, good: Path) -> None:
    """A member is hashed on the bytes read_member returns: a file edited in place after it
    was opened (and verified) fails the check; one replaced by rename is not read at all (the
    Bundle reads its own open file, never the path again)."""
    path = tmp_path / "changing.trtb"
    path.write_bytes(good.read_bytes())
    name = "onnx/engine0.onnx"
    start, end = _spans(path)[name]
    with read_bundle(path) as bundle:  # every member verified here
        intact = bundle.read_member(name)
        with open(path, "r+b") as fh:
            fh.seek((start + end) // 2)
            fh.write(b"\x00\xff\x00\xff")
        with pytest.raises(BundleError, match=f"checksum mismatch in member '{name}'"):
            bundle.read_member(name)
    path.write_bytes(good.read_bytes())
    with read_bundle(path) as bundle:
        replacement = tmp_path / "other.trtb"
        replacement.write_bytes(b"not a bundle")
        os.replace(replacement, path)
        assert bundle.read_member(name) == intact


# ----------------------------------------------------------------------------------------------
# The GPU path's member selection, without executing engines
# ----------------------------------------------------------------------------------------------
class _Recorder:
    """Stands in for TensorRTStage / MXNetStage: records what it was given, runs nothing."""

    made: List[Tuple[str, str, bytes, Optional[bytes]]] = []

    def __init__(self, stage: Dict[str, Any], data: bytes, *args: Any,
                 refit_onnx: Optional[bytes] = None, **kwargs: Any):
        type(self).made.append((stage["kind"], stage["name"], data, refit_onnx))


@pytest.mark.parametrize("stripped", [False, True])
def test_gpu_load_reads_plans_and_the_onnx_of_stripped_stages_only(
        tmp_path: Path, mixed: Path, stripped: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from trtc.runtime.stages import engine_cuda, residual

    path = mixed
    if stripped:  # the manifest's first engine marked weight-stripped, its checksums intact
        members = members_of(mixed)
        path = tmp_path / "stripped.trtb"
        path.write_bytes(repack(members, _stripped(manifest_of(members))))
    monkeypatch.setattr(model_module, "select_device", lambda bundle, device: ("cuda", None))
    monkeypatch.setattr(engine_cuda, "TensorRTStage", _Recorder)
    monkeypatch.setattr(engine_cuda, "GpuPipeline", lambda *args, **kwargs: None)
    monkeypatch.setattr(residual, "MXNetStage", _Recorder)
    monkeypatch.setattr(_Recorder, "made", [])
    reads = _Reads(monkeypatch)
    model = load(path, device="cuda")
    m = model.manifest
    assert sorted(reads.names) == sorted(path_members(m, "gpu"))
    onnx_read = [n for n in reads.names if n.startswith("onnx/")]
    engines = [s for s in m["stages"] if s["kind"] == "engine"]
    assert onnx_read == ([engines[0]["onnx"]] if stripped else [])
    with read_bundle(path) as bundle:  # each engine stage got its plan, and its ONNX to refit
        expected = [("engine", s["name"], bundle.read_member(s["engine"]),
                     bundle.read_member(s["onnx"]) if stripped and i == 0 else None)
                    for i, s in enumerate(engines)]
    assert [made for made in _Recorder.made if made[0] == "engine"] == expected
    assert len(model.stages) == len(_Recorder.made) == len(m["stages"])


# ----------------------------------------------------------------------------------------------
# The file is closed once the model is built (and when loading fails)
# ----------------------------------------------------------------------------------------------
def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_the_file_is_closed_after_load(tmp_path: Path, mixed: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    load(mixed, device="cpu")  # imports, thread pools: whatever they open stays open
    opened: List[Bundle] = []
    real = model_module.read_bundle
    monkeypatch.setattr(model_module, "read_bundle",
                        lambda *a, **k: opened.append(real(*a, **k)) or opened[-1])
    before = _open_fds()
    model = load(mixed, device="cpu")
    assert opened[-1].closed and _open_fds() == before
    assert set(model(**tiny.random_feeds("pair"))) == set(model.outputs)
    with pytest.raises(BundleError, match="the bundle is closed"):
        opened[-1].read_member(path_members(model.manifest, "cpu")[0])
    broken = _corrupted(tmp_path, mixed, path_members(model.manifest, "cpu")[0])
    with pytest.raises(BundleError, match="checksum mismatch"):
        load(broken, device="cpu")
    assert opened[-1].closed and _open_fds() == before
    bundle = read_bundle(mixed)
    assert _open_fds() == before + 1 and not bundle.closed
    del bundle  # dropped without close(): the file is closed all the same
    assert _open_fds() == before
