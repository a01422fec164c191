"""Fuzz the bundle reader and the runtime at scale: generate mutated bundles, load each on the CPU
path and call it, and count what happened.

    python benchmarks/fuzz.py [--cases 10000] [--seed 0] [--workers 2] [--timeout 60]
                              [--quick] [--json] [--case ID] [--out DIR]

The bundle mutated is the tiny two-input model of ``tests/models/tiny.py`` compiled with BatchNorm
kept in MXNet, so it holds every kind of member: engine plans, their ONNX, a residual MXNet symbol
and residual params. Each case is one of eight kinds of mutation, seeded by ``(seed, case id)``
(``--case ID`` replays one in this process, with its traceback):

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

Outcomes: refused (a BundleError or IncompatibleError at load or call, or an InputError at call
when the manifest's inputs were edited), loaded with outputs bitwise identical to the original,
loaded with different outputs, crashed. A crash is anything else: the process killed by a signal
(each case runs in a worker process, so a segfault is counted, not fatal), no answer within
``--timeout`` seconds, an exception that is not trtc's own, an error message of more than one
line; and any byte written to stdout. Crashes must be 0.

"Loaded, different outputs" is expected: a bundle edited with its checksums recomputed is a
different, valid bundle (weights scaled, an output dropped), and nothing but a signature can tell
it from the one the compiler wrote (``load(path, trusted_keys=...)``).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # before tests/: tests/trtc must not shadow the trtc package
sys.path.append(str(ROOT / "tests"))
os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

import numpy as np  # noqa: E402

KINDS = ("bytes", "zip", "manifest", "fields", "plan", "onnx", "symbol", "params")
OUTCOMES = ("refused", "identical", "different", "crashed")
QUICK_CASES = 240
Members = List[Tuple[str, bytes]]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# The bundle under test
# ----------------------------------------------------------------------------------------------
def base_bundle(out_dir: Path) -> Path:
    """The tiny 'pair' model compiled with BatchNorm kept in MXNet (cached in ``out_dir``)."""
    from models import tiny

    out_dir.mkdir(parents=True, exist_ok=True)
    cached = out_dir / "pair-batchnorm.trtb"
    if not cached.exists():
        class _Dirs:  # what tiny.bundle needs of pytest's tmp_path_factory
            def mktemp(self, name: str) -> Path:
                path = out_dir / name
                path.mkdir(exist_ok=True)
                return path

        built = tiny.bundle("pair", _Dirs(), exclude_ops=("BatchNorm",))
        os.replace(built, cached)
    return cached


class Base:
    """The original bundle taken apart: what every mutation starts from."""

    def __init__(self, path: Path):
        from bundle_surgery import manifest_of, members_of

        self.path = path
        self.data = path.read_bytes()
        self.members: Members = members_of(path)
        self.manifest: Dict[str, Any] = manifest_of(self.members)
        self.names = [name for name, _ in self.members]
        rng = np.random.default_rng(0)
        self.feeds = {t["name"]: rng.standard_normal(t["shape"]).astype(t["dtype"])
                      for t in self.manifest["inputs"]}

    def member(self, suffix: str, rng: random.Random) -> str:
        return rng.choice([n for n in self.names if n.endswith(suffix)])


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


GENERATORS: Dict[str, Callable[[random.Random, Base], bytes]] = {
    "bytes": case_bytes, "zip": case_zip, "manifest": case_manifest, "fields": case_fields,
    "plan": case_plan, "onnx": case_onnx, "symbol": case_symbol, "params": case_params,
}


def make_case(base: Base, seed: int, case: int) -> Tuple[str, bytes]:
    """Case ``case`` of run ``seed``: its kind (cycling through KINDS) and the bundle's bytes."""
    rng = random.Random(f"{seed}/{case}")
    kind = KINDS[case % len(KINDS)]
    return kind, GENERATORS[kind](rng, base)


