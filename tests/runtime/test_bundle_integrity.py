"""Hand-crafted bad bundles: each gives trtc's own error with one line that says what is wrong and
what to do; nothing is extracted, nothing from the bundle is executed, and an engine is handed to
TensorRT only after its checksum and compatibility checks pass."""

from __future__ import annotations

import copy
import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import pytest

from bundle_surgery import manifest_of, members_of, repack, write_members
from models import tiny
from trtc.runtime import BundleError, IncompatibleError, TrtcError, load
from trtc.runtime.bundle import FORMAT_VERSION, read_bundle


def _write(tmp_path: Path, data: bytes, name: str = "bad.trtb") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _refused(path: Path, error: type = BundleError, device: str = "cpu") -> str:
    """Load ``path``; it must fail with ``error`` and a one-line message naming the file (and,
    for a stage that cannot be built, the stage)."""
    with pytest.raises(error) as info:
        load(path, device=device)
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    text = str(info.value)
    assert "\n" not in text, text
    assert text.startswith(str(path)), text
    assert len(text) < 400 + len(str(path)), text
    return text


def _with_manifest(source: Path, edit: Callable[[Dict[str, Any]], Any],
                   fix_checksums: bool = True) -> bytes:
    members = members_of(source)
    manifest = copy.deepcopy(manifest_of(members))
    result = edit(manifest)
    return repack(members, manifest if result is None else result, fix_checksums=fix_checksums)


def _with_member(source: Path, name: str, body: bytes, fix_checksums: bool = True) -> bytes:
    members = [(n, body if n == name else d) for n, d in members_of(source)]
    if name == "manifest.json":
        return write_members(members)
    return repack(members, manifest_of(members), fix_checksums=fix_checksums)


def _offset_of(path: Path, name: str) -> int:
    """Where member ``name``'s bytes start in the file."""
    data = path.read_bytes()
    info = zipfile.ZipFile(path).getinfo(name)
    name_length, extra_length = struct.unpack_from("<2H", data, info.header_offset + 26)
    return info.header_offset + 30 + name_length + extra_length


# ----------------------------------------------------------------------------------------------
# Not a bundle at all
# ----------------------------------------------------------------------------------------------
def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert "no such bundle file" in _refused(tmp_path / "nope.trtb")
    assert "is a directory" in _refused(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    assert "empty" in _refused(_write(tmp_path, b""))


@pytest.mark.parametrize("data", [b"hello world", b"\x7fELF" + bytes(200), b"PK\x05\x06" + bytes(18),
                                  b"PK\x03\x04" + bytes(100)])
def test_not_a_zip(tmp_path: Path, data: bytes) -> None:
    assert "not a" in _refused(_write(tmp_path, data))


def test_zip_without_the_marker(tmp_path: Path, good: Path) -> None:
    members = [m for m in members_of(good) if m[0] != "trtc-bundle"]
    assert "no 'trtc-bundle' marker" in _refused(_write(tmp_path, write_members(members)))


def test_wrong_marker_content(tmp_path: Path, good: Path) -> None:
    members = [(n, b"trtc-bundle\r\n" if n == "trtc-bundle" else d) for n, d in members_of(good)]
    assert "bad 'trtc-bundle' marker" in _refused(_write(tmp_path, write_members(members)))


# ----------------------------------------------------------------------------------------------
# Damaged bytes
# ----------------------------------------------------------------------------------------------
def test_truncated_everywhere(tmp_path: Path, good: Path) -> None:
    data = good.read_bytes()
    cuts = [1, 4, 29, 30, 60, 200, 2000, len(data) // 2, len(data) - 100, len(data) - 22,
            len(data) - 1]
    for cut in cuts:
        text = _refused(_write(tmp_path, data[:cut]))
        assert "download or compile it again" in text or "not a" in text, (cut, text)


def test_flipped_bit_in_the_manifest_fails_its_crc(tmp_path: Path, good: Path) -> None:
    data = bytearray(good.read_bytes())
    at = data.index(b'"shape"') + 20  # inside the manifest, still valid JSON most likely
    data[at] ^= 0x01
    text = _refused(_write(tmp_path, bytes(data)))
    assert "manifest" in text and "corrupted" in text


def _refused_by_reader(path: Path) -> str:
    """``read_bundle(path)`` (every member's sha256 checked at open) refuses ``path`` with one
    line naming it."""
    with pytest.raises(BundleError) as info:
        read_bundle(path)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{path}: "), text
    return text


def test_flipped_bit_in_a_member_fails_its_checksum(tmp_path: Path, good: Path) -> None:
    """A member is verified when it is read: the ONNX the CPU path runs fails load(); a plan
    the CPU path never reads does not, and the model it loads is intact. read_bundle (what
    inspect and signing use) checks every member at open."""
    size = {i.filename: i.file_size for i in zipfile.ZipFile(good).infolist()}
    for name in ("onnx/engine0.onnx", "engines/engine0.plan"):
        data = bytearray(good.read_bytes())
        data[_offset_of(good, name) + size[name] // 2] ^= 0x40
        path = _write(tmp_path, bytes(data), name.replace("/", "-") + ".trtb")
        assert f"checksum mismatch in member '{name}'" in _refused_by_reader(path)
        if name.startswith("onnx/"):
            text = _refused(path)
            assert text == (f"{path}: checksum mismatch in member '{name}'; the file is "
                            "corrupted: download or compile it again")
            continue
        feeds = tiny.random_feeds("tiny")
        expected = load(good, device="cpu")(**feeds)
        got = load(path, device="cpu")(**feeds)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])


