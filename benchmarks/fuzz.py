"""Fuzz the bundle reader and the runtime at scale: generate mutated and crafted bundles, load each
on the CPU path and call it, and count what happened.

    python benchmarks/fuzz.py [--cases 10000] [--seed 0] [--workers 2] [--timeout 60]
                              [--kinds a,b] [--compile-cases N] [--memory-limit GIB]
                              [--light] [--quick] [--json] [--case ID] [--out DIR]

The bundle mutated is the tiny two-input model of ``tests/models/tiny.py`` compiled with BatchNorm
kept in MXNet (``residual="mxnet"``), so it holds every kind of member: engine plans, their ONNX,
a residual MXNet symbol and residual params. Case ``ID`` is of kind ``KINDS[ID % 12]``, seeded by
``(seed, ID)`` (``--case ID`` replays one in this process, with its traceback). Mutations:

- bytes:    flips, truncations, insertions, deletions of the whole file (checksums not fixed)
- zip:      members renamed (hostile names), dropped, duplicated, reordered, compressed, added
- manifest: any JSON edit of the manifest, checksums recomputed or not
- fields:   meaningful manifest edits (shapes, dtypes, names, stage order, params, members),
            checksums recomputed
- plan:     engine plan bytes edited, checksums recomputed
- onnx:     ONNX bytes or graph edited (weights, attributes, ops, Loop/Scan/If, external data,
            node order), checksums recomputed
- symbol:   residual symbol edited (ops, attributes, inputs, heads, variables), recomputed
- params:   residual params edited (values, shapes, dtypes, keys, pickles, .npy headers, member
            counts), checksums recomputed

Crafted classes (issue 21's probe), checksums recomputed too:

- external: the last engine's ONNX reads a tensor from a secret file in the worker's working
            directory (relative, ``../``, absolute, through a symlink), from every place a tensor
            can be: dense initializers, ``Constant.value``, sparse initializers,
            ``Constant.sparse_value``, sparse/tensor attributes, sparse indices; wired to the
            model's output. Also run through ``trtc run --save`` (in process).
- hostile:  the residual symbol extended with hostile attributes (Convolution/Deconvolution
            ``num_group`` 0, zero/negative kernel, stride, dilate, pad; Pooling stride 0; other
            attributes MXNet divides by) or with index ops fed by the stage input, their indices
            out of range (``take`` mode raise/clip/wrap, ``gather_nd``, ``scatter_nd``,
            ``SequenceReverse`` with ``use_sequence_length``, ``_contrib_index_copy``,
            ``batch_take``); a model that loads is called twice and must give the same outputs.
- bombs:    ONNX ops trtc never writes that cost unbounded work (Multinomial with a huge
            sample size, RandomNormal/RandomUniform of a huge shape, ...), ops it writes asked for
            a huge intermediate (8 or 64 GiB: ConstantOfShape, Expand, Tile, Range, Resize, Pad),
            100 to 9,000 stages sharing one ONNX or symbol member, a dynamic bundle whose manifest
            declares a huge max batch called at batch 1 or 2 (the worker's peak RSS may grow by at
            most 256 MB), 1 GiB deflate bombs (in residual/params.npz, and as a bundle member).
            ``--light`` (CI): at most 1,000 MXNet stages, 64 MiB deflate bombs.
- signed:   a signed bundle (deterministic fuzz key) whose engine plan, a member the CPU path
            never reads, is replaced (same size, in place or repacked; another size; dropped;
            another member added; manifest recomputed; re-signed by another key), loaded with
            ``trusted_keys``: every case must be refused.

And, unless ``--compile-cases 0``, ``compile``: user mistakes through ``trtc compile`` in a
subprocess (NaN/Inf calibration or verify inputs, a directory or a FIFO as params, a FIFO as
``--sign-key``, ``/dev/zero`` as the symbol, huge ``--input`` shapes and ranges, ``-o`` a
directory), each once (ids from COMPILE_BASE).

Outcomes: refused (a BundleError or IncompatibleError at load or call, or an InputError at call
when the manifest's inputs were edited; for ``compile``: exit 1..6), loaded with outputs bitwise
identical to the original (``compile``: exit 0), loaded with different outputs, crashed, hang,
file read, OOM. A crash is the worker process killed by a signal (each case runs in a worker
process, so a segfault is counted, not fatal), an exception that is not trtc's own, an error
message of more than one line, two calls of one model on the same inputs giving different
outputs (a read out of bounds), a batch-1 call growing the worker's peak RSS by more than the
case allows, and for ``compile`` exit 70 (internal error) or a signal. A hang is a worker
silent for ``--timeout`` seconds (a ``trtc compile`` subprocess: 0.75 of it). A file read is any
output, or anything ``trtc run --save`` wrote or printed, holding 32 consecutive bytes of the
secret. Bytes written to stdout are counted apart. Crashes, hangs, file reads and OOMs must be 0.

Workers run with their address space limited (``--memory-limit``, default 6 GiB), so that a
bomb that gets through fails to allocate rather than taking the machine's memory; a refusal that
is such an allocation failure (ONNX Runtime's "Failed to allocate", bad_alloc, MemoryError) counts
as OOM, not as refused: only the limit stopped it. The table's last column is the most a worker's
peak RSS grew during one case of that kind.

"Loaded, different outputs" is expected: a bundle edited with its checksums recomputed is a
different, valid bundle (weights scaled, an output dropped), and nothing but a signature can tell
it from the one the compiler wrote (``load(path, trusted_keys=...)``: the signed class).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # before tests/: tests/trtc must not shadow the trtc package
sys.path.append(str(ROOT / "tests"))
os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

import numpy as np  # noqa: E402

MUTATION_KINDS = ("bytes", "zip", "manifest", "fields", "plan", "onnx", "symbol", "params")
CRAFTED_KINDS = ("external", "hostile", "bombs", "signed")
KINDS = MUTATION_KINDS + CRAFTED_KINDS  # case ID is of kind KINDS[ID % len(KINDS)]
COMPILE = "compile"  # case IDs from COMPILE_BASE: trtc compile mistakes, in a subprocess
COMPILE_BASE = 1_000_000
ALL_KINDS = KINDS + (COMPILE,)
OUTCOMES = ("refused", "identical", "different", "crashed", "hang", "file read", "OOM")
# An error saying an allocation failed: with the worker's address space limited, a bomb the
# runtime's own bounds let through ends as one of these (counted as OOM, not as refused)
ALLOCATION_FAILED = ("Failed to allocate", "bad_alloc", "MemoryError", "Cannot allocate memory",
                     "out of memory", "bfc_arena", "std::length_error")
QUICK_CASES = 240
# What the external class reads: 4 KiB no output can hold by chance (32 bytes of it count)
SECRET = random.Random("trtc-fuzz-secret").randbytes(4096)
SECRET_NAME = "secret.bin"
Members = List[Tuple[str, bytes]]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def kind_of(case: int) -> str:
    return COMPILE if case >= COMPILE_BASE else KINDS[case % len(KINDS)]


def leaks(blob: bytes) -> bool:
    """Does ``blob`` hold 32 consecutive bytes of the secret (any 32-byte-aligned piece)?"""
    return any(SECRET[i:i + 32] in blob for i in range(0, len(SECRET) - 31, 32))


# ----------------------------------------------------------------------------------------------
# The bundles under test
# ----------------------------------------------------------------------------------------------
def base_bundle(out_dir: Path) -> Path:
    """The tiny 'pair' model compiled with BatchNorm kept in MXNet (cached in ``out_dir``)."""
    return prepare(out_dir, dynamic=False)["bundle"]


def prepare(out_dir: Path, dynamic: bool = True,
            bundle: Optional[Path] = None) -> Dict[str, Path]:
    """The bundles the cases start from, compiled once and cached in ``out_dir``:

    bundle   the 'pair' model, BatchNorm in an MXNet stage, static 1x3x8x8 inputs (or
             ``bundle``, already compiled so)
    dynamic  the same with a batch range 1..4 (the huge-max-batch bomb edits its manifest)
    params   the exported model (``trtc compile`` mistakes)
    """
    from models import tiny

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    models = out_dir / "tiny"
    models.mkdir(exist_ok=True)
    params = models / "pair-0000.params"
    if not params.exists() or not (models / "pair-symbol.json").exists():
        params = tiny.export("pair", models)
    paths = {"bundle": Path(bundle) if bundle else out_dir / "pair-batchnorm.trtb",
             "params": params}
    if dynamic:
        paths["dynamic"] = out_dir / "pair-batchnorm-dynamic.trtb"
    for key, inputs in (("bundle", {}), ("dynamic", {n: ((1, 4), 3, 8, 8) for n in "ab"})):
        if key in paths and not paths[key].exists():
            from trtc import CompileSettings, compile

            partial = paths[key].with_name(f".{paths[key].name}.{os.getpid()}")
            compile(CompileSettings(params=params, output=partial, inputs=inputs,
                                    exclude_ops=("BatchNorm",), residual="mxnet"))
            os.replace(partial, paths[key])
    return paths


def _feeds(manifest: Dict[str, Any], batch: Optional[int] = None) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for t in manifest["inputs"]:
        shape = list(t.get("min_shape") or t["shape"])
        if batch is not None:
            shape[0] = batch
        feeds[t["name"]] = rng.standard_normal(shape).astype(t["dtype"])
    return feeds


class Base:
    """The original bundle taken apart: what every mutation starts from. ``paths``: what
    ``prepare`` made (the dynamic bundle, the exported params); ``work``: the worker's working
    directory (the external class points at the secret there)."""

    def __init__(self, path: Path, paths: Optional[Dict[str, Path]] = None,
                 work: Optional[Path] = None, light: bool = False):
        from bundle_surgery import manifest_of, members_of

        self.path = path
        self.paths = dict(paths or {}, bundle=path)
        self.work = Path(work or tempfile.gettempdir())
        self.light = light  # CI: the costliest bombs smaller (1000 stages, 64 MiB deflated)
        self.data = path.read_bytes()
        self.members: Members = members_of(path)
        self.manifest: Dict[str, Any] = manifest_of(self.members)
        self.names = [name for name, _ in self.members]
        self.feeds = _feeds(self.manifest)
        self._signed: Optional[bytes] = None
        self._bombs: Dict[str, bytes] = {}

    def member(self, suffix: str, rng: random.Random) -> str:
        return rng.choice([n for n in self.names if n.endswith(suffix)])

    def key(self, name: str = "release") -> Any:
        """A deterministic Ed25519 key (the same bytes on every run)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return Ed25519PrivateKey.from_private_bytes(
            hashlib.sha256(f"trtc-fuzz/{name}".encode()).digest())

    def signed(self) -> bytes:
        """The base bundle signed with ``key()``."""
        if self._signed is None:
            from trtc.runtime.signing import sign_bundle

            scratch = Path(tempfile.mkdtemp(prefix="trtc-fuzz-sign-"))
            try:
                target = scratch / "signed.trtb"
                target.write_bytes(self.data)
                sign_bundle(target, self.key())
                self._signed = target.read_bytes()
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        return self._signed