# ----------------------------------------------------------------------------------------------
# Running one case
# ----------------------------------------------------------------------------------------------
def run_case(base: Base, data: bytes, path: Path,
             reference: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """Load ``data`` on the CPU path and call it once; the outcome and, for an error, its class
    and message. Exceptions other than trtc's own propagate (the caller counts a crash)."""
    from trtc.runtime import BundleError, IncompatibleError, InputError, TrtcError, load

    path.write_bytes(data)
    try:
        model = load(path, device="cpu")
        outputs = model(**base.feeds)
    except TrtcError as exc:
        text = str(exc)
        refused = isinstance(exc, (BundleError, IncompatibleError, InputError))
        one_line = bool(text) and "\n" not in text and len(text) < 1000
        return {"outcome": "refused" if refused and one_line else "crashed",
                "error": type(exc).__name__, "message": text[:300]}
    same = outputs.keys() == reference.keys() and all(
        outputs[k].shape == reference[k].shape and outputs[k].dtype == reference[k].dtype
        and outputs[k].tobytes() == reference[k].tobytes() for k in reference)
    return {"outcome": "identical" if same else "different"}


def worker(bundle: Path, seed: int, first: int, last: int, log: Path) -> None:
    """Run cases ``first``..``last``-1, appending 'begin ID' before and a JSON result after each
    to ``log``. Whatever the process writes to fd 1 is caught in a file and counted."""
    from trtc.runtime import load

    caught = tempfile.TemporaryFile()
    os.dup2(caught.fileno(), 1)
    base = Base(bundle)
    reference = load(bundle, device="cpu")(**base.feeds)
    work = Path(tempfile.mkdtemp(prefix="trtc-fuzz-"))
    written = os.fstat(caught.fileno()).st_size
    try:
        with open(log, "a", buffering=1) as out:
            for case in range(first, last):
                out.write(f"begin {case}\n")
                start = time.perf_counter()
                kind, data = make_case(base, seed, case)  # a generator bug stops the worker
                try:
                    result = run_case(base, data, work / "case.trtb", reference)
                except Exception as exc:  # not trtc's own error: a crash of the property
                    result = {"outcome": "crashed", "error": type(exc).__name__,
                              "message": (str(exc).splitlines() or [""])[0][:300]}
                sys.stdout.flush()
                size = os.fstat(caught.fileno()).st_size
                if size != written:
                    os.lseek(caught.fileno(), written, os.SEEK_SET)
                    result["stdout"] = os.read(caught.fileno(), 200).decode("utf-8", "replace")
                    written = size
                result.update(case=case, kind=kind, seconds=round(time.perf_counter() - start, 4))
                out.write(json.dumps(result) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_cases(bundle: Path, seed: int, cases: Sequence[int], workers: int = 2,
              timeout: float = 60.0, progress: bool = False) -> List[Dict[str, Any]]:
    """Run ``cases`` in ``workers`` child processes. A child killed by a signal or silent for
    ``timeout`` seconds costs the case it was running (counted as crashed) and is replaced by a
    new child for the rest of its share."""
    cases = list(cases)
    chunk = max(25, len(cases) // (workers * 4) + 1)
    todo: List[List[int]] = [cases[i:i + chunk] for i in range(0, len(cases), chunk)]
    results: Dict[int, Dict[str, Any]] = {}
    running: List[Dict[str, Any]] = []
    scratch = Path(tempfile.mkdtemp(prefix="trtc-fuzz-logs-"))
    started = time.monotonic()
    serial = 0
    while todo or running:
        while todo and len(running) < workers:
            share = todo.pop(0)
            serial += 1
            log = scratch / f"worker{serial}.log"
            command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(bundle),
                       "--seed", str(seed), "--range", f"{share[0]}:{share[-1] + 1}",
                       "--log", str(log)]
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
                    "case": broken, "kind": KINDS[broken % len(KINDS)], "outcome": "crashed",
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
    counts = {kind: dict.fromkeys(OUTCOMES + ("stdout",), 0) for kind in KINDS + ("all",)}
    errors: Dict[str, int] = {}
    for r in results:
        for kind in (r["kind"], "all"):
            counts[kind][r["outcome"]] += 1
            counts[kind]["stdout"] += "stdout" in r
        if r["outcome"] == "refused":
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    crashes = [r for r in results if r["outcome"] == "crashed" or "stdout" in r]
    return {"cases": len(results), "counts": counts, "refused_by_error": errors,
            "crashes": crashes[:50]}


def table(summary: Dict[str, Any], seconds: float) -> str:
    titles = ["kind", "cases", "refused", "identical", "different", "crashed", "stdout"]
    rows = []
    for kind in KINDS + ("all",):
        c = summary["counts"][kind]
        rows.append([kind, sum(c[o] for o in OUTCOMES)] + [c[o] for o in OUTCOMES] +
                    [c["stdout"]])
    widths = [max(len(str(x)) for x in column) for column in zip(titles, *rows)]
    lines = ["  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w)
                       for i, (x, w) in enumerate(zip(row, widths))) for row in [titles] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
    refused = ", ".join(f"{k} {v}" for k, v in sorted(summary["refused_by_error"].items()))
    lines.append(f"refused by: {refused or 'none'}; {summary['cases']} cases in {seconds:.0f} s")
    for crash in summary["crashes"][:10]:
        lines.append(f"  case {crash['case']} ({crash['kind']}): {crash['outcome']} "
                     f"{crash.get('error', '')}: {crash.get('message', '')[:120]} "
                     f"{'stdout: ' + repr(crash['stdout'][:60]) if 'stdout' in crash else ''}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="how many (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=max(1, min(os.cpu_count() or 1, 8)))
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds a case may run before it counts as crashed")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CASES} cases (CI smoke)")
    parser.add_argument("--json", action="store_true", help="the summary as JSON on stdout")
    parser.add_argument("--case", type=int, help="replay one case here, with its traceback")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "trtc-fuzz",
                        help="where the bundle under test is compiled (and cached)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--range", help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        first, last = map(int, args.range.split(":"))
        worker(args.worker, args.seed, first, last, args.log)
        return 0
    bundle = base_bundle(args.out)
    if args.case is not None:
        from trtc.runtime import load

        base = Base(bundle)
        kind, data = make_case(base, args.seed, args.case)
        reference = load(bundle, device="cpu")(**base.feeds)
        try:
            result = run_case(base, data, args.out / f"case{args.case}.trtb", reference)
        except Exception:
            traceback.print_exc()
            return 1
        print(json.dumps({"case": args.case, "kind": kind, **result}))
        return 0
    cases = QUICK_CASES if args.quick else args.cases
    start = time.monotonic()
    results = run_cases(bundle, args.seed, range(cases), args.workers, args.timeout,
                        progress=not args.json)
    summary = summarize(results)
    seconds = time.monotonic() - start
    if args.json:
        print(json.dumps({**summary, "seconds": round(seconds, 1), "seed": args.seed}))
    else:
        print(table(summary, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