def test_checksum_mismatch_in_the_table(tmp_path: Path, good: Path) -> None:
    def edit(m: Dict[str, Any]) -> None:
        m["members"]["onnx/engine0.onnx"]["sha256"] = "0" * 64

    text = _refused(_write(tmp_path, _with_manifest(good, edit, fix_checksums=False)))
    assert "checksum mismatch in member 'onnx/engine0.onnx'" in text


def test_member_size_claims_checked_against_the_archive(tmp_path: Path, good: Path) -> None:
    def edit(m: Dict[str, Any]) -> None:
        m["members"]["onnx/engine0.onnx"]["bytes"] = 2**39

    assert "the manifest says 549755813888" in _refused(
        _write(tmp_path, _with_manifest(good, edit, fix_checksums=False)))


def test_absurd_size_in_the_central_directory(tmp_path: Path, good: Path) -> None:
    data = bytearray(good.read_bytes())
    entry = data.rindex(b"PK\x01\x02")  # the last central directory entry
    struct.pack_into("<L", data, entry + 24, 0xFFFFFFF0)  # uncompressed size
    struct.pack_into("<L", data, entry + 20, 0xFFFFFFF0)  # compressed size
    assert "impossible size" in _refused(_write(tmp_path, bytes(data)))


def test_rezipped_with_other_metadata_still_loads(tmp_path: Path, good: Path) -> None:
    """Zip metadata (dates, attributes) is not part of the contract; contents are."""
    path = tmp_path / "rezipped.trtb"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))  # today's date, default attributes
    assert load(path, device="cpu").inputs["data"].shape == (1, 3, 16, 16)


def test_local_header_disagreeing_with_the_directory(tmp_path: Path, good: Path) -> None:
    data = bytearray(good.read_bytes())
    info = zipfile.ZipFile(good).getinfo("onnx/engine0.onnx")
    struct.pack_into("<H", data, info.header_offset + 8, zipfile.ZIP_DEFLATED)  # method
    assert "damaged header" in _refused(_write(tmp_path, bytes(data)))
    data = bytearray(good.read_bytes())
    data[info.header_offset + 30] ^= 0x20  # first letter of the name: 'o' -> 'O'
    assert "damaged header" in _refused(_write(tmp_path, bytes(data)))


# ----------------------------------------------------------------------------------------------
# Hand-crafted archives
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../escape.plan", "/tmp/absolute.plan", "engines/../../up.plan",
                                  "C:/windows.plan", "engines\\back.plan", "./dot.plan"])
def test_unsafe_member_names_are_refused_and_nothing_is_extracted(
        tmp_path: Path, good: Path, name: str) -> None:
    members = members_of(good)
    members.append((name, b"payload"))
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    path = _write(work, write_members(members))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    text = _refused(path)
    assert "unsafe member name" in text
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written anywhere
    assert not Path("/tmp/absolute.plan").exists()


def test_missing_member(tmp_path: Path, good: Path) -> None:
    members = [m for m in members_of(good) if m[0] != "onnx/engine0.onnx"]
    assert "member 'onnx/engine0.onnx' is missing" in _refused(
        _write(tmp_path, write_members(members)))