# ----------------------------------------------------------------------------------------------
# Mutations
# ----------------------------------------------------------------------------------------------
HOSTILE_NAMES = ["../escape.plan", "/etc/passwd", "engines/../../x", "C:\\win.plan", "",
                 "engines/", "a/./b", "manifest.json", "trtc-bundle", "x" * 300,
                 "engines/\x00.plan", ".hidden", "onnx/engine0.onnx ", "ünïcode.plan",
                 "signature.json"]
SCALARS: List[Any] = [None, True, False, 0, 1, -1, 2, 3, 7, 2**31 - 1, 2**31, 2**40, 2**63,
                      -(2**63), 10**30, 0.5, -0.0, 1e308, "", "..", "../x", "/etc/passwd",
                      "float32", "float16", "float64", "int8", "int32", "int64", "bool",
                      "engine", "residual", "tensorrt", "tensorrt_rtx", "0.0", "fp16", "fp32",
                      "9.0", "8.6", "trtc-bundle", "arg:x", "aux:", "x" * 2000, "a\nb", "é",
                      [], {}, [1], [1, 3, 8, 8], [2**31 - 1], {"name": "a"}]


def mutate_bytes(rng: random.Random, data: bytes, rounds: int) -> bytes:
    """Byte edits, biased to the ends (headers, the manifest, the central directory)."""
    buf = bytearray(data)
    for _ in range(rounds):
        if not buf:
            break
        n = len(buf)
        lo, hi = rng.choice([(0, min(n, 6000)), (max(0, n - 2000), n), (0, n)])
        pos = rng.randrange(lo, max(lo + 1, hi))
        op = rng.choice(["flip", "truncate", "insert", "delete", "overwrite", "zero"])
        if op == "flip":
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == "truncate":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == "delete":
            del buf[pos:pos + rng.randint(1, 64)]
        elif op == "overwrite":
            chunk = rng.randbytes(rng.randint(1, 16))
            buf[pos:pos + len(chunk)] = chunk
        else:
            width = rng.choice([1, 2, 4, 8])
            buf[pos:pos + width] = bytes([rng.choice([0, 0xFF, 0x7F])]) * width
    return bytes(buf)


def _paths(value: Any, prefix: Tuple = ()) -> List[Tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, prefix + (key,))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _paths(child, prefix + (i,))
    return found


def _get(value: Any, path: Tuple) -> Any:
    for key in path:
        value = value[key]
    return value


def _strings(doc: Any) -> List[str]:
    found = set()
    for path in _paths(doc):
        value = _get(doc, path)
        if isinstance(value, str):
            found.add(value)
        if path and isinstance(path[-1], str):
            found.add(path[-1])
    return sorted(found)


