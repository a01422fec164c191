"""The .trtb bundle format: one schema, one writer, one reader, shared by compiler and runtime.

A bundle is a ZIP archive whose members are all *stored* (no compression), written with fixed
metadata so that the same content gives the same bytes:

    trtc-bundle                  magic member, always first: b"trtc-bundle\\n"
    manifest.json                the manifest (schema below), always second
    engines/<stage>.plan         serialized TensorRT / TensorRT-RTX engine per engine stage
    onnx/<stage>.onnx            the ONNX each engine was built from (the CPU path runs it)
    residual/<stage>-symbol.json MXNet symbol of a residual stage
    residual/params.npz          only the params residual stages use (numpy .npz, never pickled)

The manifest's ``members`` table gives every other member's byte size and sha256; the reader
refuses a bundle with a member missing, extra, of another size or with another checksum, and
never hands out bytes it has not verified. Nothing is extracted to disk and nothing is executed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ._version import __version__
from .errors import BundleError, IncompatibleError, TrtcError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAGIC_MEMBER",
    "MANIFEST_MEMBER",
    "Bundle",
    "read_bundle",
    "write_bundle",
    "validate_manifest",
    "sha256_hex",
    "partial_path",
    "remove_stale_partials",
]

FORMAT_NAME = "trtc-bundle"
FORMAT_VERSION = 1
MAGIC_MEMBER = "trtc-bundle"
MAGIC_BYTES = b"trtc-bundle\n"
MANIFEST_MEMBER = "manifest.json"

# Limits that keep a hand-crafted file from exhausting memory or time.
MAX_MEMBERS = 4096
MAX_MANIFEST_BYTES = 32 * 1024 * 1024
MAX_NAME_LENGTH = 255
_MEMBER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_STAGE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_PARAM_KEY = re.compile(r"^(arg|aux):.+$")
# No static tensor may hold more elements than this (TensorRT's and MXNet's int32 indexing), so a
# hand-crafted shape cannot make the runtime allocate absurd buffers.
MAX_TENSOR_ELEMENTS = 2**31 - 1
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)

DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int32", "int64", "bool")
STAGE_KINDS = ("engine", "residual")
BACKENDS = ("tensorrt", "tensorrt_rtx")
PRECISIONS = ("fp32", "fp16")


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
    _expect(isinstance(value, str) and 0 < len(value) <= limit and value.isprintable(), where,
            f"must be 1..{limit} printable characters")


def _check_tensor(spec: Any, where: str) -> None:
    _check_keys(spec, where, {"name": str, "shape": list, "dtype": str})
    _check_text(spec["name"], f"{where}.name", 1024)
    _expect(len(spec["shape"]) <= 16, f"{where}.shape", "has more than 16 dimensions")
    elements = 1
    for d in spec["shape"]:
        _expect(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31,
                f"{where}.shape", "dimensions must be integers in [0, 2^31)")
        elements *= d
    _expect(elements <= MAX_TENSOR_ELEMENTS, f"{where}.shape",
            f"holds more than {MAX_TENSOR_ELEMENTS} elements")
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
    _expect(len(members) <= MAX_MEMBERS, "manifest.members", "too many members")
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
    for i, spec in enumerate(m["outputs"]):
        _check_tensor(spec, f"manifest.outputs[{i}]")
    _expect(len({s["name"] for s in m["inputs"]}) == len(m["inputs"]), "manifest.inputs",
            "names must be unique")
    _expect(1 <= len(m["stages"]) <= 10000, "manifest.stages", "must hold 1..10000 stages")

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
            _check_keys(stage, where, {
                "backend": str, "backend_version": str, "compute_capabilities": list,
                "precision": str, "bytes": int, "sha256": str, "engine": str, "onnx": str,
                "io": list,
            })
            _expect(stage["backend"] in BACKENDS, f"{where}.backend", f"must be one of {BACKENDS}")
            _check_text(stage["backend_version"], f"{where}.backend_version", 64)
            _expect(stage["precision"] in PRECISIONS, f"{where}.precision", "unknown precision")
            _check_member_ref(stage["engine"], members, f"{where}.engine")
            _check_member_ref(stage["onnx"], members, f"{where}.onnx")
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
    requires = m["requires"]
    _check_keys(requires, "manifest.requires", {"mxnet": bool})
    _check_optional(requires, "manifest.requires", {"mxnet_version": str, "cpu_path": str})
    for key in ("custom_ops", "gpu_path"):
        if key in requires:
            _check_str_list(requires[key], f"manifest.requires.{key}")


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


def _make_partial(target: str) -> Tuple[int, str]:
    directory = os.path.dirname(os.path.abspath(target))
    prefix = f".{os.path.basename(target)}.{_HOST}-{os.getpid()}."
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
    pattern = re.compile(rf"^\.+{re.escape(os.path.basename(target))}\.(?P<host>[A-Za-z0-9-]+)"
                         rf"-(?P<pid>\d+)\..*\.partial$")
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


@dataclass
class Bundle:
    """An opened, verified bundle: every member's size and sha256 matched the manifest when it was
    opened, so :meth:`read_member` hands out only verified bytes."""

    path: str
    manifest: Dict[str, Any]
    _data: bytes  # the whole file
    _spans: Dict[str, Tuple[int, int]]  # member name -> (start, end) of its bytes in _data

    @property
    def size(self) -> int:
        """The bundle file's size in bytes."""
        return len(self._data)

    def read_member(self, name: str) -> bytes:
        """The bytes of member ``name`` (verified against the manifest when the bundle was opened)."""
        span = self._spans.get(name)
        if span is None or name not in self.manifest["members"]:
            raise BundleError(f"{self.path}: bundle has no member '{name}'; recompile the bundle")
        return self._data[span[0]:span[1]]

    @property
    def engine_stages(self) -> List[Dict[str, Any]]:
        return [s for s in self.manifest["stages"] if s["kind"] == "engine"]

    @property
    def residual_stages(self) -> List[Dict[str, Any]]:
        return [s for s in self.manifest["stages"] if s["kind"] == "residual"]