def test_member_not_in_the_manifest(tmp_path: Path, good: Path) -> None:
    members = members_of(good) + [("engines/extra.plan", b"x")]
    assert "unexpected member 'engines/extra.plan'" in _refused(
        _write(tmp_path, write_members(members)))


def test_duplicate_member(tmp_path: Path, good: Path) -> None:
    members = members_of(good)
    members.append(members[-1])
    assert "appears twice" in _refused(_write(tmp_path, write_members(members)))


def test_compressed_members_are_refused(tmp_path: Path, good: Path) -> None:
    assert "compressed or encrypted" in _refused(
        _write(tmp_path, write_members(members_of(good), compress=True)))


def test_manifest_missing(tmp_path: Path, good: Path) -> None:
    members = [m for m in members_of(good) if m[0] != "manifest.json"]
    assert "no manifest" in _refused(_write(tmp_path, write_members(members)))


@pytest.mark.parametrize("text", [b"{", b"[]", b"null", b'"trtc"', b"\xff\xfe", b"{}",
                                  b'{"format": "trtc-bundle", "format": "x"}',
                                  b'{"format": "trtc-bundle", "format_version": NaN}',
                                  b"[" * 100000])
def test_manifest_not_json_or_not_an_object(tmp_path: Path, good: Path, text: bytes) -> None:
    assert "manifest" in _refused(_write(tmp_path, _with_member(good, "manifest.json", text)))


# ----------------------------------------------------------------------------------------------
# Manifests that do not match the schema
# ----------------------------------------------------------------------------------------------
def _set(path: List[Any], value: Any) -> Callable[[Dict[str, Any]], None]:
    def edit(m: Dict[str, Any]) -> None:
        target = m
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def _delete(path: List[Any]) -> Callable[[Dict[str, Any]], None]:
    def edit(m: Dict[str, Any]) -> None:
        target = m
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return edit


SCHEMA_CASES = {
    "format": (_set(["format"], "zip"), "manifest.format"),
    "format_version type": (_set(["format_version"], "1"), "format_version"),
    "format_version bool": (_set(["format_version"], True), "format_version"),
    "no requires": (_delete(["requires"]), "missing field 'requires'"),
    "empty inputs": (_set(["inputs"], []), "manifest.inputs: must not be empty"),
    "stage kind": (_set(["stages", 0, "kind"], "plugin"), "manifest.stages[0].kind"),
    "stage name": (_set(["stages", 0, "name"], "../../etc"), "manifest.stages[0].name"),
    "stage name newline": (_set(["stages", 0, "name"], "a\nb"), "manifest.stages[0].name"),
    "dtype": (_set(["inputs", 0, "dtype"], "complex128"), "manifest.inputs[0].dtype"),
    "negative dim": (_set(["inputs", 0, "shape", 0], -1), "manifest.inputs[0].shape"),
    "float dim": (_set(["inputs", 0, "shape", 0], 1.0), "manifest.inputs[0].shape"),
    "huge tensor": (_set(["inputs", 0, "shape"], [2**20, 2**20]), "more than 2147483647 elements"),
    "rank 17": (_set(["inputs", 0, "shape"], [1] * 17), "more than 16 dimensions"),
    "name control char": (_set(["outputs", 0, "name"], "out\x00"), "manifest.outputs[0].name"),
    "unknown output": (_set(["outputs", 0, "name"], "nowhere"), "is produced by no stage"),
    "stage input unknown": (_set(["stages", 0, "inputs", 0, "name"], "ghost"),
                            "not produced by an earlier stage"),
    "stage input shape": (_set(["stages", 0, "inputs", 0, "shape"], [1, 3, 8, 8]),
                          "where it is produced"),
    "backend": (_set(["stages", 0, "backend"], "tensorflow"), "manifest.stages[0].backend"),
    "backend_version": (_set(["stages", 0, "backend_version"], ""), "backend_version"),
    "engine member ref": (_set(["stages", 0, "engine"], "../x.plan"), "names no member"),
    "cc format": (_set(["stages", 0, "compute_capabilities"], ["sm_86"]), "look like '8.6'"),
    "member name": (_set(["members", "../evil"], {"bytes": 1, "sha256": "0" * 64}),
                    "bad member name"),
    "member sha": (_set(["members", "onnx/engine0.onnx", "sha256"], "XYZ"), "64 lowercase hex"),
    "op_types": (_set(["stages", 0, "op_types"], {"Convolution": "3"}), "op_types"),
    "custom_ops": (_set(["requires", "custom_ops"], [1]), "manifest.requires.custom_ops"),
    "source": (_delete(["source", "symbol"]), "manifest.source"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_CASES))