def _value(rng: random.Random, names: Sequence[str], depth: int = 0) -> Any:
    roll = rng.random()
    if roll < 0.45 or depth > 2:
        return copy.deepcopy(rng.choice(SCALARS))
    if roll < 0.7 and names:
        return rng.choice(names)
    if roll < 0.8:
        return rng.randint(-(2**40), 2**40)
    if roll < 0.9:
        return [_value(rng, names, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(list(names) + ["extra"]): _value(rng, names, depth + 1)
            for _ in range(rng.randint(0, 3))}


def mutate_json(rng: random.Random, doc: Any, rounds: Optional[int] = None) -> Any:
    """Generic edits anywhere in a JSON document: replace, delete, retarget a name, shift an
    integer, duplicate a list item, add a key."""
    doc = copy.deepcopy(doc)
    names = _strings(doc)
    for _ in range(rounds or rng.randint(1, 3)):
        path = rng.choice(_paths(doc))
        op = rng.choice(["replace", "replace", "delete", "name", "int", "dup", "add"])
        if not path:
            if op == "replace":
                doc = _value(rng, names)
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        current = parent[key]
        if op == "replace":
            parent[key] = _value(rng, names)
        elif op == "delete":
            del parent[key]
        elif op == "name" and names:
            parent[key] = rng.choice(names)
        elif op == "int" and isinstance(current, int) and not isinstance(current, bool):
            parent[key] = current + rng.choice([1, -1, 2**31, -current, 7, 1 - current])
        elif op == "dup" and isinstance(parent, list):
            parent.append(copy.deepcopy(current))
        elif op == "add" and isinstance(current, dict):
            current[rng.choice(names + ["extra"])] = _value(rng, names)
    return doc


def _repack(members: Members, manifest: Any, fix: bool = True) -> bytes:
    from bundle_surgery import repack

    return repack(members, manifest, fix_checksums=fix)


def _replace(base: Base, name: str, body: bytes, manifest: Optional[Any] = None,
             fix: bool = True) -> bytes:
    members = [(n, body if n == name else d) for n, d in base.members]
    return _repack(members, copy.deepcopy(base.manifest) if manifest is None else manifest, fix)


def case_bytes(rng: random.Random, base: Base) -> bytes:
    return mutate_bytes(rng, base.data, rng.randint(1, 4))


def case_zip(rng: random.Random, base: Base) -> bytes:
    from bundle_surgery import write_members

    members = list(base.members)
    manifest = copy.deepcopy(base.manifest)
    index = rng.randrange(len(members))
    name, body = members[index]
    op = rng.choice(["rename", "drop", "dup", "reorder", "compress", "extra", "cut"])
    if op == "rename":
        new = rng.choice(HOSTILE_NAMES + base.names)
        members[index] = (new, body)
        if rng.random() < 0.5 and name in manifest["members"]:  # keep the table in step
            manifest["members"][new] = manifest["members"].pop(name)
    elif op == "drop":
        del members[index]
    elif op == "dup":
        members.insert(rng.randrange(len(members) + 1), (name, body))
    elif op == "reorder":
        rng.shuffle(members)
    elif op == "compress":
        return write_members(members, compress=True)
    elif op == "extra":
        members.append((rng.choice(["extra.bin", "engines/x.plan"] + HOSTILE_NAMES),
                        rng.randbytes(rng.randint(0, 64))))
    else:
        members[index] = (name, body[:rng.randrange(len(body) + 1)])
    return _repack(members, manifest, fix=rng.random() < 0.5)


def case_manifest(rng: random.Random, base: Base) -> bytes:
    manifest = mutate_json(rng, base.manifest)
    return _repack(base.members, manifest, fix=rng.random() < 0.7)


def _tensor_specs(manifest: Dict[str, Any]) -> List[Dict[str, Any]]:
    specs = list(manifest["inputs"]) + list(manifest["outputs"])
    for stage in manifest["stages"]:
        specs += stage["inputs"] + stage["outputs"] + stage.get("io", [])
    return specs


def case_fields(rng: random.Random, base: Base) -> bytes:
    """Edits a careless or hostile hand would make, keeping the manifest self-consistent."""
    m = copy.deepcopy(base.manifest)
    specs = _tensor_specs(m)
    names = sorted({s["name"] for s in specs})
    stages = m["stages"]
    residual = next(s for s in stages if s["kind"] == "residual")
    op = rng.choice(["shape", "dtype", "rename", "stage order", "stage kind", "backend",
                     "precision", "params", "onnx member", "outputs", "fp32 tensors",
                     "custom ops", "drop stage", "symbol member", "residual_params"])
    if op == "shape":  # one tensor's shape, everywhere it is named (or in one place)
        name = rng.choice(names)
        dims = rng.choice([[1, 3, 8, 8], [1, 8, 8, 8], [2, 3, 8, 8], [1, 4, 8, 8], [1, 8, 4, 4],
                           [8], [1, 512], [1, 8, 8, 8, 1], [2**31 - 1], [0, 8, 8, 8], []])
        for spec in specs if rng.random() < 0.8 else [rng.choice(specs)]:
            if spec["name"] == name:
                spec["shape"] = list(dims)
    elif op == "dtype":
        name, dtype = rng.choice(names), rng.choice(["float16", "float64", "int32", "int8",
                                                      "uint8", "bool", "int64"])
        for spec in specs:
            if spec["name"] == name:
                spec["dtype"] = dtype
    elif op == "rename":  # a tensor renamed consistently in the manifest (not in the members)
        old, new = rng.choice(names), rng.choice(names + ["renamed", "a", "b"])
        for spec in specs:
            if spec["name"] == old:
                spec["name"] = new
    elif op == "stage order":
        rng.shuffle(stages)
    elif op == "stage kind":
        stage = rng.choice(stages)
        stage["kind"] = "engine" if stage["kind"] == "residual" else "residual"
    elif op == "backend":
        stage = rng.choice([s for s in stages if s["kind"] == "engine"])
        key = rng.choice(["backend", "backend_version", "compute_capabilities"])
        stage[key] = {"backend": rng.choice(["tensorrt", "tensorrt_rtx"]),
                      "backend_version": rng.choice(["0.0", "10.0.1", "1.7.1.116"]),
                      "compute_capabilities": rng.choice([[], ["8.6"], ["9.0"], ["1.0"]])}[key]
    elif op == "precision":
        target = rng.choice([m] + [s for s in stages if s["kind"] == "engine"])
        target["precision"] = "fp16" if target["precision"] == "fp32" else "fp32"
    elif op == "params":
        params = residual["params"]
        choice = rng.choice(["drop", "swap", "rename", "dup", "retype"])
        i = rng.randrange(len(params))
        if choice == "drop":
            del params[i]
        elif choice == "swap":
            j = rng.randrange(len(params))
            params[i], params[j] = params[j], params[i]
        elif choice == "rename":
            params[i] = rng.choice(["arg:x", "aux:x", "arg:a", params[i] + "_"])
        elif choice == "dup":
            params.append(params[i])
        else:
            kind, name = params[i].split(":", 1)
            params[i] = ("aux:" if kind == "arg" else "arg:") + name
    elif op == "onnx member":  # one engine stage pointed at the other's ONNX or plan
        engines = [s for s in stages if s["kind"] == "engine"]
        a, b = rng.sample(engines, 2)
        key = rng.choice(["onnx", "engine"])
        a[key] = b[key]
    elif op == "outputs":
        outputs = m["outputs"]
        choice = rng.choice(["drop", "dup", "internal"])
        if choice == "drop" and len(outputs) > 1:
            outputs.pop()
        elif choice == "dup":
            outputs.append(copy.deepcopy(outputs[0]))
        else:  # a stage-boundary tensor becomes a model output too
            boundary = rng.choice([t for s in stages for t in s["outputs"]])
            outputs.append(copy.deepcopy(boundary))
    elif op == "fp32 tensors":
        rng.choice([s for s in stages if s["kind"] == "engine"])["fp32_tensors"] = \
            [rng.choice(names)]
    elif op == "custom ops":
        m["requires"]["custom_ops"] = ["MyOp"]
    elif op == "drop stage":
        stages.pop(rng.randrange(len(stages)))
    elif op == "symbol member":
        residual["symbol"] = rng.choice(base.names[2:])
    else:
        m["residual_params"] = rng.choice(base.names[2:])
    return _repack(base.members, m, fix=True)


def case_plan(rng: random.Random, base: Base) -> bytes:
    name = base.member(".plan", rng)
    body = dict(base.members)[name]
    return _replace(base, name, mutate_bytes(rng, body, rng.randint(1, 4)))


ONNX_EXTRA_OPS = ["Loop", "Scan", "If", "Einsum", "SequenceMap", "Identity", "Relu", "Conv",
                  "Add", "Resize", "NonZero", "Range", "ConstantOfShape", "Expand", "Tile"]


def case_onnx(rng: random.Random, base: Base) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    name = base.member(".onnx", rng)
    body = dict(base.members)[name]
    if rng.random() < 0.3:
        return _replace(base, name, mutate_bytes(rng, body, rng.randint(1, 4)))
    model = onnx.load_from_string(body)
    graph = model.graph
    op = rng.choice(["weights", "nan weights", "attribute", "op type", "domain", "loop",
                     "subgraph attribute", "drop node", "dup node", "swap inputs",
                     "initializer dims", "initializer type", "external data", "input shape",
                     "output name", "constant", "opset", "reverse nodes"])
    node = rng.choice(list(graph.node))
    if op in ("weights", "nan weights", "initializer dims", "initializer type",
              "external data") and graph.initializer:
        init = rng.choice(list(graph.initializer))
        array = numpy_helper.to_array(init)
        if op == "weights":
            init.CopyFrom(numpy_helper.from_array(
                (array * rng.choice([0.0, -1.0, 1.5, 1e6])).astype(array.dtype), init.name))
        elif op == "nan weights":
            init.CopyFrom(numpy_helper.from_array(np.full_like(array, np.nan), init.name))
        elif op == "initializer dims":
            init.dims[:] = rng.choice([[], [1], [2**31 - 1], list(init.dims)[::-1],
                                       list(init.dims) + [1]])
        elif op == "initializer type":
            init.data_type = rng.choice([TensorProto.FLOAT16, TensorProto.INT64,
                                         TensorProto.DOUBLE, TensorProto.STRING, 0, 99])
        else:
            init.ClearField("raw_data")
            init.data_location = TensorProto.EXTERNAL
            for key, value in (("location", rng.choice(["secret.bin", "/etc/passwd"])),
                               ("length", "64")):
                entry = init.external_data.add()
                entry.key, entry.value = key, value
    elif op == "attribute" and node.attribute:
        attribute = rng.choice(list(node.attribute))
        value = rng.choice([0, 1, -1, 2, 3, 2**31, [0, 0], [1, 1], [3, 3], [1, 1, 1, 1],
                            [-1, -1, -1, -1], [100, 100], [], 0.0, 1e30, "abc"])
        node.attribute.remove(attribute)
        node.attribute.append(helper.make_attribute(attribute.name, value))
    elif op == "op type":
        node.op_type = rng.choice(ONNX_EXTRA_OPS)
    elif op == "domain":
        node.domain = rng.choice(["com.microsoft", "ai.onnx.ml", "custom", "ai.onnx"])
    elif op in ("loop", "subgraph attribute"):
        body_graph = helper.make_graph(
            [helper.make_node("Identity", ["c"], ["c_out"]),
             helper.make_node("Identity", ["v"], ["v_out"])], "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("c", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
        if op == "loop":
            last = graph.node[-1]
            last.output[0], out = "before_loop", last.output[0]
            graph.initializer.extend([helper.make_tensor("trip", TensorProto.INT64, [], [10**15]),
                                      helper.make_tensor("go", TensorProto.BOOL, [], [True])])
            graph.node.append(helper.make_node("Loop", ["trip", "go", "before_loop"], [out],
                                               body=body_graph))
        else:
            node.attribute.append(helper.make_attribute("body", body_graph))
    elif op == "drop node":
        graph.node.remove(node)
    elif op == "dup node":
        graph.node.append(copy.deepcopy(node))
    elif op == "swap inputs" and len(node.input) > 1:
        node.input[0], node.input[1] = node.input[1], node.input[0]
    elif op == "input shape":
        dims = graph.input[0].type.tensor_type.shape.dim
        if dims:
            rng.choice(list(dims)).dim_value = rng.choice([0, 2, 16, 2**31 - 1])
    elif op == "output name":
        graph.output[0].name = rng.choice(["renamed", graph.input[0].name, node.output[0]])
    elif op == "constant":  # a Constant node feeding nothing, of some size
        size = rng.choice([1, 1000, 10**6])
        graph.node.insert(0, helper.make_node("Constant", [], ["const_out"],
                                              value=numpy_helper.from_array(
                                                  np.zeros(size, np.float32))))
    elif op == "opset":
        model.opset_import[0].version = rng.choice([1, 7, 11, 99, 10**6])
    elif op == "reverse nodes":
        nodes = list(graph.node)[::-1]
        del graph.node[:]
        graph.node.extend(nodes)
    return _replace(base, name, model.SerializeToString())


MXNET_OPS = ["relu", "sigmoid", "tanh", "BatchNorm", "Convolution", "FullyConnected", "Pooling",
             "Flatten", "Reshape", "transpose", "elemwise_add", "broadcast_add", "Concat",
             "SliceChannel", "Dropout", "Activation", "LeakyRelu", "softmax", "_copy", "Embedding",
             "take", "gather_nd", "tile", "repeat", "_contrib_box_nms", "LayerNorm",
             "InstanceNorm", "Deconvolution", "UpSampling", "Pad", "where", "topk", "sort",
             "one_hot", "Custom", "_foreach", "_while_loop", "_cond", "_CachedOp", "RNN",
             "ROIPooling", "Correlation", "SpatialTransformer", "BilinearSampler", "sum",
             "mean", "clip", "slice_axis", "expand_dims", "squeeze", "broadcast_to", "zeros_like",
             "_zeros", "_ones", "_arange", "_random_uniform", "Cast", "L2Normalization",
             "SoftmaxOutput", "MakeLoss", "BlockGrad", "_contrib_ROIAlign", "no_such_op"]
ATTR_VALUES = ["0", "1", "-1", "2", "3", "7", "1000000000", "1e30", "nan", "-inf", "(1,1)",
               "(0,0)", "(3,3)", "()", "(-1,)", "(1, 8, 8, 8)", "(2147483647,)", "True", "False",
               "relu", "max", "valid", "full", "float16", "int8", "", "a" * 1000]
ATTR_KEYS = ["axis", "eps", "fix_gamma", "use_global_stats", "momentum", "num_filter", "kernel",
             "num_hidden", "shape", "act_type", "pool_type", "num_args", "dtype", "reps",
             "num_outputs", "p", "output_mean_var", "cudnn_off", "op_type"]


def case_symbol(rng: random.Random, base: Base) -> bytes:
    name = base.member("-symbol.json", rng)
    doc = json.loads(dict(base.members)[name])
    roll = rng.random()
    if roll < 0.15:
        return _replace(base, name, mutate_bytes(rng, json.dumps(doc).encode(), rng.randint(1, 3)))
    if roll < 0.4:
        return _replace(base, name, json.dumps(mutate_json(rng, doc)).encode())
    nodes = doc["nodes"]
    ops = [n for n in nodes if n["op"] != "null"]
    node = rng.choice(ops)
    op = rng.choice(["op", "op", "attribute", "drop attribute", "input", "drop input",
                     "add input", "head", "heads", "variable name", "chain", "duplicate name",
                     "variable op"])
    if op == "op":
        node["op"] = rng.choice(MXNET_OPS)
    elif op == "attribute":
        node.setdefault("attrs", {})[rng.choice(ATTR_KEYS)] = rng.choice(ATTR_VALUES)
    elif op == "drop attribute" and node.get("attrs"):
        del node["attrs"][rng.choice(sorted(node["attrs"]))]
    elif op == "input" and node["inputs"]:
        entry = rng.choice(node["inputs"])
        entry[rng.randrange(2)] = rng.choice([0, 1, 2, 5, 6, 7, -1, 2**31])
    elif op == "drop input" and node["inputs"]:
        node["inputs"].pop(rng.randrange(len(node["inputs"])))
    elif op == "add input":
        node["inputs"].append([rng.randrange(len(nodes)), 0, 0])
    elif op == "head":
        doc["heads"][0][rng.randrange(2)] = rng.choice([0, 1, 3, 5, 6, -1])
    elif op == "heads":
        doc["heads"].append(copy.deepcopy(doc["heads"][0]))
    elif op == "variable name":
        variable = rng.choice([n for n in nodes if n["op"] == "null"])
        variable["name"] = rng.choice([n["name"] for n in nodes] + ["stranger", ""])
    elif op == "chain":  # more nodes after the last one
        last = doc["heads"][0][0]
        for i in range(rng.choice([1, 10, 1000])):
            nodes.append({"op": rng.choice(["relu", "sigmoid", "_copy", "BlockGrad"]),
                          "name": f"chain{i}", "inputs": [[last, 0, 0]]})
            last = len(nodes) - 1
        doc["heads"] = [[last, 0, 0]]
    elif op == "duplicate name":
        node["name"] = rng.choice([n["name"] for n in nodes])
    else:  # a variable turned into an op, or an op into a variable
        target = rng.choice(nodes)
        target["op"] = "null" if target["op"] != "null" else rng.choice(MXNET_OPS)
    return _replace(base, name, json.dumps(doc).encode())


def case_params(rng: random.Random, base: Base) -> bytes:
    name = "residual/params.npz"
    body = dict(base.members)[name]
    with np.load(io.BytesIO(body)) as npz:
        params = {key: npz[key] for key in npz.files}
    key = rng.choice(sorted(params))
    op = rng.choice(["bytes", "scale", "nan", "shape", "dtype", "drop", "extra", "rename",
                     "object", "fortran", "big-endian", "empty", "many", "header", "scalar"])
    raw: Optional[Dict[str, bytes]] = None
    if op == "bytes":
        return _replace(base, name, mutate_bytes(rng, body, rng.randint(1, 4)))
    if op == "scale":
        params[key] = params[key] * np.float32(rng.choice([0.0, -1.0, 2.0, 1e30]))
    elif op == "nan":
        params[key] = np.full_like(params[key], np.nan)
    elif op == "shape":
        params[key] = rng.choice([params[key][:rng.randrange(len(params[key]))],
                                  np.concatenate([params[key]] * rng.choice([2, 64])),
                                  params[key].reshape(2, -1), params[key].reshape(1, -1)])
    elif op == "dtype":
        params[key] = params[key].astype(rng.choice(["float16", "float64", "int8", "int32",
                                                     "uint8", "int64", "bool"]))
    elif op == "drop":
        del params[key]
    elif op == "extra":
        params[rng.choice(["arg:extra", "aux:extra", "extra", key + "_"])] = np.zeros(8, "f4")
    elif op == "rename":
        params[rng.choice(["arg:renamed", key.replace("arg:", "aux:"), key + " "])] = \
            params.pop(key)
    elif op == "object":
        params[key] = np.array([{"x": 1}] * 8, dtype=object)
    elif op == "fortran":
        params[key] = np.asfortranarray(params[key].reshape(2, 4))
    elif op == "big-endian":
        params[key] = params[key].astype(">f4")
    elif op == "empty":
        params = {}
    elif op == "scalar":
        params[key] = np.float32(1.0)
    elif op == "many":
        raw = {f"{k}.npy": _npy(v) for k, v in params.items()}
        for i in range(rng.choice([100, 20_000])):
            raw[f"arg:p{i}.npy"] = _npy(np.zeros(1, np.float32))
    else:  # a .npy header claiming another shape than its data
        raw = {f"{k}.npy": _npy(v) for k, v in params.items()}
        shape = rng.choice(["(2147483647,)", "(8, 8)", "(4,)", "()", "(-1,)", "(10**9,)"])
        header = ("{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % shape).encode()
        raw[f"{key}.npy"] = (b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
                             + np.ones(8, np.float32).tobytes())
    if raw is None:
        buffer = io.BytesIO()
        np.savez(buffer, **params)
        return _replace(base, name, buffer.getvalue())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for member, data in raw.items():
            zf.writestr(member, data)
    return _replace(base, name, buffer.getvalue())


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()




# ----------------------------------------------------------------------------------------------
# Crafted classes (issue 21's probe)
# ----------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One case: a bundle and how to run it, or a ``trtc compile`` command."""

    kind: str
    data: bytes = b""
    what: str = ""  # the variant, for the report
    feeds: Optional[Dict[str, np.ndarray]] = None  # the inputs (default: the base's)
    reference: str = "bundle"  # whose outputs count as identical: 'bundle' or 'dynamic'
    trusted: bool = False  # load with trusted_keys=[the fuzz key's public half]
    cli: bool = False  # also `trtc run --save` it, in process
    twice: bool = False  # call the model twice: the outputs must agree bitwise
    max_growth_mb: Optional[float] = None  # the most the worker's peak RSS may grow
    compile: Optional[Callable[[Path, Path], List[str]]] = None  # -> trtc compile arguments


def _members_of_bytes(data: bytes) -> Members:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()]


def _last_onnx(base: Base) -> str:
    """The ONNX member of the engine stage that makes a model output."""
    outputs = {t["name"] for t in base.manifest["outputs"]}
    return next(s["onnx"] for s in reversed(base.manifest["stages"])
                if s["kind"] == "engine" and outputs & {t["name"] for t in s["outputs"]})


def _rewired(body: bytes) -> Tuple[Any, str, List[int]]:
    """An ONNX model whose first graph output is no longer produced (its producer now writes
    'fuzz_orig'): the caller wires something else to it. Returns (model, output, its dims)."""
    import onnx

    model = onnx.load_from_string(body)
    output = model.graph.output[0]
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            if name == output.name:
                node.output[i] = "fuzz_orig"
    dims = [d.dim_value for d in output.type.tensor_type.shape.dim]
    return model, output.name, dims


def _external_tensor(name: str, dims: Sequence[int], data_type: int, location: str,
                     offset: Optional[int], length: Optional[int], flag: bool = True,
                     entries: bool = True) -> Any:
    from onnx import TensorProto

    tensor = TensorProto(name=name, data_type=data_type)
    tensor.dims.extend(dims)
    if flag:
        tensor.data_location = TensorProto.EXTERNAL
    if entries:
        for key, value in (("location", location), ("offset", offset), ("length", length)):
            if value is not None:
                entry = tensor.external_data.add()
                entry.key, entry.value = key, str(value)
    return tensor


EXTERNAL_PLACES = ("initializer", "Constant.value", "sparse initializer", "Constant.sparse_value",
                   "sparse indices", "sparse attribute", "sparse tensors attribute",
                   "tensors attribute", "tensor attribute", "location only", "external_data only",
                   "raw_data too")


def external_locations(work: Path) -> List[str]:
    """How a tensor can name the secret in the worker's working directory ``work``."""
    return [SECRET_NAME, f"./{SECRET_NAME}", f"sub/../{SECRET_NAME}",
            f"../{work.name}/{SECRET_NAME}", str(work / SECRET_NAME), "link.bin",
            str(work / "link.bin")]


def case_external(rng: random.Random, base: Base) -> Case:
    last = _last_onnx(base)
    name = last if rng.random() < 0.85 else base.member(".onnx", rng)
    return external_case(base, name, rng.choice(EXTERNAL_PLACES),
                         rng.choice(external_locations(base.work)),
                         rng.choice([None, 0, 4, "end"]))


def external_case(base: Base, name: str, place: str, location: str,
                  offset: "int | str | None") -> Case:
    """ONNX member ``name`` with its first output made of a tensor stored in file ``location``
    at ``offset`` ('end': the last bytes of the secret), from ``place`` (EXTERNAL_PLACES)."""
    from onnx import SparseTensorProto, TensorProto, helper, numpy_helper

    model, out, dims = _rewired(dict(base.members)[name])
    graph = model.graph
    count = int(np.prod(dims))
    length = 4 * count
    if offset == "end":
        offset = len(SECRET) - length

    def dense() -> Any:
        return _external_tensor("fuzz_leak", dims, TensorProto.FLOAT, location, offset, length)

    def sparse(external_values: bool = True) -> Any:
        if external_values:
            values = _external_tensor("fuzz_leak", [count], TensorProto.FLOAT, location, offset,
                                      length)
            indices = numpy_helper.from_array(np.arange(count, dtype=np.int64), "fuzz_indices")
        else:  # the indices read from the file: ONNX Runtime would scatter to where they say
            values = numpy_helper.from_array(np.ones(count, np.float32), "fuzz_leak")
            indices = _external_tensor("fuzz_indices", [count], TensorProto.INT64, location,
                                       None, 8 * count)
        tensor = SparseTensorProto()
        tensor.values.CopyFrom(values)
        tensor.indices.CopyFrom(indices)
        tensor.dims.extend(dims)
        return tensor

    forward = helper.make_node("Identity", ["fuzz_leak"], [out])
    if place == "initializer":
        graph.initializer.append(dense())
        graph.node.append(forward)
    elif place == "Constant.value":
        graph.node.extend([helper.make_node("Constant", [], ["fuzz_leak"], value=dense()), forward])
    elif place == "sparse initializer":
        graph.sparse_initializer.append(sparse())
        graph.node.append(forward)
    elif place in ("Constant.sparse_value", "sparse indices"):
        value = sparse(external_values=place == "Constant.sparse_value")
        graph.node.extend([helper.make_node("Constant", [], ["fuzz_leak"], sparse_value=value),
                           forward])
    elif place.endswith("attribute"):  # on the node that forwards the real output
        node = helper.make_node("Identity", ["fuzz_orig"], [out])
        value = {"sparse attribute": lambda: sparse(),
                 "sparse tensors attribute": lambda: [sparse()],
                 "tensors attribute": lambda: [dense()], "tensor attribute": dense}[place]()
        node.attribute.append(helper.make_attribute("fuzz", value))
        graph.node.append(node)
    else:
        tensor = _external_tensor("fuzz_leak", dims, TensorProto.FLOAT, location, offset, length,
                                  flag=place != "external_data only",
                                  entries=place != "location only")
        if place == "raw_data too":
            tensor.raw_data = bytes(length)
        graph.initializer.append(tensor)
        graph.node.append(forward)
    what = f"{place} in {name} at {location!r} offset {offset}"
    return Case("external", _replace(base, name, model.SerializeToString()), what, cli=True)


class _Symbol:
    """A residual symbol JSON being extended node by node."""

    def __init__(self, doc: Dict[str, Any]):
        self.doc = copy.deepcopy(doc)
        self.nodes: List[Dict[str, Any]] = self.doc["nodes"]

    def add(self, op: str, inputs: Sequence[int] = (), **attrs: Any) -> int:
        node: Dict[str, Any] = {"op": op, "name": f"fuzz{len(self.nodes)}",
                                "inputs": [[i, 0, 0] for i in inputs]}
        if op == "null":
            node["name"] = attrs.pop("name")
        if attrs:
            node["attrs"] = {k: str(v) for k, v in attrs.items()}
        self.nodes.append(node)
        return len(self.nodes) - 1

    def finish(self, head: int) -> bytes:
        self.doc["heads"] = [[head, 0, 0]]
        self.doc["arg_nodes"] = [i for i, n in enumerate(self.nodes) if n["op"] == "null"]
        self.doc["node_row_ptr"] = list(range(len(self.nodes) + 1))
        return json.dumps(self.doc).encode()


# attribute -> hostile values (MXNet divides by some, allocates by others, indexes with others)
CONV_HOSTILE = {
    "num_group": [0, -1, 3, 16, 2**31, 2**32 + 1],
    "kernel": ["(0, 0)", "(-1, -1)", "(0, 1)", "(1, -2)", "(100, 100)", "(2147483647, 1)"],
    "stride": ["(0, 0)", "(-1, -1)", "(0, 1)", "(1, 0)", "(2147483647, 2147483647)"],
    "dilate": ["(0, 0)", "(-1, -1)", "(0, 1)", "(2147483647, 1)"],
    "pad": ["(-1, -1)", "(-8, -8)", "(1073741824, 1073741824)"],
    "num_filter": [0, -1, 2**31],
}
POOL_HOSTILE = {
    "stride": ["(0, 0)", "(0, 1)", "(-1, -1)", "(1, 0)"],
    "kernel": ["(0, 0)", "(-1, -1)", "(100, 100)"],
    "pad": ["(-1, -1)", "(-8, -8)", "(1073741824, 1073741824)"],
    "p_value": [0, -1],
}
# single-input ops with an attribute MXNet divides or allocates by
DIVIDING_OPS = [("depth_to_space", {"block_size": 0}), ("space_to_depth", {"block_size": 0}),
                ("depth_to_space", {"block_size": -2}), ("SliceChannel", {"num_outputs": 0}),
                ("UpSampling", {"scale": 0, "sample_type": "nearest", "num_args": 1}),
                ("LRN", {"nsize": 0}), ("im2col", {"kernel": "(0, 0)", "stride": "(0, 0)"}),
                ("tile", {"reps": "(0, 1, 1, 1)"}), ("repeat", {"repeats": -1, "axis": 1}),
                ("_contrib_BilinearResize2D", {"scale_height": 0.0, "scale_width": 0.0}),
                ("reshape", {"shape": "(0, -4, 0, 0, 0, 0)"}), ("Pooling", {
                    "kernel": "(1, 1)", "stride": "(0, 0)", "pool_type": "max",
                    "global_pool": "True"})]
INDEX_OPS = ("take", "gather_nd", "scatter_nd", "SequenceReverse", "_contrib_index_copy",
             "batch_take")
INDEX_SCALES = [1.0, 7.0, 1000.0, 1e6, 1e9, -1.0, -1000.0, -1e9, 1e30, -1e30]


def case_hostile(rng: random.Random, base: Base) -> Case:
    stage = next(s for s in base.manifest["stages"] if s["kind"] == "residual")
    doc = json.loads(dict(base.members)[stage["symbol"]])
    shape = list(stage["outputs"][0]["shape"])  # 1x8x8x8: what the symbol must still make
    size, channels = int(np.prod(shape)), shape[1]
    sym = _Symbol(doc)
    x = next(i for i, n in enumerate(doc["nodes"]) if n["name"] == stage["inputs"][0]["name"])
    out = doc["heads"][0][0]  # the BatchNorm: its params stay in use
    params: Dict[str, np.ndarray] = {}
    feeds_scale = rng.choice([1.0, 10.0, 1000.0])
    feeds = {k: v * np.float32(feeds_scale) for k, v in base.feeds.items()}
    family = rng.choice(["conv", "conv", "pool", "dividing", "index", "index", "index"])
    if family == "conv":
        op = rng.choice(["Convolution", "Convolution", "Deconvolution"])
        attrs: Dict[str, Any] = {"kernel": "(1, 1)", "stride": "(1, 1)", "dilate": "(1, 1)",
                                 "pad": "(0, 0)", "num_filter": channels, "num_group": 1,
                                 "no_bias": True}
        for key in rng.sample(sorted(CONV_HOSTILE), rng.choice([1, 1, 2])):
            attrs[key] = rng.choice(CONV_HOSTILE[key])
        # the weight as MXNet would infer it from sane values (hostile ones: 1)
        group = attrs["num_group"] if 0 < attrs["num_group"] <= channels else 1
        filters = attrs["num_filter"] if 0 < attrs["num_filter"] <= 64 else channels
        kernel = [int(v) if 0 < int(v) <= 16 else 1
                  for v in attrs["kernel"].strip("()").split(",")]
        dims = ((filters, channels // group) if op == "Convolution"
                else (channels, max(filters // group, 1))) + tuple(kernel)
        params["arg:fuzz_weight"] = rng.choice([np.zeros, np.ones])(dims, np.float32)
        weight = sym.add("null", name="fuzz_weight")
        head = sym.add(op, [out, weight], **attrs)
        what = f"{op} " + ", ".join(f"{k}={attrs[k]}" for k in CONV_HOSTILE if k in attrs)
    elif family == "pool":
        attrs = {"kernel": rng.choice(["(1, 1)", "(3, 3)"]), "stride": "(1, 1)",
                 "pool_type": rng.choice(["max", "avg", "sum", "lp"]), "p_value": 2}
        attrs["pad"] = "(1, 1)" if attrs["kernel"] == "(3, 3)" else "(0, 0)"
        if rng.random() < 0.3:
            attrs["pooling_convention"] = rng.choice(["full", "same"])
        for key in rng.sample(sorted(POOL_HOSTILE), rng.choice([1, 1, 2])):
            attrs[key] = rng.choice(POOL_HOSTILE[key])
            if key == "p_value":
                attrs["pool_type"] = "lp"
        if attrs["pool_type"] != "lp":
            del attrs["p_value"]
        head = sym.add("Pooling", [out], **attrs)
        what = "Pooling " + ", ".join(f"{k}={v}" for k, v in attrs.items())
    elif family == "dividing":
        op, attrs = rng.choice(DIVIDING_OPS)
        head = sym.add(op, [out], **attrs)
        what = f"{op} " + ", ".join(f"{k}={v}" for k, v in attrs.items())
    else:  # an index op whose indices come from the stage input, scaled out of range
        op = rng.choice(INDEX_OPS)
        # the stage input itself (its values out of range with the inputs scaled up), or
        # computed from it inside the stage (scaled, cast)
        direct = op in ("take", "gather_nd", "scatter_nd") and rng.random() < 0.5
        scale = 1.0 if direct else rng.choice(INDEX_SCALES)
        cast = None if direct else rng.choice([None, "int32", "int64", "float32"])
        s = x if direct else sym.add("_mul_scalar", [x], scalar=scale)
        if cast:
            s = sym.add("Cast", [s], dtype=cast)
        rows = channels
        if op == "scatter_nd" and direct:  # indices 1x8x8x8 into a (512,) output
            scattered = sym.add("scatter_nd", [sym.add("Reshape", [out], shape=str(
                tuple(shape[1:]))), s], shape=f"({size},)")
            head = sym.add("Reshape", [scattered], shape=str(tuple(shape)))
        elif op == "take":
            mode = rng.choice(["raise", "raise", "clip", "wrap"])
            head = sym.add("take", [sym.add("Reshape", [out], shape=f"({size},)"), s],
                           mode=mode, axis=0)
            op = f"take mode={mode}"
        elif op == "gather_nd":
            found = sym.add("gather_nd", [sym.add("Reshape", [out], shape=f"({size},)"),
                                          s if direct else
                                          sym.add("Reshape", [s], shape=f"(1, {size})")])
            head = sym.add("Reshape", [found], shape=str(tuple(shape)))
        elif op == "scatter_nd":
            head = sym.add("scatter_nd", [sym.add("Reshape", [out], shape=f"({size // 4},)"),
                                          sym.add("Reshape", [s], shape=f"(4, {size // 4})")],
                           shape=str(tuple(shape)))
        elif op == "SequenceReverse":
            lengths = sym.add("max", [sym.add("Reshape", [s], shape=f"({rows}, {size // rows})")],
                              axis=1)
            reversed_ = sym.add("SequenceReverse",
                                [sym.add("Reshape", [out], shape=f"({rows}, {rows}, -1)"),
                                 lengths], use_sequence_length=True)
            head = sym.add("Reshape", [reversed_], shape=str(tuple(shape)))
        elif op == "_contrib_index_copy":
            index = sym.add("max", [sym.add("Reshape", [s], shape=f"({rows}, {size // rows})")],
                            axis=1)
            table = sym.add("Reshape", [out], shape=f"({rows}, {size // rows})")
            copied = sym.add("_contrib_index_copy", [table, index, table])
            head = sym.add("Reshape", [copied], shape=str(tuple(shape)))
        else:  # batch_take
            taken = sym.add("batch_take", [sym.add("Reshape", [out], shape=f"({size}, 1)"),
                                           sym.add("Reshape", [s], shape=f"({size},)")])
            head = sym.add("Reshape", [taken], shape=str(tuple(shape)))
        what = (f"{op}, indices = the stage input" if direct else
                f"{op}, indices = stage input x {scale:g}" + (f" as {cast}" if cast else ""))
        what += f", inputs x {feeds_scale:g}"
    members = [(n, sym.finish(head) if n == stage["symbol"] else d) for n, d in base.members]
    manifest = copy.deepcopy(base.manifest)
    if params:
        name = manifest["residual_params"]
        with np.load(io.BytesIO(dict(base.members)[name])) as npz:
            everything = {key: npz[key] for key in npz.files}
        everything.update(params)
        buffer = io.BytesIO()
        np.savez(buffer, **everything)
        members = [(n, buffer.getvalue() if n == name else d) for n, d in members]
        for s in manifest["stages"]:
            if s["name"] == stage["name"]:
                s["params"] = s["params"] + sorted(params)
    # scatter_nd with repeated indices writes one position from several threads: which value
    # lands is MXNet's (unspecified) choice, so two calls may differ without any memory error
    return Case("hostile", _repack(members, manifest), what, feeds=feeds,
                twice="scatter_nd" not in what)


ONNX_RANDOM_OPS = ("Multinomial", "RandomNormal", "RandomUniform", "RandomNormalLike",
                   "RandomUniformLike", "Bernoulli")
ONNX_HUGE_OPS = ("ConstantOfShape", "Expand", "Tile", "Range", "Resize", "Pad")


def _bomb_onnx(base: Base, name: str, op: str, elements: int = 2**34) -> bytes:
    """``name``'s ONNX with ``op`` making a tensor of about ``elements`` float32 elements (the ops
    ONNX_HUGE_OPS) or unbounded work (ONNX_RANDOM_OPS), folded into its output as + 0 * sum (so
    that nothing prunes it)."""
    import math

    from onnx import TensorProto, helper, numpy_helper

    model, out, dims = _rewired(dict(base.members)[name])
    graph = model.graph
    source = graph.input[0]
    shape = [d.dim_value for d in source.type.tensor_type.shape.dim]  # N x C x H x W
    size = int(np.prod(shape))
    lead = max(elements // size, 1)  # a leading dimension making `elements` from the source

    def const(key: str, value: Any) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), key))
        return key

    def ints(*values: int) -> np.ndarray:
        return np.array(values, np.int64)

    node = helper.make_node
    nodes = []
    if op == "Multinomial":
        nodes += [node("Flatten", [source.name], ["fuzz_flat"]),
                  node("Multinomial", ["fuzz_flat"], ["fuzz_big"], sample_size=2**31 - 1)]
    elif op in ("RandomNormal", "RandomUniform"):
        nodes.append(node(op, [], ["fuzz_big"], shape=[2**20, 2**20]))
    elif op in ("RandomNormalLike", "RandomUniformLike", "Bernoulli"):
        nodes += [node("Expand", [source.name, const("fuzz_shape", ints(lead, 1, 1, 1))],
                       ["fuzz_wide"]), node(op, ["fuzz_wide"], ["fuzz_big"])]
    elif op == "ConstantOfShape":
        nodes.append(node(op, [const("fuzz_shape", ints(elements >> 16, 2**16))], ["fuzz_big"]))
    elif op == "Expand":
        nodes.append(node(op, [source.name, const("fuzz_shape", ints(lead, 1, 1, 1))],
                          ["fuzz_big"]))
    elif op == "Tile":
        nodes.append(node(op, [source.name, const("fuzz_reps", ints(lead, 1, 1, 1))],
                          ["fuzz_big"]))
    elif op == "Range":
        nodes.append(node(op, [const("fuzz_start", np.float32(0)),
                               const("fuzz_limit", np.float32(elements)),
                               const("fuzz_delta", np.float32(1))], ["fuzz_big"]))
    elif op == "Resize":
        scale = float(math.ceil(math.sqrt(elements / size)))
        nodes.append(node(op, [source.name, "", const("fuzz_scales", np.array(
            [1, 1, scale, scale], np.float32))], ["fuzz_big"], mode="nearest"))
    else:  # Pad: H and W padded to sqrt(elements / (N * C)) each
        side = int(math.sqrt(elements / (shape[0] * shape[1])))
        pad = max((side - shape[2]) // 2, 0)
        nodes.append(node(op, [source.name, const("fuzz_pads", ints(0, 0, pad, pad, 0, 0, pad,
                                                                     pad))], ["fuzz_big"]))
    nodes += [node("ReduceSum", ["fuzz_big"], ["fuzz_sum"], keepdims=0),
              node("Cast", ["fuzz_sum"], ["fuzz_sumf"], to=TensorProto.FLOAT),
              node("Mul", ["fuzz_sumf", const("fuzz_zero", np.float32(0))], ["fuzz_nothing"]),
              node("Add", ["fuzz_orig", "fuzz_nothing"], [out])]
    graph.node.extend(nodes)
    if op not in ONNX_HUGE_OPS and model.opset_import[0].version < 7:
        model.opset_import[0].version = 13
    return _replace(base, name, model.SerializeToString())


def _deflate_bomb(size: int, header: bytes = b"") -> Tuple[bytes, int, int]:
    """``header`` then zeros up to ``size`` bytes, deflated: (raw deflate stream, crc32, size)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
    crc = zlib.crc32(header)
    parts = [compressor.compress(header)]
    chunk = bytes(2**20)
    left = size - len(header)
    while left > 0:
        piece = chunk[:min(left, len(chunk))]
        crc = zlib.crc32(piece, crc)
        parts.append(compressor.compress(piece))
        left -= len(piece)
    parts.append(compressor.flush())
    return b"".join(parts), crc & 0xFFFFFFFF, size


def _zip_with(members: Members, bomb_name: str, bomb: Tuple[bytes, int, int]) -> bytes:
    """A ZIP of ``members`` (stored) in which ``bomb_name`` is the given deflate stream."""
    from bundle_surgery import write_members

    stream, crc, size = bomb
    placeholder = b"\0" * len(stream)
    data = bytearray(write_members([(n, placeholder if n == bomb_name else d)
                                    for n, d in members]))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo(bomb_name)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start:start + len(stream)] = stream
    _patch_entry(data, info.header_offset, crc, size)
    return bytes(data)


def _patch_entry(data: bytearray, header_offset: int, crc: int, size: int) -> None:
    """Mark the member whose local header is at ``header_offset`` deflated, with this CRC and
    uncompressed size, in its local header and its central directory entry."""
    import struct

    struct.pack_into("<H", data, header_offset + 8, 8)
    struct.pack_into("<I", data, header_offset + 14, crc)
    struct.pack_into("<I", data, header_offset + 22, size)
    end = data.rfind(b"PK\x05\x06")
    directory = struct.unpack_from("<I", data, end + 16)[0]
    position = directory
    while data[position:position + 4] == b"PK\x01\x02":
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, position + 28)
        if struct.unpack_from("<I", data, position + 42)[0] == header_offset:
            struct.pack_into("<H", data, position + 10, 8)
            struct.pack_into("<I", data, position + 16, crc)
            struct.pack_into("<I", data, position + 24, size)
        position += 46 + name_length + extra_length + comment_length


def _bomb_size(base: Base) -> int:
    return 2**26 if base.light else 2**30


def case_bombs(rng: random.Random, base: Base) -> Case:
    variant = rng.choice(["random op", "random op", "huge intermediate", "huge intermediate",
                          "engine stages", "residual stages", "max batch", "max batch",
                          "npz deflate", "bundle deflate"])
    manifest = copy.deepcopy(base.manifest)
    if variant == "random op":
        op = rng.choice(ONNX_RANDOM_OPS)
        name = rng.choice([_last_onnx(base), base.member(".onnx", rng)])
        return Case("bombs", _bomb_onnx(base, name, op), f"ONNX {op} in {name}")
    if variant == "huge intermediate":  # 8 GiB (fits in many machines' RAM) or 64 GiB
        op = rng.choice(ONNX_HUGE_OPS)
        name = rng.choice([_last_onnx(base), base.member(".onnx", rng)])
        power = rng.choice([31, 34])
        return Case("bombs", _bomb_onnx(base, name, op, 2**power),
                    f"ONNX {op} making 2**{power} float32 in {name}")
    if variant in ("engine stages", "residual stages"):
        kind = "engine" if variant == "engine stages" else "residual"
        count = rng.choice([100, 250, 257, 1000, 9000] if kind == "engine"
                           else [100, 1000] if base.light else [100, 1000, 9000])
        stages = manifest["stages"]
        index = rng.choice([i for i, s in enumerate(stages) if s["kind"] == kind])
        copies = [dict(copy.deepcopy(stages[index]), name=f"{stages[index]['name']}_{i}")
                  for i in range(count - 1)]
        stages[index + 1:index + 1] = copies
        return Case("bombs", _repack(base.members, manifest),
                    f"{count} {kind} stages sharing one member")
    if variant == "max batch":  # the dynamic bundle (batch 1..4) declaring a huge max batch
        from bundle_surgery import manifest_of, members_of

        members = members_of(base.paths["dynamic"])
        manifest = manifest_of(members)
        batch = rng.choice([2**16, 2**19])  # the MXNet stage's tensors at the max: 256 MB, 2 GB
        for spec in _tensor_specs(manifest):
            if spec.get("max_shape"):
                spec["max_shape"][0] = batch
        call = rng.choice([1, 1, 2])
        return Case("bombs", _repack(members, manifest), f"max batch {batch}, called at {call}",
                    feeds=_feeds(manifest, call), reference=f"dynamic{call}",
                    max_growth_mb=256.0)
    if variant == "npz deflate":  # residual/params.npz holding a 1 GiB .npy, deflated
        name = manifest["residual_params"]
        with np.load(io.BytesIO(dict(base.members)[name])) as npz:
            params = {key: npz[key] for key in npz.files}
        key = rng.choice(sorted(params))
        if "npz" not in base._bombs:
            header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % (
            _bomb_size(base) // 4)
            header = header.ljust(117) + b"\n"
            npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
            base._bombs["npz"] = _deflate_bomb(_bomb_size(base) + len(npy), npy)
        raw = [(f"{k}.npy", _npy(v)) for k, v in params.items()]
        npz_bytes = _zip_with(raw, f"{key}.npy", base._bombs["npz"])
        return Case("bombs", _replace(base, name, npz_bytes),
                    f"{_bomb_size(base) >> 20} MiB deflated .npy '{key}'")
    # a bundle member deflated from 1 GiB of zeros (the members table saying so)
    size = _bomb_size(base)
    name = rng.choice([manifest["residual_params"], base.member(".plan", rng),
                       base.member(".onnx", rng)])
    if "member" not in base._bombs:
        base._bombs["member"] = _deflate_bomb(size)
        digest = hashlib.sha256()
        chunk = bytes(2**20)
        for _ in range(size >> 20):
            digest.update(chunk)
        base._bombs["member sha256"] = digest.hexdigest().encode()
    table = manifest["members"][name]
    table["bytes"], table["sha256"] = size, base._bombs["member sha256"].decode()
    for stage in manifest["stages"]:
        if stage.get("engine") == name:
            stage["bytes"], stage["sha256"] = table["bytes"], table["sha256"]
    text = json.dumps(manifest, indent=1, sort_keys=True).encode()
    members = [(n, text if n == "manifest.json" else d) for n, d in base.members]
    return Case("bombs", _zip_with(members, name, base._bombs["member"]),
                f"{name} deflated from {size >> 20} MiB")


def case_signed(rng: random.Random, base: Base) -> Case:
    """A signed bundle with a member the CPU path never reads (an engine plan) replaced."""
    from bundle_surgery import refresh_checksums, write_members

    signed = base.signed()
    members = _members_of_bytes(signed)
    plans = [n for n, _ in members if n.endswith(".plan")]
    plan = rng.choice(plans)
    body = dict(members)[plan]
    op = rng.choice(["in place, zeros", "in place, one byte", "zeros", "random", "one byte",
                     "other plan's bytes", "shorter", "longer", "empty", "other plan", "dropped",
                     "extra member", "manifest recomputed", "re-signed by another key"])
    if op.startswith("in place"):  # the bytes edited where they are: ZIP CRCs now stale
        data = bytearray(signed)
        with zipfile.ZipFile(io.BytesIO(signed)) as zf:
            info = zf.getinfo(plan)
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        if op.endswith("zeros"):
            data[start:start + info.file_size] = bytes(info.file_size)
        else:
            data[start + rng.randrange(info.file_size)] ^= 1 << rng.randrange(8)
        return Case("signed", bytes(data), f"{plan}: {op}", trusted=True)
    if op in ("zeros", "random", "one byte", "other plan's bytes"):  # same size, repacked
        other = dict(members)[rng.choice([p for p in plans if p != plan] or plans)]
        new = {"zeros": bytes(len(body)), "random": rng.randbytes(len(body)),
               "other plan's bytes": (other * 2)[:len(body)]}.get(op)
        if new is None:
            flipped = bytearray(body)
            flipped[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
            new = bytes(flipped)
    elif op == "shorter":
        new = body[:rng.randrange(len(body))]
    elif op == "longer":
        new = body + rng.randbytes(rng.choice([1, 4096]))
    elif op == "empty":
        new = b""
    elif op == "other plan":
        new = dict(members)[rng.choice([p for p in plans if p != plan] or plans)]
    else:
        new = body
    if op == "dropped":
        members = [(n, d) for n, d in members if n != plan]
    elif op == "extra member":
        members.insert(rng.randrange(2, len(members) + 1),
                       (rng.choice(["engines/extra.plan", "onnx/extra.onnx", "extra.bin"]),
                        rng.randbytes(64)))
    else:
        members = [(n, new if n == plan else d) for n, d in members]
    if op in ("manifest recomputed", "re-signed by another key"):  # the signature now stale
        members = [(n, rng.randbytes(len(body)) if n == plan else d) for n, d in members]
        manifest = refresh_checksums(json.loads(dict(members)["manifest.json"]), members)
        text = json.dumps(manifest, indent=1, sort_keys=True).encode()
        members = [(n, text if n == "manifest.json" else d) for n, d in members]
        if op == "re-signed by another key":
            from trtc.runtime.signing import sign_bundle

            scratch = Path(tempfile.mkdtemp(prefix="trtc-fuzz-sign-"))
            try:
                target = scratch / "resigned.trtb"
                target.write_bytes(write_members([(n, d) for n, d in members
                                                  if n != "signature.json"]))
                sign_bundle(target, base.key("other"))
                return Case("signed", target.read_bytes(), f"{plan}: {op}", trusted=True)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    return Case("signed", write_members(members), f"{plan}: {op}", trusted=True)


# ----------------------------------------------------------------------------------------------
# trtc compile mistakes (each in a subprocess)
# ----------------------------------------------------------------------------------------------
def _copy_model(params: Path, directory: Path, stem: str) -> Path:
    """The model's symbol beside a new params path ``directory/STEM-0000.params``."""
    shutil.copy(params.with_name(params.name.replace("-0000.params", "-symbol.json")),
                directory / f"{stem}-symbol.json")
    return directory / f"{stem}-0000.params"


def _compile_npz(directory: Path, name: str, value: float) -> Path:
    path = directory / name
    arrays = np.random.default_rng(0).random((2, 1, 3, 8, 8)).astype(np.float32)
    arrays[0, 0, 0, 0, 0] = value
    np.savez(path, a=arrays, b=arrays)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _directory(path: Path) -> Path:
    path.mkdir()
    return path


COMPILE_MISTAKES: List[Tuple[str, Callable[[Path, Path], List[str]]]] = [
    ("a directory as -o", lambda d, p: [str(p), "-o", str(_directory(d / "out"))]),
    ("NaN in calibration data", lambda d, p: [str(p), "--int8", "--calibration",
                                              str(_compile_npz(d, "cal.npz", np.nan))]),
    ("Inf in calibration data", lambda d, p: [str(p), "--int8", "--calibration",
                                              str(_compile_npz(d, "cal.npz", np.inf))]),
    ("NaN in --verify-inputs", lambda d, p: [str(p), "--verify-inputs",
                                             str(_compile_npz(d, "verify.npz", np.nan))]),
    ("a directory as params", lambda d, p: [
        str(_directory(_copy_model(p, d, "dir")))]),
    ("a FIFO as params", lambda d, p: [str(_fifo(_copy_model(p, d, "fifo")))]),
    ("a FIFO as --sign-key", lambda d, p: [str(p), "--sign-key", str(_fifo(d / "key.pem"))]),
    ("/dev/zero as --symbol", lambda d, p: [str(p), "--symbol", "/dev/zero"]),
    ("a FIFO as --symbol", lambda d, p: [str(p), "--symbol", str(_fifo(d / "s.json"))]),
    ("a huge --input range", lambda d, p: [str(p), "--input", "a:1..100000000x3x8x8",
                                           "--input", "b:1..100000000x3x8x8"]),
    ("a 10-digit --input range", lambda d, p: [str(p), "--input", "a:1..1000000000x3x8x8",
                                               "--input", "b:1..1000000000x3x8x8"]),
    ("a huge static --input", lambda d, p: [str(p), "--input", "a:100000000x3x8x8",
                                            "--input", "b:100000000x3x8x8"]),
]


def case_compile(index: int) -> Case:
    what, arguments = COMPILE_MISTAKES[index % len(COMPILE_MISTAKES)]
    return Case(COMPILE, what=what, compile=arguments)


GENERATORS: Dict[str, Callable[[random.Random, Base], Any]] = {
    "bytes": case_bytes, "zip": case_zip, "manifest": case_manifest, "fields": case_fields,
    "plan": case_plan, "onnx": case_onnx, "symbol": case_symbol, "params": case_params,
    "external": case_external, "hostile": case_hostile, "bombs": case_bombs,
    "signed": case_signed,
}


def make_case(base: Base, seed: int, case: int) -> Case:
    """Case ``case`` of run ``seed`` (its kind: ``kind_of(case)``)."""
    kind = kind_of(case)
    if kind == COMPILE:
        return case_compile(case - COMPILE_BASE)
    made = GENERATORS[kind](random.Random(f"{seed}/{case}"), base)
    return made if isinstance(made, Case) else Case(kind, made)


# ----------------------------------------------------------------------------------------------
# Running one case
# ----------------------------------------------------------------------------------------------
class Runner:
    """What a worker keeps across its cases: the base bundle taken apart, reference outputs, and
    its working directory ``work`` (made the process's cwd), which holds the secret the external
    class points at, a ``sub/`` directory and ``link.bin``, a symlink to a copy of the secret
    outside ``work``."""

    def __init__(self, paths: Dict[str, Path], work: Path, timeout: float = 60.0,
                 light: bool = False):
        self.work = Path(work).resolve()
        self.timeout = timeout
        (self.work / SECRET_NAME).write_bytes(SECRET)
        (self.work / "sub").mkdir(exist_ok=True)
        self.outside = Path(tempfile.mkdtemp(prefix="trtc-fuzz-outside-"))
        (self.outside / SECRET_NAME).write_bytes(SECRET)
        link = self.work / "link.bin"
        if not link.is_symlink():
            link.symlink_to(self.outside / SECRET_NAME)
        os.chdir(self.work)
        self.paths = {k: Path(v) for k, v in paths.items()}
        self.base = Base(self.paths["bundle"], self.paths, self.work, light)
        self._references: Dict[str, Dict[str, np.ndarray]] = {}

    def reference(self, which: str) -> Dict[str, np.ndarray]:
        """The outputs of the original bundle ('bundle') on the base's inputs, or of the dynamic
        bundle at batch N ('dynamicN')."""
        if which not in self._references:
            from trtc.runtime import load

            if which == "bundle":
                path, feeds = self.base.path, self.base.feeds
            else:
                path = self.paths["dynamic"]
                model = load(path, device="cpu")
                feeds = _feeds(model.manifest, int(which[len("dynamic"):]))
            self._references[which] = load(path, device="cpu")(**feeds)
        return self._references[which]

    def close(self) -> None:
        shutil.rmtree(self.outside, ignore_errors=True)


def _same(a: Dict[str, np.ndarray], b: Dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes()
        for k in a)


def run_case(runner: Runner, case: Case, path: Path) -> Dict[str, Any]:
    """Run one case here: load ``case.data`` (written to ``path``) on the CPU path and call it,
    or run its ``trtc compile``. Returns the outcome and, for an error, its class and message.
    Exceptions other than trtc's own propagate (the caller counts a crash)."""
    if case.compile is not None:
        return run_compile(runner, case)
    from trtc.runtime import BundleError, IncompatibleError, InputError, TrtcError, load

    base = runner.base
    path.write_bytes(case.data)
    feeds = base.feeds if case.feeds is None else case.feeds
    keys = [base.key().public_key()] if case.trusted else None
    again = None
    try:
        model = load(path, device="cpu", trusted_keys=keys)
        outputs = model(**feeds)
        if case.twice:
            again = model(**feeds)
    except TrtcError as exc:
        text = str(exc)
        refused = isinstance(exc, (BundleError, IncompatibleError, InputError))
        one_line = bool(text) and "\n" not in text and len(text) < 1000
        result = {"outcome": "refused" if refused and one_line else "crashed",
                  "error": type(exc).__name__, "message": text[:300]}
        if result["outcome"] == "refused" and any(p in text for p in ALLOCATION_FAILED):
            result["outcome"] = "OOM"
    else:
        if any(leaks(np.ascontiguousarray(v).tobytes()) for v in outputs.values()):
            result = {"outcome": "file read", "error": "load",
                      "message": "an output holds the secret's bytes"}
        elif again is not None and not _same(outputs, again):
            result = {"outcome": "crashed", "error": "unstable",
                      "message": "two calls on the same inputs gave different outputs "
                                 "(memory read out of bounds?)"}
        else:
            same = _same(outputs, runner.reference(case.reference))
            result = {"outcome": "identical" if same else "different"}
    if case.cli:
        cli = _run_cli(path, runner.work)
        if cli and result["outcome"] != "file read":
            result = cli
    return result


def _run_cli(path: Path, work: Path) -> Optional[Dict[str, Any]]:
    """``trtc run PATH --device cpu --save FILE`` in process: a file read if what it wrote or
    printed holds the secret, a crash on exit 70 or an exception; else None."""
    from typer.testing import CliRunner

    from trtc.cli import app

    saved = work / "saved.npz"
    saved.unlink(missing_ok=True)
    done = CliRunner().invoke(app, ["run", str(path), "--device", "cpu", "--save", str(saved)])
    written = saved.read_bytes() if saved.exists() else b""
    printed = done.stdout_bytes + (getattr(done, "stderr_bytes", b"") or b"")
    if leaks(written) or leaks(printed):
        return {"outcome": "file read", "error": "trtc run --save",
                "message": "what trtc run wrote or printed holds the secret's bytes"}
    if done.exit_code == 70 or (done.exception is not None
                                and not isinstance(done.exception, SystemExit)):
        return {"outcome": "crashed", "error": f"trtc run exit {done.exit_code}",
                "message": (done.output.strip().splitlines() or [""])[-1][:300]}
    return None


def run_compile(runner: Runner, case: Case) -> Dict[str, Any]:
    """``trtc compile`` with a user mistake, in a subprocess (its own session, killed after 0.75
    of the case timeout): exit 1..6 is refused, 0 identical (it compiled), 70 or a signal a
    crash."""
    directory = runner.work / "compile"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    assert case.compile is not None
    arguments = case.compile(directory, runner.paths["params"])
    if "-o" not in arguments:
        arguments += ["-o", str(directory / "out.trtb")]
    command = [sys.executable, "-c", "from trtc.cli import main; main()", "compile", *arguments]
    limit = runner.timeout * 0.75
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))  # the compiler: no worker limit
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, cwd=directory, start_new_session=True)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    try:
        _, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"outcome": "hang", "error": "timeout",
                "message": f"trtc compile gave no answer in {limit:.0f} s"}
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    code = proc.returncode
    last = (err.decode("utf-8", "replace").strip().splitlines() or [""])[-1][:300]
    if code == 0:
        return {"outcome": "identical", "error": "exit 0", "message": "compiled"}
    return {"outcome": "refused" if 1 <= code <= 6 else "crashed", "error": f"exit {code}",
            "message": last}


def _peak_rss_mb(reset: bool = False) -> float:
    """This process's peak RSS in MB (Linux: VmHWM, which ``reset`` first brings down to the
    current RSS, so that one case's peak is measured; elsewhere the lifetime peak)."""
    try:
        if reset:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return _peak_rss_mb()


def limit_memory(gib: float) -> None:
    """Limit this process's address space (the soft limit: a compile subprocess lifts it)."""
    if gib > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = int(gib * 2**30)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def worker(paths: Dict[str, Path], seed: int, ids: Sequence[int], log: Path,
           timeout: float = 60.0, memory_limit: float = 0.0, light: bool = False) -> None:
    """Run cases ``ids``, appending 'begin ID' before and a JSON result after each to ``log``.
    Whatever the process writes to fd 1 is caught in a file and counted."""
    caught = tempfile.TemporaryFile()
    os.dup2(caught.fileno(), 1)
    limit_memory(memory_limit)
    work = Path(tempfile.mkdtemp(prefix="trtc-fuzz-"))
    runner = Runner(paths, work, timeout, light)
    runner.reference("bundle")
    written = os.fstat(caught.fileno()).st_size
    try:
        with open(log, "a", buffering=1) as out:
            for case in ids:
                out.write(f"begin {case}\n")
                start = time.perf_counter()
                made = make_case(runner.base, seed, case)  # a generator bug stops the worker
                _peak_rss_mb(reset=True)
                before = _rss_mb()
                try:
                    result = run_case(runner, made, work / "case.trtb")
                except Exception as exc:  # not trtc's own error: a crash of the property
                    result = {"outcome": "crashed", "error": type(exc).__name__,
                              "message": (str(exc).splitlines() or [""])[0][:300]}
                growth = _peak_rss_mb() - before
                if made.max_growth_mb is not None and growth > made.max_growth_mb \
                        and result["outcome"] in ("refused", "identical", "different"):
                    result = {"outcome": "crashed", "error": "memory",
                              "message": f"peak RSS grew by {growth:.0f} MB (at most "
                                         f"{made.max_growth_mb:.0f} MB)"}
                sys.stdout.flush()
                size = os.fstat(caught.fileno()).st_size
                if size != written:
                    os.lseek(caught.fileno(), written, os.SEEK_SET)
                    result["stdout"] = os.read(caught.fileno(), 200).decode("utf-8", "replace")
                    written = size
                result.update(case=case, kind=made.kind, what=made.what[:200],
                              seconds=round(time.perf_counter() - start, 4),
                              rss_growth_mb=round(growth, 1))
                out.write(json.dumps(result) + "\n")
    finally:
        runner.close()
        shutil.rmtree(work, ignore_errors=True)


def run_cases(paths: "Path | Dict[str, Path]", seed: int, cases: Sequence[int], workers: int = 2,
              timeout: float = 60.0, progress: bool = False, memory_limit: float = 6.0,
              light: bool = False) -> List[Dict[str, Any]]:
    """Run ``cases`` in ``workers`` child processes (``paths``: ``prepare``'s, or just the base
    bundle when only mutation kinds run). A child killed by a signal costs the case it was
    running (crashed); one silent for ``timeout`` seconds is killed and its case counted as a
    hang; either is replaced by a new child for the rest of its share."""
    if not isinstance(paths, dict):
        paths = {"bundle": Path(paths)}
    cases = list(cases)
    # one share per worker for small runs (each start costs ~3 s: MXNet, ONNX Runtime, the
    # reference), else four each, so that a slow share does not keep the others waiting
    share = -(-len(cases) // max(workers, 1))
    chunk = share if share <= 200 else max(200, -(-len(cases) // (workers * 4)))
    todo: List[List[int]] = [cases[i:i + chunk] for i in range(0, len(cases), chunk)]
    results: Dict[int, Dict[str, Any]] = {}
    running: List[Dict[str, Any]] = []
    scratch = Path(tempfile.mkdtemp(prefix="trtc-fuzz-logs-"))
    started = time.monotonic()
    serial = 0
    shared = json.dumps({k: str(Path(v).resolve()) for k, v in paths.items()})
    while todo or running:
        while todo and len(running) < workers:
            share = todo.pop(0)
            serial += 1
            log = scratch / f"worker{serial}.log"
            command = [sys.executable, str(Path(__file__).resolve()), "--worker", shared,
                       "--seed", str(seed), "--ids", ",".join(map(str, share)),
                       "--log", str(log), "--timeout", str(timeout),
                       "--memory-limit", str(memory_limit)] + (["--light"] if light else [])
            err = open(scratch / f"worker{serial}.err", "wb")
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
            running.append({"proc": proc, "share": share, "log": log, "err": err,
                            "seen": 0, "since": time.monotonic()})
        time.sleep(0.2)
        for job in list(running):
            text = job["log"].read_text() if job["log"].exists() else ""
            if len(text) != job["seen"]:
                job["seen"], job["since"] = len(text), time.monotonic()
            code = job["proc"].poll()
            hung = code is None and time.monotonic() - job["since"] > timeout
            if code is None and not hung:
                continue
            if hung:
                job["proc"].kill()
                job["proc"].wait()
                code = job["proc"].returncode
            job["err"].close()
            running.remove(job)
            done, current = _parse_log(job["log"].read_text() if job["log"].exists() else "")
            results.update(done)
            left = [c for c in job["share"] if c not in done]
            if left:
                broken = current if current in left else left[0]
                tail = (job["log"].with_suffix(".err").read_bytes()[-300:]
                        .decode("utf-8", "replace").strip().splitlines() or [""])[-1]
                results[broken] = {
                    "case": broken, "kind": kind_of(broken),
                    "outcome": "hang" if hung else "crashed",
                    "error": "timeout" if hung else f"exit {code}",
                    "message": f"no answer in {timeout:.0f} s" if hung else tail[:300]}
                rest = [c for c in left if c != broken]
                if rest:
                    todo.insert(0, rest)
            if progress:
                _say(f"fuzz: {len(results)}/{len(cases)} cases, "
                     f"{time.monotonic() - started:.0f} s")
    shutil.rmtree(scratch, ignore_errors=True)
    return [results[c] for c in cases]


def _parse_log(text: str) -> Tuple[Dict[int, Dict[str, Any]], Optional[int]]:
    done: Dict[int, Dict[str, Any]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("begin "):
            current = int(line.split()[1])
        elif line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:  # the last line, cut by a kill
                continue
            done[result["case"]] = result
            current = None
    return done, current


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def summarize(results: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    kinds = [k for k in ALL_KINDS if any(r["kind"] == k for r in results)]
    counts = {kind: dict.fromkeys(OUTCOMES + ("stdout",), 0) for kind in kinds + ["all"]}
    growth = dict.fromkeys(kinds + ["all"], 0.0)
    seconds = dict.fromkeys(kinds + ["all"], 0.0)
    errors: Dict[str, int] = {}
    for r in results:
        for kind in (r["kind"], "all"):
            counts[kind][r["outcome"]] += 1
            counts[kind]["stdout"] += "stdout" in r
            growth[kind] = max(growth[kind], r.get("rss_growth_mb", 0.0))
            seconds[kind] += r.get("seconds", 0.0)
        if r["outcome"] == "refused":
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    findings = [r for r in results
                if r["outcome"] in ("crashed", "hang", "file read", "OOM") or "stdout" in r]
    return {"cases": len(results), "counts": counts, "rss_growth_mb": growth,
            "case_seconds": {k: round(v, 1) for k, v in seconds.items()},
            "refused_by_error": errors, "crashes": findings[:50]}


def table(summary: Dict[str, Any], seconds: float) -> str:
    titles = ["kind", "cases", *OUTCOMES, "stdout", "RSS+ MB"]
    rows = []
    for kind, c in summary["counts"].items():
        rows.append([kind, sum(c[o] for o in OUTCOMES)] + [c[o] for o in OUTCOMES] +
                    [c["stdout"], f"{summary['rss_growth_mb'][kind]:.0f}"])
    widths = [max(len(str(x)) for x in column) for column in zip(titles, *rows)]
    lines = ["  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w)
                       for i, (x, w) in enumerate(zip(row, widths))) for row in [titles] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
    refused = ", ".join(f"{k} {v}" for k, v in sorted(summary["refused_by_error"].items()))
    lines.append(f"refused by: {refused or 'none'}; {summary['cases']} cases in {seconds:.0f} s")
    for crash in summary["crashes"][:20]:
        what = f": {crash['what']}" if crash.get("what") else ""
        lines.append(f"  case {crash['case']} ({crash['kind']}{what}): {crash['outcome']} "
                     f"{crash.get('error', '')}: {crash.get('message', '')[:120]} "
                     f"{'stdout: ' + repr(crash['stdout'][:60]) if 'stdout' in crash else ''}")
    return "\n".join(lines)


def case_ids(count: int, kinds: Sequence[str] = KINDS, compile_cases: int = 0) -> List[int]:
    """The first ``count`` case IDs of ``kinds`` (IDs cycle through KINDS), then
    ``compile_cases`` compile mistakes (when 'compile' is among ``kinds``)."""
    wanted = [k for k in kinds if k in KINDS]
    ids: List[int] = []
    if wanted:
        per_round = [i for i, k in enumerate(KINDS) if k in wanted]
        rounds = -(-count // len(per_round))
        ids = [r * len(KINDS) + i for r in range(rounds) for i in per_round][:count]
    if COMPILE in kinds:
        ids += [COMPILE_BASE + i for i in range(compile_cases)]
    return ids


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="how many (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=max(1, min(os.cpu_count() or 1, 8)))
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds a case may run before it counts as a hang")
    parser.add_argument("--kinds", default=",".join(ALL_KINDS),
                        help=f"which kinds (default all: {','.join(ALL_KINDS)})")
    parser.add_argument("--compile-cases", type=int, default=len(COMPILE_MISTAKES),
                        help="trtc compile mistakes to run (default: each once; not in --quick)")
    parser.add_argument("--memory-limit", type=float, default=6.0,
                        help="address space of each worker, GiB (0: unlimited)")
    parser.add_argument("--light", action="store_true",
                        help="smaller bombs: at most 1000 MXNet stages, 64 MiB deflated (CI)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_CASES} cases, --light, no compile cases (CI smoke)")
    parser.add_argument("--json", action="store_true", help="the summary as JSON on stdout")
    parser.add_argument("--case", type=int, help="replay one case here, with its traceback")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "trtc-fuzz",
                        help="where the bundles under test are compiled (and cached)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)

    args = parser.parse_args(argv)
    if args.worker:
        paths = {k: Path(v) for k, v in json.loads(args.worker).items()}
        worker(paths, args.seed, [int(i) for i in args.ids.split(",")], args.log, args.timeout,
               args.memory_limit, args.light)
        return 0
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(ALL_KINDS))
    if unknown:
        parser.error(f"unknown kind(s) {', '.join(unknown)}; known: {', '.join(ALL_KINDS)}")
    paths = prepare(args.out)
    if args.case is not None:
        limit_memory(args.memory_limit)
        work = Path(tempfile.mkdtemp(prefix="trtc-fuzz-"))
        runner = Runner(paths, work, args.timeout, args.light)
        try:
            made = make_case(runner.base, args.seed, args.case)
            result = run_case(runner, made, work / f"case{args.case}.trtb")
        except Exception:
            traceback.print_exc()
            return 1
        finally:
            runner.close()
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps({"case": args.case, "kind": made.kind, "what": made.what, **result}))
        return 0
    cases = QUICK_CASES if args.quick else args.cases
    ids = case_ids(cases, kinds, 0 if args.quick else args.compile_cases)
    start = time.monotonic()
    results = run_cases(paths, args.seed, ids, args.workers, args.timeout,
                        progress=not args.json, memory_limit=args.memory_limit,
                        light=args.quick or args.light)
    summary = summarize(results)
    seconds = time.monotonic() - start
    if args.json:
        print(json.dumps({**summary, "seconds": round(seconds, 1), "seed": args.seed}))
    else:
        print(table(summary, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
