"""Residual stages: the parts of the model TensorRT does not run, executed by MXNet.

MXNet is imported here only, and only when a bundle has residual stages.
"""

from __future__ import annotations

import ast
from collections import OrderedDict
import io
import json
import os
import re
import struct
import sys
import threading
import zipfile
from typing import Any, Collection, Dict, List, Mapping, Optional, Tuple

# MXNet logs "Subgraph backend MKLDNN is activated" on every bind (a residual stage binds once per
# input shape, at call time); unless the user asked for it, keep that line out of their logs.
os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

import numpy as np

from ..bundle import (MAX_NPY_HEADER_BYTES, MAX_RESIDUAL_PARAMS, MAX_SYMBOL_NODES,
                      MAX_TENSOR_ELEMENTS, shape_fits, shape_text, zip_entry_count)
from ..errors import BundleError, IncompatibleError, InputError

__all__ = ["MXNetStage", "import_mxnet", "load_residual_params", "check_attrs", "mxnet_error_text"]


def import_mxnet(ops: Collection[str] = ()) -> Any:
    """Import MXNet or say in one line why the bundle needs it and what that takes (``ops``: the
    op types its MXNet stages run, named in the message). MXNet 1.9.1 imports only on Python <=
    3.11 with numpy < 1.24: where that cannot hold, the message never suggests installing it."""
    what = (f"this bundle runs {', '.join(op[:40] for op in sorted(ops)[:6])}{', ...' if len(ops) > 6 else ''} in "
            "MXNet stages (`trtc inspect` shows why)" if ops
            else "this bundle has residual stages that run in MXNet")
    needs = "MXNet 1.9.1, which runs only on Python <= 3.11 with numpy < 1.24"
    here = f"Python {sys.version_info[0]}.{sys.version_info[1]} with numpy {np.__version__}"
    possible = sys.version_info < (3, 12)
    try:
        import mxnet
    except ImportError:
        advice = ("pip install mxnet==1.9.1 'numpy<1.24'" if possible else
                  "run it where Python <= 3.11 is available, or recompile it so that those ops "
                  "run in ONNX Runtime (the default --residual onnxruntime does wherever an "
                  "exact ONNX exists)")
        raise IncompatibleError(f"{what}, and MXNet is not installed: it needs {needs} (this is "
                                f"{here}); {advice}") from None
    except Exception as exc:  # e.g. numpy >= 1.24 breaks `import mxnet` with AttributeError
        advice = ("install numpy<1.24 in this environment" if possible else
                  "run it in an environment with Python <= 3.11 and numpy < 1.24")
        raise IncompatibleError(f"{what}, and MXNet fails to import ({type(exc).__name__}: "
                                f"{str(exc)[:80]}): it needs {needs} (this is {here}); "
                                f"{advice}") from None
    return mxnet