def test_schema_violations_name_the_field(tmp_path: Path, good: Path, case: str) -> None:
    edit, expected = SCHEMA_CASES[case]
    text = _refused(_write(tmp_path, _with_manifest(good, edit, fix_checksums=False)))
    assert "manifest" in text and expected in text, text


def test_residual_param_keys_are_checked(tmp_path: Path, mixed: Path) -> None:
    def edit(m: Dict[str, Any]) -> None:
        stage = next(s for s in m["stages"] if s["kind"] == "residual")
        stage["params"][0] = "no-colon"

    assert "'arg:NAME' / 'aux:NAME'" in _refused(_write(tmp_path, _with_manifest(mixed, edit)))


# ----------------------------------------------------------------------------------------------
# Formats and compatibility
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 99, 0, -1])
def test_unreadable_format_version_is_incompatible(tmp_path: Path, good: Path, version: int) -> None:
    text = _refused(_write(tmp_path, _with_manifest(good, _set(["format_version"], version))),
                    IncompatibleError)
    assert f"bundle format v{version}" in text and f"reads format v{FORMAT_VERSION}" in text


def test_future_format_with_unknown_fields_is_still_a_version_error(tmp_path: Path,
                                                                    good: Path) -> None:
    def edit(m: Dict[str, Any]) -> Dict[str, Any]:
        return {"format": "trtc-bundle", "format_version": 3, "graph": {"new": "layout"}}

    _refused(_write(tmp_path, _with_manifest(good, edit)), IncompatibleError)