def read_bundle(path: "os.PathLike[str] | str", max_bytes: Optional[int] = None) -> Bundle:
    """Open and verify a bundle: magic, manifest schema, member table, every member's sha256.

    Nothing is extracted and nothing is deserialized here; an engine's bytes reach TensorRT only
    later, after this check and the compatibility check (``select_device``) have passed.

    Args:
        path: the ``.trtb`` file.
        max_bytes: refuse files larger than this (default: no limit but the disk's).

    Raises:
        BundleError: missing, unreadable, truncated, corrupted or not a trtc bundle.
        IncompatibleError: a format version this runtime cannot read.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise BundleError(f"{path}: no such bundle file; check the path") from None
    except IsADirectoryError:
        raise BundleError(f"{path}: is a directory, not a bundle file") from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the bundle ({exc.strerror})") from None
    except MemoryError:
        raise BundleError(f"{path}: the file is too large to load into memory") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise BundleError(f"{path}: {len(data)} bytes is larger than the allowed {max_bytes}")
    if not data:
        raise BundleError(f"{path}: the file is empty; it is not a trtc bundle (compile it again)")
    try:
        return _parse(path, data)
    except TrtcError:
        raise
    except _READ_ERRORS as exc:
        raise BundleError(f"{path}: not a readable trtc bundle ({_short(exc)}); the file is "
                          "truncated or corrupted: download or compile it again") from None


def _parse(path: str, data: bytes) -> Bundle:
    if not data.startswith(_LOCAL_MAGIC):
        raise BundleError(f"{path}: not a trtc bundle (not a ZIP archive); pass a file written by "
                          "`trtc compile`")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
    if not infos or infos[0].filename != MAGIC_MEMBER:
        raise BundleError(f"{path}: not a trtc bundle (no '{MAGIC_MEMBER}' marker); "
                          "pass a file written by `trtc compile`")
    if len(infos) > MAX_MEMBERS + 2:
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
        if info.file_size != info.compress_size or info.file_size > len(data):
            raise BundleError(f"{path}: member '{name}' claims an impossible size "
                              f"({info.file_size} bytes)")
        spans[name] = _member_span(path, data, info)
    magic = data[slice(*spans[MAGIC_MEMBER])]
    if magic != MAGIC_BYTES:
        raise BundleError(f"{path}: bad '{MAGIC_MEMBER}' marker; not a trtc bundle")
    if MANIFEST_MEMBER not in spans:
        raise BundleError(f"{path}: bundle has no manifest; compile it again")
    manifest_info = next(i for i in infos if i.filename == MANIFEST_MEMBER)
    if manifest_info.file_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    raw = data[slice(*spans[MANIFEST_MEMBER])]
    if zlib.crc32(raw) != manifest_info.CRC:  # the manifest has no sha256 of its own
        raise BundleError(f"{path}: manifest fails its CRC check; the file is corrupted: download "
                          "or compile it again")
    manifest = _load_json(path, raw)
    try:
        validate_manifest(manifest)
    except (BundleError, IncompatibleError) as exc:
        raise type(exc)(f"{path}: {exc}") from None
    listed = set(manifest["members"])
    present = set(spans) - {MAGIC_MEMBER, MANIFEST_MEMBER}
    if listed - present:
        raise BundleError(f"{path}: member '{sorted(listed - present)[0]}' is missing; "
                          "the file is incomplete: download or compile it again")
    if present - listed:
        raise BundleError(f"{path}: unexpected member '{sorted(present - listed)[0]}' not in "
                          "the manifest; refusing a tampered bundle")
    for name in sorted(listed):  # verify every member now: later reads hand out checked bytes
        entry = manifest["members"][name]
        start, end = spans[name]
        if end - start != entry["bytes"]:
            raise BundleError(f"{path}: member '{name}' has {end - start} bytes, the manifest says "
                              f"{entry['bytes']}; the file is corrupted: download or compile it again")
        if hashlib.sha256(memoryview(data)[start:end]).hexdigest() != entry["sha256"]:
            raise BundleError(f"{path}: checksum mismatch in member '{name}'; the file is "
                              "corrupted: download or compile it again")
    return Bundle(path=path, manifest=manifest, _data=data, _spans=spans)


def _member_span(path: str, data: bytes, info: zipfile.ZipInfo) -> Tuple[int, int]:
    """Where ``info``'s bytes lie in ``data``, after checking its local header agrees with the
    central directory (the same checks zipfile.ZipFile.open makes)."""
    offset = info.header_offset
    if offset < 0 or offset + _LOCAL_HEADER.size > len(data):
        raise BundleError(f"{path}: member '{info.filename}' lies outside the file; the file is "
                          "truncated or corrupted: download or compile it again")
    header = _LOCAL_HEADER.unpack_from(data, offset)
    magic, method, name_length, extra_length = header[0], header[4], header[10], header[11]
    start = offset + _LOCAL_HEADER.size + name_length + extra_length
    end = start + info.file_size
    if (magic != _LOCAL_MAGIC or method != zipfile.ZIP_STORED or end > len(data)
            or data[offset + _LOCAL_HEADER.size:offset + _LOCAL_HEADER.size + name_length]
            != info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")):
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
