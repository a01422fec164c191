"""The .trtb bundle format: one schema, one writer, one reader, shared by compiler and runtime.

A bundle is a ZIP archive whose members are all *stored* (no compression), written with fixed
metadata so that the same content gives the same bytes:

    trtc-bundle                  magic member, always first: b"trtc-bundle\\n"
    manifest.json                the manifest (schema below), always second
    engines/<stage>.plan         serialized TensorRT / TensorRT-RTX engine per engine stage
    onnx/<stage>.onnx            the ONNX each engine was built from (the CPU path runs it), and
                                 (format v2) the ONNX of each ONNX Runtime stage (every path)
    residual/<stage>-symbol.json MXNet symbol of a residual (MXNet) stage
    residual/params.npz          only the params residual stages use (numpy .npz, never pickled)

The manifest's ``members`` table gives every other member's byte size and sha256; the reader
refuses a bundle with a member missing, extra, of another size or with another checksum, and
never hands out bytes it has not verified. It never reads the file whole: opening reads the ZIP
directory, the local headers and the manifest, and each member is read when it is asked for and
hashed on exactly the bytes handed out (``load`` reads only what its execution path needs:
``path_members``). Nothing is extracted to disk and nothing is executed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import stat
import struct
import tempfile
import zipfile
import zlib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ._version import __version__
from .errors import BundleError, IncompatibleError, TrtcError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAGIC_MEMBER",
    "MANIFEST_MEMBER",
    "Bundle",
    "read_bundle",
    "path_members",
    "write_bundle",
    "validate_manifest",
    "sha256_hex",
    "partial_path",
    "remove_stale_partials",
    "call_bytes",
    "zip_entry_count",
    "MAX_TENSOR_NAME_LENGTH",
    "tensor_name_ok",
]

FORMAT_NAME = "trtc-bundle"
# v1: engine and residual (MXNet) stages. v2 adds "onnx" stages: ops outside the engines run by
# ONNX Runtime on every path. The compiler writes v1 when a bundle has no ONNX stage, so older
# runtimes keep reading it; this runtime reads both.
FORMAT_VERSION = 2
MAGIC_MEMBER = "trtc-bundle"
MAGIC_BYTES = b"trtc-bundle\n"
MANIFEST_MEMBER = "manifest.json"
# --- signed bundles (runtime/signing.py): the one member outside the members table ---
SIGNATURE_MEMBER = "signature.json"  # an Ed25519 signature of manifest.json

# ----------------------------------------------------------------------------------------------
# Bounds: all that a bundle can make the runtime do, in one place. A bundle over any of them is
# refused with a BundleError naming the bound; each lies far above what `trtc compile` writes for
# real models, and keeps a small hand-crafted file from costing unbounded memory or time.
# ----------------------------------------------------------------------------------------------
MAX_MEMBERS = 4096  # members of the bundle's ZIP (its central directory is counted before parsing)
MAX_MANIFEST_BYTES = 32 * 1024 * 1024
MAX_NAME_LENGTH = 255  # of a member name
# No static tensor may hold more elements than this (TensorRT's and MXNet's int32 indexing), so a
# hand-crafted shape cannot make the runtime allocate absurd buffers.
MAX_TENSOR_ELEMENTS = 2**31 - 1
# Per-call memory estimate: every tensor a call holds between stages (model inputs, every stage's
# outputs, engine I/O buffers) plus the residual params. A 1 KB manifest could otherwise claim
# thousands of 8 GB tensors.
MAX_CALL_BYTES = 32 * 2**30
# ONNX Runtime sessions one bundle makes (engine stages on the CPU path + ONNX Runtime stages):
# each has its own thread pool; real models have a few dozen stages at most.
MAX_ORT_STAGES = 256
# More ONNX Runtime stages than this: each session's intra-op pool is one thread (bounded threads)
ORT_STAGES_MULTITHREADED = 16
MAX_ONNX_NODES = 100_000  # nodes of one engine stage's ONNX graph (ResNet-50: ~180)
MAX_SYMBOL_NODES = 100_000  # nodes of one residual stage's MXNet symbol
MAX_RESIDUAL_PARAMS = 16_384  # members of residual/params.npz (DenseNet-201 whole: ~1,000)
MAX_NPY_HEADER_BYTES = 10_000  # of one .npy header in residual/params.npz (numpy's own limit)
# The ONNX ops trtc's exporter emits (mxnet.onnx's converters, trtc/export.py's fp16 casts and
# trtc/quantize.py's int8 Q/DQ pairs), all of the default domain. Anything else in an engine stage's ONNX, and every op carrying a
# subgraph (Loop, Scan, If: unbounded work from a few bytes), is refused before ONNX Runtime
# sees it. tests/runtime/test_bundle_bounds.py checks this list against mxnet.onnx's source.
ONNX_OPS = frozenset("""
    Abs Acos Add And ArgMax ArgMin Asin Atan AveragePool BatchNormalization Cast Ceil Clip Concat
    Constant ConstantOfShape Conv ConvTranspose Cos CumSum DepthToSpace Div Dropout Elu Equal
    Erf Exp Expand Flatten Floor GRU Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
    Greater GreaterOrEqual HardSigmoid Identity InstanceNormalization LRN LSTM LeakyRelu Less
    LessOrEqual Log LogSoftmax LpNormalization LpPool MatMul Max MaxPool MaxRoiPool Min Mod Mul
    Neg NonMaxSuppression Not OneHot Or PRelu Pad Pow RNN Range Reciprocal ReduceL1 ReduceL2
    ReduceMax ReduceMean ReduceMin ReduceProd
    ReduceSum Relu Reshape Resize ReverseSequence RoiAlign ScatterND Selu Shape Sigmoid Sin Size
    Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh Tile TopK
    Transpose Unsqueeze Upsample Where Xor QuantizeLinear DequantizeLinear
""".split())

_MEMBER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_STAGE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_PARAM_KEY = re.compile(r"^(arg|aux):.+$")
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)

DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int32", "int64", "bool")
STAGE_KINDS = ("engine", "onnx", "residual")
BACKENDS = ("tensorrt", "tensorrt_rtx")
PRECISIONS = ("fp32", "fp16", "int8")


def sha256_hex(data: bytes) -> str:
    """The hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------