# ----------------------------------------------------------------------------------------------
# Nothing from the bundle is executed
# ----------------------------------------------------------------------------------------------
class _Opens:
    """Unpickling this calls open(path, 'w'): proof of execution if the file appears."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


def test_pickled_residual_params_are_never_unpickled(tmp_path: Path, mixed: Path) -> None:
    marker = tmp_path / "executed"
    members = members_of(mixed)
    buffer = io.BytesIO()
    np.savez(buffer, **{"arg:pair_batchnorm0_gamma": np.array([_Opens(str(marker))], dtype=object)})
    data = _with_member(mixed, "residual/params.npz", buffer.getvalue())
    assert members  # the bundle had a params member to replace
    text = _refused(_write(tmp_path, data))
    assert "residual params are unreadable" in text
    assert not marker.exists()


@pytest.mark.parametrize("where", ["initializer", "constant"])
@pytest.mark.parametrize("relative", [False, True])
def test_onnx_with_external_data_is_refused(tmp_path: Path, good: Path, where: str,
                                            relative: bool, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    """A tensor pointing at a file outside the bundle must not be read. ONNX Runtime itself
    refuses an absolute path but reads a relative one from the working directory (a Constant's
    value came out as the file's bytes): the runtime refuses both before ONNX Runtime runs."""
    import onnx

    secret = tmp_path / "secret.bin"
    secret.write_bytes(bytes(range(256)) * 64)
    monkeypatch.chdir(tmp_path)
    model = onnx.load_from_string(dict(members_of(good))["onnx/engine0.onnx"])
    weight = model.graph.initializer[0]
    if where == "constant":  # the weight becomes a Constant node's value
        model.graph.node.insert(0, onnx.helper.make_node("Constant", [], [weight.name],
                                                         value=onnx.TensorProto()))
        model.graph.node[0].attribute[0].t.CopyFrom(weight)
        weight = model.graph.node[0].attribute[0].t
        del model.graph.initializer[0]
    weight.ClearField("raw_data")
    del weight.float_data[:]
    weight.data_location = onnx.TensorProto.EXTERNAL
    location = secret.name if relative else str(secret)
    for key, value in (("location", location), ("length", str(secret.stat().st_size))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    data = _with_member(good, "onnx/engine0.onnx", model.SerializeToString())
    assert "its ONNX refers to tensor data outside the bundle" in _refused(_write(tmp_path, data))


def _sparse_from_file(onnx: Any, dense: Any, location: str, size: int) -> Any:
    """A SparseTensorProto shaped like ``dense`` whose values are read from ``location``."""
    count = int(np.prod(dense.dims))
    values = onnx.TensorProto(name=dense.name, data_type=dense.data_type, dims=[count])
    values.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("length", str(min(size, 4 * count)))):
        entry = values.external_data.add()
        entry.key, entry.value = key, value
    indices = onnx.numpy_helper.from_array(np.arange(count, dtype=np.int64))
    return onnx.helper.make_sparse_tensor(values, indices, list(dense.dims))


@pytest.mark.parametrize("where", ["sparse_initializer", "sparse_value", "sparse_tensors",
                                   "sparse_initializer_inline"])
def test_onnx_with_sparse_tensors_is_refused(tmp_path: Path, good: Path, where: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 21: a sparse initializer, or a Constant's ``sparse_value``, whose values use external
    data made ONNX Runtime read a file from the working directory and return its bytes as the
    model's output. trtc never writes sparse tensors: every place one can be is refused, even an
    inline one (``sparse_initializer_inline``), before ONNX Runtime sees the model."""
    import onnx

    secret = tmp_path / "secret.bin"
    secret.write_bytes(bytes(range(256)) * 4096)
    monkeypatch.chdir(tmp_path)
    model = onnx.load_from_string(dict(members_of(good))["onnx/engine0.onnx"])
    dense = model.graph.initializer[0]
    sparse = _sparse_from_file(onnx, dense, secret.name, secret.stat().st_size)
    if where == "sparse_initializer_inline":
        values = onnx.numpy_helper.to_array(dense).reshape(-1)
        sparse = onnx.helper.make_sparse_tensor(
            onnx.numpy_helper.from_array(values, dense.name),
            onnx.numpy_helper.from_array(np.arange(values.size, dtype=np.int64)), list(dense.dims))
    if where.startswith("sparse_initializer"):
        model.graph.sparse_initializer.append(sparse)
    else:
        node = onnx.helper.make_node("Constant", [], [dense.name])
        attribute = node.attribute.add()
        attribute.name = "sparse_value"
        if where == "sparse_value":
            attribute.type = onnx.AttributeProto.SPARSE_TENSOR
            attribute.sparse_tensor.CopyFrom(sparse)
        else:  # a SPARSE_TENSORS attribute: no standard op takes one, the check must not care
            attribute.type = onnx.AttributeProto.SPARSE_TENSORS
            attribute.sparse_tensors.append(sparse)
        model.graph.node.insert(0, node)
    del model.graph.initializer[0]
    data = _with_member(good, "onnx/engine0.onnx", model.SerializeToString())
    text = _refused(_write(tmp_path, data))
    assert "which trtc's exporter never writes" in text and "sparse" in text, text


def test_sparse_check_covers_what_onnx_runtime_reads() -> None:
    """The crafted sparse initializer really is read by ONNX Runtime (so the refusal above is
    what stands between a bundle and the file): checked on a minimal model, outside any bundle."""
    import onnx
    import onnxruntime

    from trtc.runtime.onnx_check import OnnxRefused, check_onnx
    sparse = onnx.helper.make_sparse_tensor(
        onnx.numpy_helper.from_array(np.array([5.0], np.float32), "w"),
        onnx.numpy_helper.from_array(np.array([2], np.int64)), [4])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])],
        sparse_initializer=[sparse])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    result = session.run(None, {"x": np.zeros(4, np.float32)})[0]
    assert result.tolist() == [0, 0, 5, 0]  # ONNX Runtime uses a sparse initializer's values
    with pytest.raises(OnnxRefused, match="sparse initializer"):
        check_onnx(model.SerializeToString())


# ----------------------------------------------------------------------------------------------
# Order: integrity, then compatibility, then (only then) deserialization
# ----------------------------------------------------------------------------------------------
def test_corrupted_engine_fails_its_checksum_before_tensorrt_sees_it(
        tmp_path: Path, good: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a GPU simulated, the GPU path reads the plan, finds its checksum wrong and stops:
    no engine stage is made from the damaged bytes. The CPU path never reads it."""
    from trtc.runtime import cuda
    from trtc.runtime.stages import engine_cuda

    made: List[str] = []
    monkeypatch.setattr(cuda, "gpu_unavailable_reason", lambda device=0: None)
    monkeypatch.setattr(cuda, "compute_capability", lambda device=0: (8, 6))
    monkeypatch.setattr(engine_cuda.TensorRTStage, "__init__",
                        lambda self, *a, **k: made.append("deserialize") or 1 / 0)
    data = bytearray(good.read_bytes())
    data[_offset_of(good, "engines/engine0.plan") + 1000] ^= 0xFF
    path = _write(tmp_path, bytes(data))
    for device in ("cuda", "auto"):
        assert "checksum mismatch in member 'engines/engine0.plan'" in _refused(path, device=device)
    assert made == []
    assert load(path, device="cpu").device == "cpu"
    assert "checksum mismatch in member 'engines/engine0.plan'" in _refused_by_reader(path)


def test_backend_version_mismatch_is_named(tmp_path: Path, good: Path) -> None:
    """The real tensorrt_rtx module decides; the message names both versions."""
    import tensorrt_rtx

    from trtc.runtime.stages.engine_cuda import backend_unavailable_reason

    stage = dict(read_bundle(good).engine_stages[0], backend_version="0.0")
    reason = backend_unavailable_reason(stage, "8.6")
    assert reason is not None
    assert "built with tensorrt_rtx 0.0" in reason and tensorrt_rtx.__version__ in reason
    assert "recompile" in reason
    real = read_bundle(good).engine_stages[0]
    assert real["backend_version"] == tensorrt_rtx.__version__
    assert backend_unavailable_reason(real, "8.6") is None
    assert "not supported by TensorRT-RTX" in backend_unavailable_reason(real, "9.0")
    assert "targets compute capabilities" in backend_unavailable_reason(
        dict(real, compute_capabilities=["8.6"]), "8.9")


def test_incompatible_engine_is_never_deserialized(tmp_path: Path, good: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """With a GPU simulated (our own cuda layer answering 'CC 8.6 present'), a bundle claiming
    tensorrt_rtx 0.0 fails compatibility with IncompatibleError before any engine stage is made;
    'auto' falls back to the CPU path and says why."""
    from trtc.runtime import cuda
    from trtc.runtime.stages import engine_cuda

    made: List[str] = []
    monkeypatch.setattr(cuda, "gpu_unavailable_reason", lambda device=0: None)
    monkeypatch.setattr(cuda, "compute_capability", lambda device=0: (8, 6))
    monkeypatch.setattr(engine_cuda.TensorRTStage, "__init__",
                        lambda self, *a, **k: made.append("deserialize") or 1 / 0)

    def edit(m: Dict[str, Any]) -> None:
        m["stages"][0]["backend_version"] = "0.0"
        m["requires"]["gpu_path"] = ["tensorrt_rtx==0.0"]

    path = _write(tmp_path, _with_manifest(good, edit))
    with pytest.raises(IncompatibleError) as info:
        load(path, device="cuda")
    assert "built with tensorrt_rtx 0.0" in str(info.value)
    model = load(path, device="auto")
    assert model.device == "cpu" and "tensorrt_rtx 0.0" in model.device_reason
    assert made == []


def test_cuda_on_this_machine_is_an_incompatible_error(good: Path) -> None:
    try:
        model = load(good, device="cuda")
    except IncompatibleError as exc:
        assert "device='cuda' cannot be served" in str(exc)
    else:  # a machine with a GPU that TensorRT-RTX can run on
        assert model.device == "cuda"


def test_every_error_is_a_trtc_error_with_an_exit_code() -> None:
    assert issubclass(BundleError, TrtcError) and issubclass(IncompatibleError, TrtcError)
    assert (BundleError.exit_code, IncompatibleError.exit_code) == (3, 4)


def test_the_good_bundles_load_and_run(good: Path, mixed: Path) -> None:
    for path, name in ((good, "tiny"), (mixed, "pair")):
        model = load(path, device="cpu")
        outputs = model(**tiny.random_feeds(name))
        assert all(np.isfinite(v).all() for v in outputs.values())
        assert json.loads(zipfile.ZipFile(path).read("manifest.json"))["format_version"] == 1


def test_refit_checks_the_onnx_before_tensorrt_parses_it(good: Path) -> None:
    """The GPU path hands a stripped engine's ONNX to TensorRT's parser (refit), which resolves
    external data too: the same check runs first, and TensorRT is not touched when it refuses."""
    import onnx

    from trtc.runtime.stages.engine_cuda import _refit

    model = onnx.load_from_string(dict(members_of(good))["onnx/engine0.onnx"])
    dense = model.graph.initializer[0]
    model.graph.sparse_initializer.append(_sparse_from_file(onnx, dense, "secret.bin", 64))

    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"TensorRT's {name} was used before the ONNX check")

    class Engine:
        refittable = True

    with pytest.raises(BundleError, match="sparse initializer"):
        _refit(Untouchable(), Engine(), model.SerializeToString(), None, "engine0",
               "onnx/engine0.onnx")