def mxnet_error_text(exc: BaseException, limit: int = 160) -> str:
    """The informative line of an MXNet error ('Check failed: ...'), without its C++ traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if line.startswith("MXNetError:")] or lines[-1:]
    text = useful[-1] if useful else type(exc).__name__
    text = re.sub(r"^MXNetError:\s*", "", text)
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", text)
    if "Error in operator" in text:  # not the shapes dict MXNet prints before it ("{...}: Error")
        text = text[text.index("Error in operator"):]
    return text.rstrip(": ")[:limit] or type(exc).__name__


# dtypes a residual param may have (what MXNet 1.9 binds), as .npy header descriptors (numpy
# writes the platform's byte order; trtc only runs on little-endian machines).
_NPY_DTYPES = {"<f4": "float32", "<f2": "float16", "<f8": "float64", "|i1": "int8",
               "|u1": "uint8", "<i4": "int32", "<i8": "int64"}
_NPY_MAGIC = b"\x93NUMPY"


def load_residual_params(data: bytes,
                         expected: Optional[Collection[str]] = None) -> Dict[str, np.ndarray]:
    """Read the residual params: a .npz (a ZIP of plainly stored .npy members), never unpickled.

    numpy's own reader is not used: its ``NpzFile`` looks each name up in a list (quadratic in the
    member count) and its .npy reader allocates whatever shape a header claims before reading.
    Here the member count is bounded from the ZIP's end record before anything is parsed, every
    header is bounded and checked, and a member's bytes must be exactly what its header says.

    Args:
        data: the bytes of ``residual/params.npz``.
        expected: the param keys the residual stages name; the file must hold exactly these.

    Raises:
        BundleError: unreadable, over a bound, or not exactly the expected params.
    """
    try:
        count = zip_entry_count(data, MAX_RESIDUAL_PARAMS)
        if count > MAX_RESIDUAL_PARAMS:
            raise ValueError(f"it holds {count} members, more than the bound of "
                             f"{MAX_RESIDUAL_PARAMS} (MAX_RESIDUAL_PARAMS)")
        params: Dict[str, np.ndarray] = {}
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_RESIDUAL_PARAMS:
                raise ValueError(f"it holds {len(infos)} members, more than the bound of "
                                 f"{MAX_RESIDUAL_PARAMS} (MAX_RESIDUAL_PARAMS)")
            for info in infos:
                if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                    raise ValueError("members are compressed or encrypted; trtc stores them "
                                     "plainly")
                if not info.filename.endswith(".npy") or len(info.filename) > 1024:
                    raise ValueError(f"member {info.filename[:80]!r} is not a .npy array")
                key = info.filename[:-4]
                if key in params:
                    raise ValueError(f"param '{key[:80]}' appears twice")
                params[key] = _read_npy(key, zf.read(info))
    except Exception as exc:  # zipfile/ValueError/struct/MemoryError on hostile bytes
        text = (str(exc).splitlines() or [""])[0][:160]
        raise BundleError(f"residual params are unreadable ({type(exc).__name__}: {text}); the "
                          "bundle is corrupted: compile it again") from None
    if expected is not None:
        missing = [key for key in expected if key not in params]
        if missing:
            raise BundleError(f"param '{missing[0][:80]}' is missing from the bundle's residual "
                              "params; recompile it")
        extra = sorted(set(params) - set(expected))
        if extra:
            raise BundleError(f"residual params hold '{extra[0][:80]}', which no residual stage "
                              "uses; refusing a bundle `trtc compile` did not write")
    return params


def _read_npy(key: str, raw: bytes) -> np.ndarray:
    """One .npy member: header bounded and checked, the data exactly as long as it claims."""
    if not raw.startswith(_NPY_MAGIC) or len(raw) < 10:
        raise ValueError(f"param '{key[:80]}' is not a .npy array")
    major = raw[6]
    if major == 1:
        (header_length,), start = struct.unpack_from("<H", raw, 8), 10
    elif major in (2, 3) and len(raw) >= 12:
        (header_length,), start = struct.unpack_from("<I", raw, 8), 12
    else:
        raise ValueError(f"param '{key[:80]}' has .npy format version {major}")
    if header_length > MAX_NPY_HEADER_BYTES or start + header_length > len(raw):
        raise ValueError(f"param '{key[:80]}' has a .npy header of {header_length} bytes")
    header = ast.literal_eval(raw[start:start + header_length].decode("latin1"))
    if not (isinstance(header, dict) and set(header) == {"descr", "fortran_order", "shape"}
            and isinstance(header["shape"], tuple) and header["fortran_order"] is False):
        raise ValueError(f"param '{key[:80]}' has a malformed .npy header")
    descr, shape = header["descr"], header["shape"]
    if not isinstance(descr, str) or descr not in _NPY_DTYPES:
        raise ValueError(f"param '{key[:80]}' has dtype {str(descr)[:40]}")
    if len(shape) > 16 or not all(type(d) is int and 0 <= d < 2**31 for d in shape):
        raise ValueError(f"param '{key[:80]}' has shape {str(shape)[:80]}")
    count = 1
    for d in shape:
        count *= d
    dtype = np.dtype(_NPY_DTYPES[descr])
    body = len(raw) - start - header_length
    if count > MAX_TENSOR_ELEMENTS or body != count * dtype.itemsize:
        raise ValueError(f"param '{key[:80]}' holds {body} bytes, its header says "
                         f"{dtype} {shape}")
    return np.frombuffer(raw, dtype=dtype, count=count,
                         offset=start + header_length).reshape(shape)


def symbol_from_json(mx: Any, text: bytes) -> Any:
    """Build an MXNet symbol from a bundle's symbol JSON through MXNet's checked API, in time
    linear in the number of nodes.

    ``mx.sym.load_json`` trusts its input: a node input or head pointing at an output a node does
    not have, or an op node missing inputs, crashes the process in ``bind``. Here every node is
    made with the op registry (which checks its attributes), composed with exactly the inputs it
    names (MXNet checks the count; inputs it would add itself are refused), and every reference is
    range-checked first.

    Raises:
        ValueError: the JSON is malformed or over MAX_SYMBOL_NODES (the caller turns it into
            BundleError).
        mxnet.MXNetError: MXNet refused an op, its attributes or its inputs.
    """
    import ctypes

    from mxnet.base import _LIB, OpHandle, SymbolHandle, c_str, c_str_array, check_call, mx_uint

    doc = json.loads(text.decode("utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list) \
            or not isinstance(doc.get("heads"), list) or not doc["heads"]:
        raise ValueError("not an MXNet symbol (needs 'nodes' and 'heads' lists)")
    if len(doc["nodes"]) > MAX_SYMBOL_NODES or len(doc["heads"]) > MAX_SYMBOL_NODES:
        raise ValueError(f"{max(len(doc['nodes']), len(doc['heads']))} nodes or heads is more "
                         f"than the bound of {MAX_SYMBOL_NODES} (MAX_SYMBOL_NODES)")

    outputs: List[int] = []  # node index -> its number of outputs

    def entry(value: Any, built: List[Any], where: str) -> Any:
        if not (isinstance(value, list) and len(value) in (2, 3)
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            raise ValueError(f"{where}: an entry must be [node, output, version]")
        node, output = value[0], value[1]
        if not 0 <= node < len(built):
            raise ValueError(f"{where}: node {node} is not an earlier node")
        if not 0 <= output < outputs[node]:
            raise ValueError(f"{where}: node {node} has no output {output}")
        return built[node][output] if outputs[node] > 1 else built[node]

    built: List[Any] = []
    for i, node in enumerate(doc["nodes"]):
        where = f"node {i}"
        if not (isinstance(node, dict) and isinstance(node.get("op"), str)
                and isinstance(node.get("name"), str) and isinstance(node.get("inputs"), list)):
            raise ValueError(f"{where}: needs 'op', 'name' and 'inputs'")
        attrs = node.get("attrs", {})
        if not isinstance(attrs, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in attrs.items()):
            raise ValueError(f"{where}: 'attrs' must map strings to strings")
        if node["op"] == "null":
            if node["inputs"]:
                raise ValueError(f"{where}: a variable has no inputs")
            built.append(mx.sym.Variable(node["name"]))
            outputs.append(1)
            continue
        inputs = [entry(e, built, f"{where} input {j}") for j, e in enumerate(node["inputs"])]
        check_attrs(node["op"], attrs, where)
        op = OpHandle()
        check_call(_LIB.NNGetOpHandle(c_str(node["op"]), ctypes.byref(op)))
        handle = SymbolHandle()
        keys, values = list(attrs), list(attrs.values())
        check_call(_LIB.MXSymbolCreateAtomicSymbol(op, mx_uint(len(keys)), c_str_array(keys),
                                                   c_str_array(values), ctypes.byref(handle)))
        symbol = mx.sym.Symbol(handle)
        symbol._compose(*inputs, name=node["name"])
        # Composing with fewer inputs than the op takes makes MXNet add variables of its own
        # (a weight the bundle never supplies). The node's own inputs tell, in O(inputs): the
        # whole graph is never walked here (that made a 20,000-node symbol take minutes).
        children = symbol.get_children()
        given = len(children.list_outputs()) if children is not None else 0
        if given != len(inputs):
            raise ValueError(f"{where}: op {node['op']} needs other inputs than the "
                             f"{len(inputs)} it names")
        built.append(symbol)
        outputs.append(len(symbol.list_outputs()))
    heads = [entry(h, built, f"head {i}") for i, h in enumerate(doc["heads"])]
    return heads[0] if len(heads) == 1 else mx.sym.Group(heads)


# Attributes MXNet divides by or loops over without checking them itself (num_group=0 was a
# SIGFPE at load): each must be a positive integer (or a tuple of them) where present.
_POSITIVE_ATTRS = {
    "Convolution": ("num_group", "num_filter", "kernel", "stride", "dilate"),
    "Deconvolution": ("num_group", "num_filter", "kernel", "stride", "dilate"),
    "Pooling": ("kernel", "stride"),
    "_contrib_DeformableConvolution": ("num_group", "num_filter", "kernel", "stride", "dilate",
                                       "num_deformable_group"),
    "Correlation": ("kernel_size", "stride1", "stride2"),  # 0: SIGFPE in shape inference
    "im2col": ("kernel", "stride", "dilate"),
    "col2im": ("kernel", "stride", "dilate"),
    "space_to_depth": ("block_size",),
    "depth_to_space": ("block_size",),
    "GroupNorm": ("num_groups",),
    "ROIPooling": ("pooled_size",),
    "_contrib_ROIAlign": ("pooled_size",),
    **{f"_contrib_interleaved_matmul_{kind}": ("heads",)
       for kind in ("selfatt_qk", "selfatt_valatt", "encdec_qk", "encdec_valatt")},
}
# negative padding: MXNet's kernels read outside their input
_NON_NEGATIVE_ATTRS = {op: ("pad",) for op in ("Convolution", "Deconvolution", "Pooling", "im2col",
                                               "col2im", "_contrib_DeformableConvolution")}
# Ops that write (or read) at positions their index input names, with no bounds check of their
# own in MXNet 1.9 (out-of-range indices: segfaults, heap corruption): input position of the
# indices, and of the tensor whose leading axes they index (None: the op's `shape` attribute).
_INDEX_OPS = {"scatter_nd": (1, None), "_scatter_set_nd": (2, 0), "_contrib_index_copy": (1, 0),
              "SequenceReverse": (1, 0)}


def _int_tuple(text: str) -> Optional[Tuple[int, ...]]:
    """``'(3, 3)'``, ``'[3,3]'``, ``'3'`` as ints; None where it is not that (left to MXNet)."""
    parts = [p for p in re.split(r"[\s,()\[\]]+", text) if p]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        return None


def check_attrs(op: str, attrs: Mapping[str, str], where: str) -> None:
    """Refuse attribute values MXNet itself would crash on (``_POSITIVE_ATTRS``).

    Raises:
        ValueError: which attribute, and its value.
    """
    for key in _POSITIVE_ATTRS.get(op, ()):
        if key not in attrs:
            continue
        if op == "Pooling" and attrs.get("global_pool", "False").lower() in ("true", "1"):
            continue  # kernel and stride are ignored
        values = _int_tuple(attrs[key])
        if values is None or not values and key != "kernel" or any(v < 1 for v in values):
            raise ValueError(f"{where}: {op} {key}={attrs[key][:40]!r} must be positive")
    for key in _NON_NEGATIVE_ATTRS.get(op, ()):
        values = _int_tuple(attrs.get(key, "()"))
        if values and any(v < 0 for v in values):
            raise ValueError(f"{where}: {op} {key}={attrs[key][:40]!r} must not be negative")
    if op == "Pooling" and attrs.get("pool_type") == "lp" and "p_value" in attrs:
        p = _int_tuple(attrs["p_value"])
        if p is None or len(p) != 1 or p[0] < 1:
            raise ValueError(f"{where}: Pooling p_value={attrs['p_value'][:40]!r} must be positive")


class MXNetStage:
    """One residual stage: an MXNet symbol bound once with its params; calls are serialized
    by a lock because an MXNet executor is not safe to share between threads."""

    def __init__(self, stage: Mapping[str, Any], symbol_json: bytes,
                 params: Mapping[str, np.ndarray], use_gpu: bool = False,
                 custom_ops: Optional[list] = None):
        mx = import_mxnet()
        self.name: str = stage["name"]
        self.inputs = [t["name"] for t in stage["inputs"]]
        self.outputs = [t["name"] for t in stage["outputs"]]
        self._lock = threading.Lock()
        self.ctx = mx.gpu(0) if use_gpu and mx.context.num_gpus() > 0 else mx.cpu()
        try:
            symbol = symbol_from_json(mx, symbol_json)
        except Exception as exc:
            self._raise_if_custom_op_missing(exc, custom_ops)
            raise BundleError(f"stage '{self.name}': MXNet cannot load its symbol "
                              f"({mxnet_error_text(exc)}); recompile the bundle") from None
        if len(symbol.list_outputs()) != len(self.outputs):
            raise BundleError(f"stage '{self.name}': its symbol has {len(symbol.list_outputs())} "
                              f"outputs, the manifest {len(self.outputs)}; recompile the bundle")
        missing = [p for p in stage["params"] if p not in params]
        if missing:
            raise BundleError(f"stage '{self.name}': param '{missing[0]}' is missing from the "
                              "bundle; recompile it")
        self._symbol, self._stage, self._params, self._custom_ops = symbol, stage, params, custom_ops
        self._index_checks = self._index_inputs(symbol_json)
        self._specs = {t["name"]: t for t in stage["inputs"]}
        self._aux: Dict[str, Any] = {}
        self._weights: Dict[str, Any] = {}
        self._bound: "OrderedDict[Tuple[Tuple[int, ...], ...], Tuple[Any, Dict[str, Any]]]" = OrderedDict()
        # the manifest's shapes (a dynamic input: its largest): checked and bound before any call
        first = {t["name"]: tuple(t.get("max_shape") or t["shape"]) for t in stage["inputs"]}
        self._check_variables(symbol, stage, params, first)
        try:
            for key in stage["params"]:
                kind, name = key.split(":", 1)
                (self._weights if kind == "arg" else self._aux)[name] = mx.nd.array(
                    params[key], ctx=self.ctx, dtype=params[key].dtype)
        except Exception as exc:
            raise BundleError(f"stage '{self.name}': MXNet cannot hold its params or inputs "
                              f"({mxnet_error_text(exc)}); recompile the bundle") from None
        # bound at the smallest shapes: a call allocates for its own shapes (a bundle's declared
        # maximum, however large, costs nothing until a call of that size comes)
        smallest = {t["name"]: tuple(t.get("min_shape") or t["shape"]) for t in stage["inputs"]}
        self._executor_for(smallest, checked=smallest == first)

    def _executor_for(self, shapes: Mapping[str, Tuple[int, ...]], checked: bool = False) -> Tuple[Any, Dict[str, Any]]:
        """The executor bound for these input shapes (dynamic bundles: one per distinct shape, the
        MAX_BOUND_SHAPES most recent kept). Every new shape is checked like the first one."""
        mx = import_mxnet()
        key = tuple(tuple(shapes[n]) for n in self.inputs)
        if key in self._bound:
            self._bound.move_to_end(key)
            return self._bound[key]
        if not checked:
            self._check_variables(self._symbol, self._stage, self._params, shapes)
        args: Dict[str, Any] = dict(self._weights)
        try:
            for spec in self._stage["inputs"]:
                args[spec["name"]] = mx.nd.zeros(tuple(shapes[spec["name"]]), ctx=self.ctx,
                                                 dtype=spec["dtype"])
        except Exception as exc:
            raise BundleError(f"stage '{self.name}': MXNet cannot hold its params or inputs "
                              f"({mxnet_error_text(exc)}); recompile the bundle") from None
        try:
            executor = self._symbol.bind(self.ctx, args, aux_states=self._aux, grad_req="null")
        except Exception as exc:
            self._raise_if_custom_op_missing(exc, self._custom_ops)
            raise BundleError(f"stage '{self.name}': MXNet cannot bind its symbol "
                              f"({mxnet_error_text(exc)}); recompile the bundle") from None
        for spec, out in zip(self._stage["outputs"], executor.outputs):
            if not shape_fits(spec, tuple(out.shape)) or np.dtype(out.dtype) != spec["dtype"]:
                raise BundleError(f"stage '{self.name}': output '{spec['name']}' is "
                                  f"{np.dtype(out.dtype)} {tuple(out.shape)}, the manifest says "
                                  f"{spec['dtype']} {shape_text(spec)}; recompile the bundle")
        self._bound[key] = (executor, args)
        while len(self._bound) > MAX_BOUND_SHAPES:
            self._bound.popitem(last=False)
        return self._bound[key]

    def _index_inputs(self, symbol_json: bytes) -> List[Tuple[str, str, str, Optional[str],
                                                              Tuple[int, ...]]]:
        """For every ``_INDEX_OPS`` node: (its name, op, the stage input holding its indices,
        the tensor whose leading axes they index (or None and the op's ``shape``)). Indices made
        inside the stage cannot be checked before MXNet uses them: such a stage is refused."""
        doc = json.loads(symbol_json.decode("utf-8"))
        nodes, inputs = doc["nodes"], set(self.inputs)
        checks = []
        for node in nodes:
            op = node["op"]
            if op not in _INDEX_OPS or (op == "SequenceReverse" and node.get("attrs", {}).get(
                    "use_sequence_length", "False").lower() not in ("true", "1")):
                continue
            at, target = _INDEX_OPS[op]
            source = nodes[node["inputs"][at][0]]
            if source["op"] != "null" or source["name"] not in inputs:
                raise BundleError(f"stage '{self.name}': {op} '{node['name'][:60]}' takes "
                                  "indices computed inside an MXNet stage, which cannot be "
                                  "range-checked before MXNet writes with them; recompile the "
                                  "bundle (ONNX Runtime stages check their indices)")
            if target is None:
                shape = _int_tuple(node.get("attrs", {}).get("shape", "")) or ()
                checks.append((node["name"], op, source["name"], None, shape))
            else:
                entry = node["inputs"][target]
                checks.append((node["name"], op, source["name"],
                               f"{nodes[entry[0]]['name']}:{entry[1]}", ()))
        return checks

    def _check_indices(self, feeds: Mapping[str, np.ndarray], executor: Any) -> None:
        """Refuse (InputError) indices outside what their op indexes, before MXNet runs."""
        for node, op, source, target, shape in self._index_checks:
            if target is not None:
                name, out = target.rsplit(":", 1)
                dims = self._target_shape(name, int(out), feeds)
                bound = dims[:1]
            else:
                bound = shape
            value = feeds[source]
            if op == "SequenceReverse":  # lengths in [0, T]
                low, high = 0, bound[0] + 1
                bad = value.size and (value.min() < low or value.max() >= high)
            elif op in ("scatter_nd", "_scatter_set_nd") and target is None:
                rows = value.reshape(value.shape[0], -1) if value.ndim else value.reshape(1, 1)
                limits = np.array(bound[:rows.shape[0]] or [0], dtype=np.float64).reshape(-1, 1)
                bad = rows.size and (rows.shape[0] > len(bound) or (rows < 0).any()
                                     or (rows >= limits).any())
                low, high = 0, bound
            else:  # first axis of the target
                low, high = 0, bound[0]
                bad = value.size and (value.min() < low or value.max() >= high)
            if bad or (value.dtype.kind == "f" and not np.isfinite(value).all()):
                raise InputError(f"stage '{self.name}': {op} '{node[:60]}' got indices from "
                                 f"'{source}' outside [{low}, {high}); MXNet would write outside "
                                 "its tensor")

    def _target_shape(self, name: str, out: int, feeds: Mapping[str, np.ndarray]) -> Tuple[int, ...]:
        """The shape of output ``out`` of node ``name`` (a stage input, a param or an op) at
        this call's input shapes."""
        if name in feeds:
            return tuple(feeds[name].shape)
        for kind in ("arg", "aux"):
            if f"{kind}:{name}" in self._params:
                return tuple(self._params[f"{kind}:{name}"].shape)
        internals = self._symbol.get_internals()
        wanted = internals.list_outputs()
        shapes = {n: feeds[n].shape for n in self.inputs}
        shapes.update({k.split(":", 1)[1]: v.shape for k, v in self._params.items()})
        _, out_shapes, _ = internals._infer_shape_impl(False, **shapes)
        for tensor, shape in zip(wanted, out_shapes):
            if tensor in (f"{name}_output", f"{name}_output{out}") or tensor == name:
                return tuple(shape)
        return ()

    def _raise_if_custom_op_missing(self, exc: BaseException, custom_ops: Optional[list]) -> None:
        text = str(exc)
        if custom_ops and ("Custom" in text or "custom" in text):
            raise IncompatibleError(
                f"stage '{self.name}' uses MXNet custom op(s) {', '.join(custom_ops)} that are "
                "not registered in this process: import the module that registers them "
                "(@mx.operator.register) before trtc.runtime.load()") from None

    def _check_variables(self, symbol: Any, stage: Mapping[str, Any],
                         params: Mapping[str, np.ndarray],
                         shapes: Mapping[str, Tuple[int, ...]]) -> None:
        """Before MXNet allocates or computes anything: every variable of the symbol is a stage
        input or a param, every param a variable of exactly the shape and dtype MXNet infers for
        it from the stage's inputs (the manifest's; see ``_infer_with_params`` for a param no op
        derives), and the outputs come out as the manifest says. MXNet's bind does not check a
        param's shape against the op that reads it: a wrong one makes its kernels read and
        write out of bounds."""
        where = f"stage '{self.name}'"
        inputs = {t["name"]: {**t, "shape": list(shapes[t["name"]])} for t in stage["inputs"]}
        arg_names, aux_names = symbol.list_arguments(), symbol.list_auxiliary_states()
        if len(set(arg_names + aux_names)) != len(arg_names) + len(aux_names):
            twice = next(n for n in arg_names + aux_names if (arg_names + aux_names).count(n) > 1)
            raise BundleError(f"{where}: its symbol has two variables named '{twice[:80]}'; "
                              "recompile the bundle")
        declared = {name: kind for kind, name in (key.split(":", 1) for key in stage["params"])}
        if len(declared) != len(stage["params"]):
            raise BundleError(f"{where}: a param is named both 'arg:' and 'aux:'; recompile the "
                              "bundle")
        variables = {**{n: "arg" for n in arg_names}, **{n: "aux" for n in aux_names}}
        for name in inputs:
            if variables.get(name) != "arg" or name in declared:
                raise BundleError(f"{where}: input '{name}' is not an argument of its symbol; "
                                  "recompile the bundle")
        for name, kind in variables.items():
            if name not in inputs and declared.get(name) != kind:
                raise BundleError(f"{where}: its symbol's {_KIND[kind]} '{name[:80]}' is given "
                                  f"by no '{kind}:' param nor stage input; recompile the bundle")
        for name, kind in declared.items():
            if variables.get(name) != kind:
                raise BundleError(f"{where}: param '{kind}:{name[:80]}' is no {_KIND[kind]} of "
                                  "its symbol; recompile the bundle")
        try:  # the _impl calls: the public ones print their arguments on stdout on an error
            arg_shapes, out_shapes, aux_shapes = symbol._infer_shape_impl(
                True, **{n: tuple(t["shape"]) for n, t in inputs.items()})
            arg_types, out_types, aux_types = symbol._infer_type_impl(
                True, **{n: t["dtype"] for n, t in inputs.items()})
        except Exception as exc:  # MXNetError: an op refuses these shapes or dtypes
            # or an op cannot take a param's shape as unknown (BilinearResize2D 'like' of a
            # folded constant raised "index 2 must be in range [0, -1)"): the full inference,
            # every param's own shape given, must then complete and agree with them
            refused = BundleError(f"{where}: MXNet refuses the shapes or dtypes of its inputs "
                                  f"({mxnet_error_text(exc)}); recompile the bundle")
            if not declared:
                raise refused from None
            try:
                out_shapes, out_types = self._infer_with_params(symbol, inputs, declared, params,
                                                                list(declared))
            except BundleError:
                raise refused from None
            self._check_outputs(stage, out_shapes, out_types)
            return
        if arg_shapes is None or arg_types is None:
            raise BundleError(f"{where}: MXNet cannot infer its tensors' shapes and dtypes from "
                              "its inputs; recompile the bundle")
        inferred = {**dict(zip(arg_names, zip(arg_shapes, arg_types))),
                    **dict(zip(aux_names, zip(aux_shapes, aux_types)))}
        unknown = [name for name, (shape, dtype) in inferred.items()
                   if name in declared and (not shape or 0 in shape or dtype is None)]
        if unknown:  # () or a 0 dim: MXNet's "unknown"
            out_shapes, out_types = self._infer_with_params(symbol, inputs, declared, params,
                                                            unknown)
        for name, kind in declared.items():
            shape, dtype = inferred[name]
            value = params[f"{kind}:{name}"]
            if name in unknown:
                continue
            if value.shape != tuple(shape) or value.dtype != np.dtype(dtype):
                raise BundleError(f"{where}: param '{kind}:{name[:80]}' is {value.dtype} "
                                  f"{value.shape}, its symbol needs {np.dtype(dtype)} "
                                  f"{tuple(shape)}; the bundle is corrupted or was edited: "
                                  "recompile it")
        self._check_outputs(stage, out_shapes, out_types)

    def _check_outputs(self, stage: Mapping[str, Any], out_shapes: List[Any],
                       out_types: List[Any]) -> None:
        where = f"stage '{self.name}'"
        for spec, shape, dtype in zip(stage["outputs"], out_shapes, out_types):
            if dtype is None or not shape_fits(spec, tuple(shape or ())) \
                    or np.dtype(dtype) != spec["dtype"]:
                raise BundleError(f"{where}: output '{spec['name']}' would be "
                                  f"{np.dtype(dtype) if dtype else '?'} {tuple(shape or ())}, "
                                  f"the manifest says {spec['dtype']} {shape_text(spec)}; "
                                  "recompile the bundle")

    def _infer_with_params(self, symbol: Any, inputs: Mapping[str, Any],
                           declared: Mapping[str, str], params: Mapping[str, np.ndarray],
                           unknown: List[str]) -> Tuple[List[Any], List[Any]]:
        """Shapes and dtypes no op derives from the stage's inputs (a CustomOp whose
        ``infer_shape`` passes its inputs' shapes through): MXNet's full inference with every
        param's own shape and dtype given must then complete and agree with them, as it must
        in ``bind``. Built-in ops derive every param from their data and attributes, so only
        ops reading a param by its own shape take this path. Returns the outputs' shapes and
        dtypes."""
        where = f"stage '{self.name}'"
        given = {n: params[f"{k}:{n}"] for n, k in declared.items()}
        try:
            arg_shapes, out_shapes, aux_shapes = symbol._infer_shape_impl(
                False, **{n: tuple(t["shape"]) for n, t in inputs.items()},
                **{n: tuple(v.shape) for n, v in given.items()})
            arg_types, out_types, aux_types = symbol._infer_type_impl(
                False, **{n: t["dtype"] for n, t in inputs.items()},
                **{n: v.dtype for n, v in given.items()})
        except Exception as exc:
            raise BundleError(f"{where}: MXNet refuses the shapes or dtypes of its params "
                              f"({mxnet_error_text(exc)}); recompile the bundle") from None
        if arg_shapes is None or arg_types is None:
            raise BundleError(f"{where}: the shape of param '{unknown[0][:80]}' follows neither "
                              "from the stage's inputs nor from the params; recompile the bundle")
        names = symbol.list_arguments() + symbol.list_auxiliary_states()
        for name, shape, dtype in zip(names, arg_shapes + aux_shapes, arg_types + aux_types):
            if name in given and (tuple(shape) != given[name].shape
                                  or np.dtype(dtype) != given[name].dtype):
                raise BundleError(f"{where}: param '{declared[name]}:{name[:80]}' is "
                                  f"{given[name].dtype} {given[name].shape}, its symbol needs "
                                  f"{np.dtype(dtype)} {tuple(shape)}; the bundle is corrupted "
                                  "or was edited: recompile it")
        return out_shapes, out_types

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        for name in self.inputs:  # what MXNet copies in must fit what it binds
            spec, value = self._specs[name], feeds[name]
            if not isinstance(value, np.ndarray) or not shape_fits(spec, value.shape) \
                    or value.dtype != np.dtype(spec["dtype"]):
                raise BundleError(f"stage '{self.name}': input '{name}' is "
                                  f"{getattr(value, 'dtype', type(value).__name__)} "
                                  f"{getattr(value, 'shape', '')}, the stage takes "
                                  f"{spec['dtype']} {shape_text(spec)}; the bundle is "
                                  "inconsistent: recompile it")
        with self._lock:
            executor, args = self._executor_for({n: feeds[n].shape for n in self.inputs})
            if self._index_checks:
                self._check_indices(feeds, executor)
            try:
                for name in self.inputs:
                    args[name][:] = feeds[name]
                outs = executor.forward(is_train=False)
                return {name: out.asnumpy() for name, out in zip(self.outputs, outs)}
            except Exception as exc:  # MXNetError from an op on these inputs
                raise BundleError(f"stage '{self.name}': MXNet failed to run it "
                                  f"({mxnet_error_text(exc)})") from None


# A dynamic bundle's residual stage binds MXNet once per distinct input shape; this many stay
# bound (least recently used dropped first), so a stream of varied shapes cannot grow memory.
MAX_BOUND_SHAPES = 8


_KIND = {"arg": "argument", "aux": "auxiliary state"}