# Schema
# ----------------------------------------------------------------------------------------------
class _SchemaError(Exception):
    pass


def _expect(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise _SchemaError(f"{where}: {what}")


def _check_keys(obj: Any, where: str, required: Mapping[str, type]) -> None:
    _expect(isinstance(obj, dict), where, "must be an object")
    for key, typ in required.items():
        _expect(key in obj, where, f"missing field '{key}'")
        value = obj[key]
        ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
        _expect(ok, f"{where}.{key}", f"must be {getattr(typ, '__name__', typ)}")


def _check_text(value: Any, where: str, limit: int) -> None:
    _expect(_text_ok(value, limit), where, f"must be 1..{limit} printable characters")


def _text_ok(value: Any, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()


# The longest input or output name a manifest holds.
MAX_TENSOR_NAME_LENGTH = 1024


def tensor_name_ok(name: Any) -> bool:
    """Is ``name`` one a manifest takes for an input or output: 1..MAX_TENSOR_NAME_LENGTH
    printable characters (no newline, tab or NUL)? The compiler checks a model's names with it."""
    return _text_ok(name, MAX_TENSOR_NAME_LENGTH)


def _check_dims(shape: Any, where: str, dynamic: bool = False) -> int:
    """Dimensions in [0, 2^31) (-1 too where ``dynamic``); returns the element count of the
    static ones."""
    _expect(isinstance(shape, list), where, "must be a list of dimensions")
    _expect(len(shape) <= 16, where, "has more than 16 dimensions")
    elements = 1
    for d in shape:
        _expect(isinstance(d, int) and not isinstance(d, bool) and (0 <= d < 2**31 or (dynamic and d == -1)),
                where, "dimensions must be integers in [0, 2^31)" + (" or -1" if dynamic else ""))
        elements *= max(d, 1)
    _expect(elements <= MAX_TENSOR_ELEMENTS, where, f"holds more than {MAX_TENSOR_ELEMENTS} elements")
    return elements


def _check_tensor(spec: Any, where: str) -> None:
    """A tensor spec. A dynamic one (format 1, issue 12) has -1 in ``shape`` on the axes that
    vary and ``min_shape`` / ``max_shape`` (inputs also ``opt_shape``) bounding every axis."""
    _check_keys(spec, where, {"name": str, "shape": list, "dtype": str})
    _check_text(spec["name"], f"{where}.name", MAX_TENSOR_NAME_LENGTH)
    dynamic = "min_shape" in spec or "max_shape" in spec
    _check_dims(spec["shape"], f"{where}.shape", dynamic)
    if dynamic:
        lo, hi = spec.get("min_shape"), spec.get("max_shape")
        _check_dims(lo, f"{where}.min_shape")
        _check_dims(hi, f"{where}.max_shape")
        _expect(len(lo) == len(hi) == len(spec["shape"]), f"{where}.min_shape",
                "min_shape, max_shape and shape must have the same rank")
        for d, a, b in zip(spec["shape"], lo, hi):
            _expect(a <= b and (d == -1 or a == d == b) and (d != -1 or a != b or True),
                    f"{where}.max_shape", "every axis needs min <= max, and a fixed axis min = shape = max")
        if "opt_shape" in spec:
            opt = spec["opt_shape"]
            _check_dims(opt, f"{where}.opt_shape")
            _expect(len(opt) == len(lo) and all(a <= o <= b for a, o, b in zip(lo, opt, hi)),
                    f"{where}.opt_shape", "must lie inside min_shape..max_shape")
    _expect(spec["dtype"] in DTYPES, f"{where}.dtype", f"must be one of {', '.join(DTYPES)}")


def _check_optional(obj: Dict[str, Any], where: str, optional: Mapping[str, type]) -> None:
    """Fields a consumer (inspect, the runtime) reads when present: check their types too."""
    for key, typ in optional.items():
        if key in obj:
            value = obj[key]
            ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
            _expect(ok, f"{where}.{key}", f"must be {typ.__name__}")


def _check_str_list(value: Any, where: str) -> None:
    _expect(isinstance(value, list) and all(isinstance(v, str) for v in value), where,
            "must be a list of strings")


def _check_same_tensor(spec: Mapping[str, Any], known: Mapping[str, Any], where: str) -> None:
    """A tensor a stage consumes must have the shape and dtype its producer gives it."""
    producer = known[spec["name"]]
    _expect(producer["shape"] == spec["shape"] and producer["dtype"] == spec["dtype"], where,
            f"tensor '{spec['name']}' is {spec['dtype']} {spec['shape']} here but "
            f"{producer['dtype']} {producer['shape']} where it is produced")


def _check_member_ref(name: Any, members: Mapping[str, Any], where: str) -> None:
    _expect(isinstance(name, str) and name in members, where, "names no member of the bundle")


def validate_manifest(manifest: Any) -> None:
    """Check ``manifest`` against the format-1 schema.

    Raises:
        BundleError: the manifest is malformed (names the first offending field).
        IncompatibleError: the format version is one this runtime cannot read.
    """
    try:
        _check_keys(manifest, "manifest", {"format": str, "format_version": int})
        _expect(manifest["format"] == FORMAT_NAME, "manifest.format", f"must be '{FORMAT_NAME}'")
    except _SchemaError as exc:
        raise BundleError(f"not a trtc bundle manifest ({exc}); recompile with `trtc compile`") from None
    version = manifest["format_version"]
    if version > FORMAT_VERSION or version < 1:
        raise IncompatibleError(
            f"bundle format v{version} is not readable by this trtc runtime {__version__} "
            f"(reads format v{FORMAT_VERSION}); install the trtc version that wrote it or recompile")
    try:
        _validate_v1(manifest)
    except _SchemaError as exc:
        raise BundleError(f"bundle manifest is invalid: {exc}; recompile the bundle") from None


def _validate_v1(m: Dict[str, Any]) -> None:
    _check_keys(m, "manifest", {
        "trtc_version": str, "source": dict, "precision": str, "inputs": list, "outputs": list,
        "stages": list, "members": dict, "requires": dict,
    })
    _check_text(m["trtc_version"], "manifest.trtc_version", 64)
    for part in ("symbol", "params"):
        _check_keys(m["source"], "manifest.source", {part: dict})
        _check_keys(m["source"][part], f"manifest.source.{part}", {"file": str, "sha256": str})
    _expect(m["precision"] in PRECISIONS, "manifest.precision", f"must be one of {PRECISIONS}")
    members = m["members"]
    _expect(len(members) <= MAX_MEMBERS, "manifest.members",
            f"more than the bound of {MAX_MEMBERS} members (MAX_MEMBERS)")
    for name, entry in members.items():
        _expect(_valid_member_name(name) and name not in (MAGIC_MEMBER, MANIFEST_MEMBER),
                "manifest.members", f"bad member name {name[:80]!r}")
        _check_keys(entry, f"manifest.members[{name}]", {"bytes": int, "sha256": str})
        _expect(0 <= entry["bytes"] < 2**40, f"manifest.members[{name}].bytes", "out of range")
        _expect(bool(_SHA256.match(entry["sha256"])), f"manifest.members[{name}].sha256",
                "must be 64 lowercase hex digits")
    _expect(len(m["inputs"]) >= 1, "manifest.inputs", "must not be empty")
    _expect(len(m["outputs"]) >= 1, "manifest.outputs", "must not be empty")
    for i, spec in enumerate(m["inputs"]):
        _check_tensor(spec, f"manifest.inputs[{i}]")
        if "index_range" in spec:  # ids into a table of that many rows: [0, size)
            bounds = spec["index_range"]
            _expect(isinstance(bounds, list) and len(bounds) == 2
                    and all(type(b) is int for b in bounds) and 0 <= bounds[0] < bounds[1],
                    f"manifest.inputs[{i}].index_range", "must be [low, high) integers, low < high")
            _check_optional(spec, f"manifest.inputs[{i}]", {"indexes": str})
    for i, spec in enumerate(m["outputs"]):
        _check_tensor(spec, f"manifest.outputs[{i}]")
    _expect(len({s["name"] for s in m["inputs"]}) == len(m["inputs"]), "manifest.inputs",
            "names must be unique")
    ranks = {s["name"]: len(s["shape"]) for s in m["inputs"]}
    groups = m.get("dim_groups", [])
    _expect(isinstance(groups, list) and len(groups) <= 1024, "manifest.dim_groups",
            "must be a list of at most 1024 groups")
    for group in groups:  # input axes whose sizes must be equal: [[name, axis], ...]
        _expect(isinstance(group, list) and 2 <= len(group) <= 64 and all(
            isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and type(e[1]) is int
            and e[0] in ranks and 0 <= e[1] < ranks[e[0]] for e in group),
            "manifest.dim_groups", "groups must list 2..64 [input name, axis] pairs")
    _expect(1 <= len(m["stages"]) <= 10000, "manifest.stages", "must hold 1..10000 stages")
    _expect(sum(s.get("kind") in ("engine", "onnx") for s in m["stages"] if isinstance(s, dict))
            <= MAX_ORT_STAGES, "manifest.stages",
            f"more than the bound of {MAX_ORT_STAGES} engine and ONNX Runtime stages "
            "(MAX_ORT_STAGES)")

    paths = execution_paths(m)
    _expect(isinstance(m.get("paths", ["cpu", "gpu"]), list) and paths and set(paths) <= {"cpu", "gpu"},
            "manifest.paths", "must list 'cpu' and/or 'gpu'")
    available: Dict[str, Any] = {s["name"]: s for s in m["inputs"]}
    stage_names = set()
    for i, stage in enumerate(m["stages"]):
        where = f"manifest.stages[{i}]"
        _check_keys(stage, where, {"kind": str, "name": str, "inputs": list, "outputs": list})
        _expect(stage["kind"] in STAGE_KINDS, f"{where}.kind", f"must be one of {STAGE_KINDS}")
        _expect(_STAGE_NAME.match(stage["name"]) is not None, f"{where}.name",
                "must be 1..128 letters, digits, '_', '.' or '-'")
        _expect(stage["name"] not in stage_names, f"{where}.name", "duplicate stage name")
        stage_names.add(stage["name"])
        _check_optional(stage, where, {"mxnet_ops": int, "op_types": dict, "fp32_tensors": list})
        for op, count in stage.get("op_types", {}).items():
            _expect(isinstance(count, int) and not isinstance(count, bool), f"{where}.op_types",
                    "counts must be integers")
        _expect(len(stage["outputs"]) >= 1, f"{where}.outputs", "must not be empty")
        for j, spec in enumerate(stage["inputs"]):
            _check_tensor(spec, f"{where}.inputs[{j}]")
            _expect(spec["name"] in available, f"{where}.inputs[{j}]",
                    f"tensor '{spec['name']}' is not produced by an earlier stage or model input")
            _check_same_tensor(spec, available, f"{where}.inputs[{j}]")
        for j, spec in enumerate(stage["outputs"]):
            _check_tensor(spec, f"{where}.outputs[{j}]")
            available[spec["name"]] = spec
        if stage["kind"] == "engine":
            _check_keys(stage, where, {"precision": str})
            _expect(stage["precision"] in PRECISIONS, f"{where}.precision", "unknown precision")
            weights = stage.get("weights", "included")
            _expect(weights in ("included", "stripped"), f"{where}.weights",
                    "must be 'included' or 'stripped'")
            if "cpu" in paths or weights == "stripped":  # a stripped engine refits from its ONNX
                _check_keys(stage, where, {"onnx": str})
                _check_member_ref(stage["onnx"], members, f"{where}.onnx")
            if "gpu" not in paths:
                continue
            _check_keys(stage, where, {
                "backend": str, "backend_version": str, "compute_capabilities": list,
                "bytes": int, "sha256": str, "engine": str, "io": list,
            })
            _expect(stage["backend"] in BACKENDS, f"{where}.backend", f"must be one of {BACKENDS}")
            _check_text(stage["backend_version"], f"{where}.backend_version", 64)
            _check_member_ref(stage["engine"], members, f"{where}.engine")
            entry = members[stage["engine"]]
            _expect(entry["sha256"] == stage["sha256"] and entry["bytes"] == stage["bytes"],
                    f"{where}", "engine size/sha256 disagree with the members table")
            for cc in stage["compute_capabilities"]:
                _expect(isinstance(cc, str) and re.match(r"^\d{1,2}\.\d$", cc) is not None,
                        f"{where}.compute_capabilities", "entries must look like '8.6'")
            for j, spec in enumerate(stage["io"]):
                _check_tensor(spec, f"{where}.io[{j}]")
                _check_keys(spec, f"{where}.io[{j}]", {"mode": str})
                _expect(spec["mode"] in ("input", "output"), f"{where}.io[{j}].mode",
                        "must be input or output")
        elif stage["kind"] == "onnx":
            _expect(m["format_version"] >= 2, f"{where}.kind", "'onnx' stages need format v2")
            _check_keys(stage, where, {"onnx": str})
            _check_member_ref(stage["onnx"], members, f"{where}.onnx")
        else:
            _check_keys(stage, where, {"symbol": str, "params": list})
            _check_member_ref(stage["symbol"], members, f"{where}.symbol")
            for p in stage["params"]:
                _expect(isinstance(p, str) and _PARAM_KEY.match(p) is not None, f"{where}.params",
                        "must be a list of 'arg:NAME' / 'aux:NAME' keys")
            _expect(len(set(stage["params"])) == len(stage["params"]), f"{where}.params",
                    "names must be unique")
    for i, spec in enumerate(m["outputs"]):
        _expect(spec["name"] in available, f"manifest.outputs[{i}]",
                f"tensor '{spec['name']}' is produced by no stage")
        _check_same_tensor(spec, available, f"manifest.outputs[{i}]")
    params_member = m.get("residual_params")
    if params_member is not None:
        _check_member_ref(params_member, members, "manifest.residual_params")
    _check_optional(m, "manifest", {"verified": bool})
    requires = m["requires"]
    _check_keys(requires, "manifest.requires", {"mxnet": bool})
    _check_optional(requires, "manifest.requires", {"mxnet_version": str, "cpu_path": str})
    for key in ("custom_ops", "gpu_path", "mxnet_ops"):
        if key in requires:
            _check_str_list(requires[key], f"manifest.requires.{key}")


def execution_paths(manifest: Mapping[str, Any]) -> List[str]:
    """The execution paths a bundle carries: 'cpu' (each engine's ONNX, run by ONNX Runtime) and
    'gpu' (the engine plans). Bundles from before ``--target`` carry both."""
    paths = manifest.get("paths", ["cpu", "gpu"])
    return [p for p in paths if p in ("cpu", "gpu")] if isinstance(paths, list) else []


def shape_fits(spec: Mapping[str, Any], shape: Tuple[int, ...]) -> bool:
    """Is ``shape`` what a tensor spec allows (its shape, or inside min..max on its -1 axes)?"""
    want = list(spec["shape"])
    if len(shape) != len(want):
        return False
    lo, hi = spec.get("min_shape") or want, spec.get("max_shape") or want
    return all((w == d) if w != -1 else (a <= d <= b) for w, d, a, b in zip(want, shape, lo, hi))


def range_text(lo: Sequence[int], hi: Sequence[int]) -> str:
    """``1..32x3x224x224`` from min and max shapes (``1x3x224x224`` when they are equal)."""
    return "x".join(str(a) if a == b else f"{a}..{b}" for a, b in zip(lo, hi))


def shape_text(spec: Mapping[str, Any]) -> str:
    """A tensor spec's shape as ``range_text`` writes it."""
    return range_text(spec.get("min_shape") or spec["shape"], spec.get("max_shape") or spec["shape"])


def call_bytes(manifest: Mapping[str, Any]) -> int:
    """The per-call memory estimate of a (valid) manifest: every tensor a call holds between
    stages (model inputs, stage outputs, engine I/O) at its largest shape, counted once by name,
    plus the residual params. What runs inside a stage (ONNX Runtime's own intermediates) is not
    counted."""
    tensors: Dict[str, int] = {}
    specs = list(manifest["inputs"])
    for stage in manifest["stages"]:
        specs += stage["outputs"] + (stage.get("io", []) if stage["kind"] == "engine" else [])
    for spec in specs:
        dims = spec.get("max_shape")  # a dynamic tensor (-1 in its shape): its largest shape
        if not (isinstance(dims, list) and len(dims) == len(spec["shape"])
                and all(type(d) is int for d in dims)):
            dims = spec["shape"]
        elements = 1
        for d in dims:
            elements *= max(d, 0)
        tensors.setdefault(spec["name"], elements * _ITEMSIZE[spec["dtype"]])
    params = manifest.get("residual_params")
    return sum(tensors.values()) + (manifest["members"][params]["bytes"] if params else 0)


_ITEMSIZE = {"float32": 4, "float16": 2, "float64": 8, "int8": 1, "uint8": 1, "int32": 4,
             "int64": 8, "bool": 1}


def _valid_member_name(name: Any) -> bool:
    return (isinstance(name, str) and 0 < len(name) <= MAX_NAME_LENGTH
            and _MEMBER_NAME.match(name) is not None and ".." not in name.split("/"))


# ----------------------------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------------------------
def write_bundle(path: "os.PathLike[str] | str", manifest: Dict[str, Any],
                 members: Mapping[str, bytes]) -> Dict[str, Any]:
    """Write a bundle atomically: a temp file beside ``path``, fsync, then rename over it.

    A failure or kill at any point leaves ``path`` untouched (no file, or the previous bundle).

    Args:
        path: destination ``.trtb`` file.
        manifest: the manifest without its ``members`` table (filled in here).
        members: member name -> bytes, in the order they are written.

    Returns:
        The manifest as written (with ``members``).
    """
    manifest = dict(manifest)
    manifest["members"] = {name: {"bytes": len(data), "sha256": sha256_hex(data)}
                           for name, data in members.items()}
    for name in members:
        if not _valid_member_name(name) or name in (MAGIC_MEMBER, MANIFEST_MEMBER):
            raise TrtcError(f"internal error: bad bundle member name {name!r}")
    validate_manifest(manifest)
    manifest_bytes = json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8")

    path = os.fspath(path)
    fd, tmp = _make_partial(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                _write_member(zf, MAGIC_MEMBER, MAGIC_BYTES)
                _write_member(zf, MANIFEST_MEMBER, manifest_bytes)
                for name, data in members.items():
                    _write_member(zf, name, data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return manifest


# A temp file beside the target: ".NAME.HOST-PID.RANDOM.partial". The host and process id let a
# later write to the same target tell a file left by a killed process from one still being written.
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


_NAME_MAX = 255  # bytes in one file name (Linux, macOS, Windows)
_RANDOM_PART = 8  # characters tempfile.mkstemp puts between prefix and suffix


def _partial_stem(name: str) -> str:
    """``name`` as embedded in its temp files' names: itself when ".NAME.HOST-PID.RANDOM.partial"
    fits in a file name, else cut short and suffixed with a hash of the whole name (so two long
    targets sharing a beginning never share temp file names)."""
    room = (_NAME_MAX - len(f"..{_HOST}-{2**22}.") - _RANDOM_PART - len(".partial"))
    if len(name.encode("utf-8", "surrogateescape")) <= room:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    cut = name[:room - len(digest) - 1]
    while len(cut.encode("utf-8", "surrogateescape")) > room - len(digest) - 1:
        cut = cut[:-1]  # multi-byte characters: cut by bytes, not characters
    return f"{cut}~{digest}"


def _make_partial(target: str) -> Tuple[int, str]:
    directory = os.path.dirname(os.path.abspath(target))
    prefix = f".{_partial_stem(os.path.basename(target))}.{_HOST}-{os.getpid()}."
    return tempfile.mkstemp(prefix=prefix, suffix=".partial", dir=directory)


def partial_path(target: "os.PathLike[str] | str") -> str:
    """Create an empty temp file beside ``target`` (to write and rename over it); its path."""
    fd, tmp = _make_partial(os.fspath(target))
    os.close(fd)
    return tmp


def remove_stale_partials(target: "os.PathLike[str] | str") -> List[str]:
    """Delete the temp files that writes to ``target`` left behind when their process was killed
    (SIGKILL, power loss): those of this host whose process no longer runs. Returns their paths.
    Temp files of live processes, and of other hosts sharing the directory, are left alone."""
    target = os.fspath(target)
    directory = os.path.dirname(os.path.abspath(target))
    stem = re.escape(_partial_stem(os.path.basename(target)))
    pattern = re.compile(rf"^\.+{stem}\.(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\..*\.partial$")
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = pattern.match(name)
        if not match or match.group("host") != _HOST or _process_alive(int(match.group("pid"))):
            continue
        try:
            os.unlink(os.path.join(directory, name))
            removed.append(os.path.join(directory, name))
        except OSError:
            pass
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or a pid we cannot ask about): leave its file
    return True


def _write_member(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


# ----------------------------------------------------------------------------------------------
# Reader
# ----------------------------------------------------------------------------------------------
# Everything the zip/json machinery can raise on hostile bytes; turned into BundleError.
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, KeyError,
                IndexError, TypeError, OverflowError, UnicodeError, RecursionError, struct.error,
                zlib.error, NotImplementedError, MemoryError)
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # a zip local file header (APPNOTE 4.3.7)
_LOCAL_MAGIC = b"PK\x03\x04"
_CHUNK = 16 * 2**20  # bytes hashed at a time when read_bundle(verify=True) checks a member


class Bundle:
    """An opened bundle: its manifest (checked against the schema) and its file, kept open (one
    file descriptor, never reopened by path) until :meth:`close`.

    Opening checked the archive: every member the manifest lists is present, of the manifest's
    size, where its local header says (and with ``read_bundle(verify=True)``, of the manifest's
    sha256). :meth:`read_member` reads a member's bytes from the file, hashes exactly those bytes
    and hands them out only if they match the manifest's sha256: what is used is what was
    verified, even if the file changes after it was opened. Use it as a context manager or call
    :meth:`close`; a Bundle that is garbage collected closes its file too.
    """

    def __init__(self, path: str, manifest: Dict[str, Any], fd: int,
                 spans: Dict[str, Tuple[int, int]], size: int):
        self.path = path
        self.manifest = manifest
        self._fd: Optional[int] = fd
        self._spans = spans  # member name -> (start, end) of its bytes in the file
        self._size = size

    def __repr__(self) -> str:
        return (f"Bundle({self.path!r}, {len(self.manifest['members'])} members, "
                f"{'closed' if self.closed else 'open'})")

    @property
    def size(self) -> int:
        """The bundle file's size in bytes (when it was opened)."""
        return self._size

    @property
    def closed(self) -> bool:
        """Has the file been closed (:meth:`close`)?"""
        return self._fd is None

    def read_member(self, name: str) -> bytes:
        """The bytes of member ``name``, read from the file and verified against the manifest's
        sha256 before they are returned.

        Raises:
            BundleError: no such member; the bundle is closed; or the bytes are not the ones the
                manifest pins (the file is corrupted, or changed after it was opened).
        """
        span = self._spans.get(name)
        entry = self.manifest["members"].get(name)
        if span is None or entry is None:
            raise BundleError(f"{self.path}: bundle has no member '{name}'; recompile the bundle")
        fd = self._fd
        if fd is None:
            raise BundleError(f"{self.path}: the bundle is closed; open it again to read member "
                              f"'{name}'")
        try:
            data = _read_exact(self.path, fd, span[0], span[1] - span[0])
        except OSError as exc:
            raise BundleError(f"{self.path}: cannot read the bundle ({exc.strerror or exc})") from None
        if sha256_hex(data) != entry["sha256"]:
            raise _checksum_error(self.path, name)
        return data

    def verify_members(self) -> None:
        """Check every member's sha256 against the manifest, streamed a chunk at a time (bounded
        memory), whether or not anything will read it: what a signature pins, all of it.

        Raises:
            BundleError: a member's bytes are not the ones the manifest pins, or the bundle is
                closed.
        """
        fd = self._fd
        if fd is None:
            raise BundleError(f"{self.path}: the bundle is closed; open it again to verify it")
        for name, (start, end) in self._spans.items():
            entry = self.manifest["members"].get(name)
            if entry is not None and _member_sha256(self.path, fd, start, end) != entry["sha256"]:
                raise _checksum_error(self.path, name)

    def close(self) -> None:
        """Close the file (idempotent). Members cannot be read afterwards."""
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> "Bundle":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # OSError, or a module already torn down at interpreter exit
            pass

    @property
    def engine_stages(self) -> List[Dict[str, Any]]:
        return [s for s in self.manifest["stages"] if s["kind"] == "engine"]

    @property
    def residual_stages(self) -> List[Dict[str, Any]]:
        """The MXNet stages."""
        return [s for s in self.manifest["stages"] if s["kind"] == "residual"]

    @property
    def onnx_stages(self) -> List[Dict[str, Any]]:
        """The ONNX Runtime stages (ops outside engines with an exact ONNX)."""
        return [s for s in self.manifest["stages"] if s["kind"] == "onnx"]


def path_members(manifest: Mapping[str, Any], path: str) -> List[str]:
    """The members execution path ``path`` ('cpu' or 'gpu') of a (valid) manifest reads, in the
    order ``load`` reads them: each engine stage's ONNX (cpu) or plan (gpu, plus its ONNX when
    the engine is weight-stripped and refitted from it at load), each ONNX Runtime stage's ONNX
    (both paths), each residual stage's MXNet symbol and, when there are residual stages, the
    residual params. ``load`` reads nothing else.

    Raises:
        ValueError: ``path`` is not 'cpu' or 'gpu'.
    """
    if path not in ("cpu", "gpu"):
        raise ValueError(f"path must be 'cpu' or 'gpu', not {path!r}")
    names: List[str] = []
    params = manifest.get("residual_params")
    for stage in manifest["stages"]:
        if stage["kind"] == "engine":
            if path == "gpu":
                names.append(stage["engine"])
            if path == "cpu" or stage.get("weights") == "stripped":
                names.append(stage["onnx"])
        elif stage["kind"] == "onnx":
            names.append(stage["onnx"])
        else:
            if params:  # read once, before the first residual stage
                names.append(params)
                params = None
            names.append(stage["symbol"])
    return list(dict.fromkeys(names))


def read_bundle(path: "os.PathLike[str] | str", max_bytes: Optional[int] = None,
                verify: bool = True) -> Bundle:
    """Open and check a bundle: magic, ZIP directory, manifest schema, member table, each
    member's local header and size, and (``verify``) every member's sha256.

    The file is never read whole: opening reads its first bytes, its ZIP central directory, the
    members' local headers and the manifest; ``verify`` streams each member through sha256 in
    chunks of 16 MiB. The returned :class:`Bundle` keeps the file open for
    :meth:`Bundle.read_member` (which verifies every member it returns); close it when done
    (``with read_bundle(path) as bundle:``). Nothing is extracted and nothing is deserialized
    here; an engine's bytes reach TensorRT only later, after their checksum and the
    compatibility check (``select_device``) have passed.

    Args:
        path: the ``.trtb`` file.
        max_bytes: refuse files larger than this (default: no limit but the disk's).
        verify: check every member's sha256 now (default: a damaged member is refused whether
            or not it is ever read). ``load`` passes False and verifies only the members its
            execution path reads (``path_members``), as it reads them.

    Raises:
        BundleError: missing, unreadable, truncated, corrupted or not a trtc bundle.
        IncompatibleError: a format version this runtime cannot read.
    """
    path = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:  # non-blocking: opening a FIFO with no writer must not hang; it is refused below
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise BundleError(f"{path}: no such bundle file; check the path") from None
    except IsADirectoryError:
        raise BundleError(f"{path}: is a directory, not a bundle file") from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the bundle ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
            raise BundleError(f"{path}: is {kind}, not a bundle file; pass the .trtb file "
                              "`trtc compile` wrote")
        size = info.st_size
        if max_bytes is not None and size > max_bytes:
            raise BundleError(f"{path}: {size} bytes is larger than the allowed {max_bytes}")
        if size == 0:
            raise BundleError(f"{path}: the file is empty; it is not a trtc bundle (compile it "
                              "again)")
        try:
            return _open(path, fd, size, verify)
        except TrtcError:
            raise
        except MemoryError:
            raise BundleError(f"{path}: the file is too large to load into memory") from None
        except OSError as exc:
            raise BundleError(f"{path}: cannot read the bundle ({exc.strerror or exc})") from None
        except _READ_ERRORS as exc:
            raise BundleError(f"{path}: not a readable trtc bundle ({_short(exc)}); the file is "
                              "truncated or corrupted: download or compile it again") from None
    except BaseException:
        os.close(fd)
        raise


_FILE_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)",
               stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
               stat.S_IFSOCK: "a socket"}
_END_RECORD = struct.Struct("<4s4H2LH")  # ZIP end of central directory record (APPNOTE 4.3.16)
_END_MAGIC = b"PK\x05\x06"
_END64_LOCATOR_MAGIC, _END64_MAGIC = b"PK\x06\x07", b"PK\x06\x06"
_DIRECTORY_ENTRY = struct.Struct("<4s6H3L5H2L")  # a central directory file header (4.3.12)
_DIRECTORY_MAGIC = b"PK\x01\x02"
_FIXED_MEMBERS = 3  # the marker, the manifest and a signature: outside the manifest's table
# Bytes one central directory entry of a bundle may take: its header, a name of at most
# MAX_NAME_LENGTH and room for extra fields (zip64 sizes, timestamps of other zip tools).
_MAX_DIRECTORY_ENTRY = 1024


def _read_at(fd: int, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` of the open file ``fd`` (fewer only at the end of the
    file), read with pread: the file position is never used, so threads may read at once."""
    data = os.pread(fd, length, offset)
    if len(data) == length or not data:
        return data
    chunks, got = [data], len(data)  # a short read (over 2 GiB at once, or a signal): go on
    while got < length:
        chunk = os.pread(fd, min(length - got, 1 << 30), offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_exact(path: str, fd: int, offset: int, length: int) -> bytes:
    """Exactly ``length`` bytes at ``offset``; a file that ends sooner shrank after it was
    opened."""
    data = _read_at(fd, offset, length)
    if len(data) != length:
        raise BundleError(f"{path}: the file shrank while it was read; the file is truncated: "
                          "download or compile it again")
    return data


def _member_sha256(path: str, fd: int, start: int, end: int) -> str:
    """The hex sha256 of the file's bytes [start, end), read _CHUNK bytes at a time."""
    digest = hashlib.sha256()
    for offset in range(start, end, _CHUNK):
        digest.update(_read_exact(path, fd, offset, min(_CHUNK, end - offset)))
    return digest.hexdigest()


def _checksum_error(path: str, name: str) -> BundleError:
    return BundleError(f"{path}: checksum mismatch in member '{name}'; the file is corrupted: "
                       "download or compile it again")


_HEAD_BYTES = _LOCAL_HEADER.size + len(MAGIC_MEMBER)


def _head_problem(head: bytes) -> Optional[str]:
    """What is wrong with a file's first bytes for a trtc bundle (a ZIP whose first member is
    the magic member), or None."""
    if not head.startswith(_LOCAL_MAGIC):
        return "not a ZIP archive"
    if head[_LOCAL_HEADER.size:] != MAGIC_MEMBER.encode() or len(head) < len(_LOCAL_MAGIC) + 26 \
            or struct.unpack_from("<H", head, 26)[0] != len(MAGIC_MEMBER):
        return f"no '{MAGIC_MEMBER}' marker"
    return None


def looks_like_bundle(path: "os.PathLike[str] | str") -> bool:
    """Does the file at ``path`` start like a trtc bundle? (Reads a few bytes; no validation.)"""
    try:
        with open(path, "rb") as fh:
            return _head_problem(fh.read(_HEAD_BYTES)) is None
    except OSError:
        return False


def _check_directory(path: str, fd: int, size: int) -> None:
    """Check what the file's first bytes and its ZIP central directory say before anything else
    is parsed: a file that is not a bundle, or claims more members than a bundle may hold, is
    refused having read a few kilobytes, whatever its size."""
    problem = _head_problem(_read_at(fd, 0, _HEAD_BYTES))
    if problem:
        raise BundleError(f"{path}: not a trtc bundle ({problem}); pass a file written by "
                          "`trtc compile`")
    # The end record, first where trtc writes it (last, with no comment; the 76 bytes before
    # it hold a ZIP64 locator if any), else searched for in the last 64 KiB, as zipfile does.
    tail_offset = max(0, size - (_END_RECORD.size + 76))
    tail = _read_at(fd, tail_offset, size - tail_offset)
    if not (tail[-_END_RECORD.size:-_END_RECORD.size + 4] == _END_MAGIC and tail[-2:] == b"\0\0"):
        tail_offset = max(0, size - (_END_RECORD.size + 0xFFFF + 76))
        tail = _read_at(fd, tail_offset, size - tail_offset)
    entries, directory_size, directory_start = _end_record(tail, tail_offset)
    limit = MAX_MEMBERS + _FIXED_MEMBERS
    if entries > limit or directory_size > limit * _MAX_DIRECTORY_ENTRY:
        raise BundleError(f"{path}: its ZIP directory lists {entries} members in "
                          f"{directory_size} bytes, over the bound of {MAX_MEMBERS} members "
                          "(MAX_MEMBERS); refusing a bundle `trtc compile` did not write")
    counted = _count_entries(_read_at(fd, directory_start, directory_size), limit)
    if counted > limit:
        raise BundleError(f"{path}: its ZIP directory holds more than {MAX_MEMBERS} members "
                          "(MAX_MEMBERS); refusing a bundle `trtc compile` did not write")


def _end_record(tail: bytes, tail_offset: int) -> Tuple[int, int, int]:
    """(entries, size, start) of the central directory of the ZIP file ending with ``tail``
    (which starts at file offset ``tail_offset``), found the way Python's zipfile finds it.

    Raises:
        ValueError: there is no end of central directory record.
    """
    at = len(tail) - _END_RECORD.size
    if not (at >= 0 and tail[at:at + 4] == _END_MAGIC and tail[-2:] == b"\0\0"):
        at = tail.rfind(_END_MAGIC, max(0, len(tail) - _END_RECORD.size - 0xFFFF))
        if at < 0 or at + _END_RECORD.size > len(tail):
            raise ValueError("no ZIP end of central directory record")
    fields = _END_RECORD.unpack_from(tail, at)
    entries, size, end = fields[4], fields[5], at
    if at >= 76 and tail[at - 20:at - 16] == _END64_LOCATOR_MAGIC \
            and tail[at - 76:at - 72] == _END64_MAGIC:  # ZIP64: the record before the locator
        entries, size = struct.unpack_from("<2Q", tail, at - 76 + 32)
        end = at - 76
    start = tail_offset + end - size
    if start < 0:
        raise ValueError("bad offset for the central directory")
    return entries, size, start


def _count_entries(directory: bytes, limit: int) -> int:
    """How many entries the central directory ``directory`` holds, counting no further than
    ``limit`` + 1 (zipfile parses entries until the directory's size, whatever the count says)."""
    count = position = 0
    while position < len(directory) and count <= limit:
        if position + _DIRECTORY_ENTRY.size > len(directory):
            raise ValueError("truncated central directory")
        fields = _DIRECTORY_ENTRY.unpack_from(directory, position)
        if fields[0] != _DIRECTORY_MAGIC:
            raise ValueError("bad magic number for central directory")
        position += _DIRECTORY_ENTRY.size + fields[10] + fields[11] + fields[12]
        count += 1
    return count


def zip_entry_count(data: bytes, limit: int) -> int:
    """How many members the in-memory ZIP ``data`` holds, counted without parsing them, and no
    further than ``limit`` + 1: bound a ZIP before handing it to zipfile or numpy.

    Raises:
        ValueError: not a ZIP file.
    """
    entries, size, start = _end_record(data[-(_END_RECORD.size + 0xFFFF + 76):],
                                       max(0, len(data) - (_END_RECORD.size + 0xFFFF + 76)))
    if entries > limit or size > (limit + 1) * 4096:
        return max(entries, limit + 1)
    return _count_entries(data[start:start + size], limit)


def _open(path: str, fd: int, size: int, verify: bool) -> Bundle:
    """Check the archive's structure and the manifest, reading the file's first bytes, its
    central directory, the members' local headers and the manifest (with ``verify``, every
    member's bytes too, a chunk at a time); a Bundle over ``fd``."""
    _check_directory(path, fd, size)
    # zipfile reads only the central directory when it opens a file (the position it uses is
    # this call's own: members are read later with pread)
    with os.fdopen(fd, "rb", buffering=0, closefd=False) as fh, zipfile.ZipFile(fh) as zf:
        infos = zf.infolist()
    if not infos or infos[0].filename != MAGIC_MEMBER:
        raise BundleError(f"{path}: not a trtc bundle (no '{MAGIC_MEMBER}' marker); "
                          "pass a file written by `trtc compile`")
    if len(infos) > MAX_MEMBERS + _FIXED_MEMBERS:
        raise BundleError(f"{path}: {len(infos)} members is more than a bundle can hold")
    spans: Dict[str, Tuple[int, int]] = {}
    for info in infos:
        name = info.filename
        if name not in (MAGIC_MEMBER, MANIFEST_MEMBER) and not _valid_member_name(name):
            raise BundleError(f"{path}: unsafe member name {_clip(name)!r}; refusing a bundle "
                              "`trtc compile` did not write")
        if name in spans:
            raise BundleError(f"{path}: member '{name}' appears twice; refusing a bundle "
                              "`trtc compile` did not write")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            raise BundleError(f"{path}: member '{name}' is compressed or encrypted, which "
                              "`trtc compile` never writes; use a bundle written by trtc")
        if info.file_size != info.compress_size or info.file_size > size:
            raise BundleError(f"{path}: member '{name}' claims an impossible size "
                              f"({info.file_size} bytes)")
        spans[name] = _member_span(path, fd, size, info)
    start, end = spans[MAGIC_MEMBER]
    if end - start != len(MAGIC_BYTES) or _read_exact(path, fd, start, end - start) != MAGIC_BYTES:
        raise BundleError(f"{path}: bad '{MAGIC_MEMBER}' marker; not a trtc bundle")
    if MANIFEST_MEMBER not in spans:
        raise BundleError(f"{path}: bundle has no manifest; compile it again")
    manifest_info = next(i for i in infos if i.filename == MANIFEST_MEMBER)
    if manifest_info.file_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    start, end = spans[MANIFEST_MEMBER]
    raw = _read_exact(path, fd, start, end - start)
    if zlib.crc32(raw) != manifest_info.CRC:  # the manifest has no sha256 of its own
        raise BundleError(f"{path}: manifest fails its CRC check; the file is corrupted: download "
                          "or compile it again")
    manifest = _load_json(path, raw)
    try:
        validate_manifest(manifest)
    except (BundleError, IncompatibleError) as exc:
        raise type(exc)(f"{path}: {exc}") from None
    per_call = call_bytes(manifest)
    if per_call > MAX_CALL_BYTES:
        raise BundleError(f"{path}: a call would hold {per_call / 2**30:.1f} GiB of tensors and "
                          f"params, over the bound of {MAX_CALL_BYTES // 2**30} GiB "
                          "(MAX_CALL_BYTES); compile the model for smaller input shapes")
    listed = set(manifest["members"])
    present = set(spans) - {MAGIC_MEMBER, MANIFEST_MEMBER, SIGNATURE_MEMBER}  # signing.py
    if listed - present:
        raise BundleError(f"{path}: member '{sorted(listed - present)[0]}' is missing; "
                          "the file is incomplete: download or compile it again")
    if present - listed:
        raise BundleError(f"{path}: unexpected member '{sorted(present - listed)[0]}' not in "
                          "the manifest; refusing a tampered bundle")
    for name in sorted(listed):  # sizes now; checksums now (verify) and whenever read
        entry = manifest["members"][name]
        start, end = spans[name]
        if end - start != entry["bytes"]:
            raise BundleError(f"{path}: member '{name}' has {end - start} bytes, the manifest says "
                              f"{entry['bytes']}; the file is corrupted: download or compile it again")
        if verify and _member_sha256(path, fd, start, end) != entry["sha256"]:
            raise _checksum_error(path, name)
    return Bundle(path, manifest, fd, spans, size)


def _member_span(path: str, fd: int, size: int, info: zipfile.ZipInfo) -> Tuple[int, int]:
    """Where ``info``'s bytes lie in the file (of ``size`` bytes), after checking its local
    header agrees with the central directory (the same checks zipfile.ZipFile.open makes)."""
    offset = info.header_offset
    if offset < 0 or offset + _LOCAL_HEADER.size > size:
        raise BundleError(f"{path}: member '{info.filename}' lies outside the file; the file is "
                          "truncated or corrupted: download or compile it again")
    name = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
    raw = _read_exact(path, fd, offset, min(_LOCAL_HEADER.size + len(name), size - offset))
    header = _LOCAL_HEADER.unpack_from(raw)
    magic, method, name_length, extra_length = header[0], header[4], header[10], header[11]
    start = offset + _LOCAL_HEADER.size + name_length + extra_length
    end = start + info.file_size
    if (magic != _LOCAL_MAGIC or method != zipfile.ZIP_STORED or end > size
            or name_length != len(name) or raw[_LOCAL_HEADER.size:_LOCAL_HEADER.size + name_length] != name):
        raise BundleError(f"{path}: member '{info.filename}' has a damaged header; the file is "
                          "corrupted: download or compile it again")
    return start, end


def _load_json(path: str, raw: bytes) -> Any:
    def no_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs):
            raise ValueError("a key appears twice in one object")
        return result

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates,
                          parse_constant=no_constant)
    except (UnicodeError, ValueError, RecursionError) as exc:
        raise BundleError(f"{path}: manifest is not valid JSON ({_short(exc)}); the file is "
                          "corrupted: download or compile it again") from None


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
