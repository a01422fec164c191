"""Residual stages: the parts of the model TensorRT does not run, executed by MXNet.

MXNet is imported here only, and only when a bundle has residual stages.
"""

from __future__ import annotations

import io
import json
import re
import threading
import zipfile
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from ..errors import BundleError, IncompatibleError

__all__ = ["MXNetStage", "import_mxnet", "load_residual_params"]


def import_mxnet() -> Any:
    """Import MXNet or explain why the bundle needs it."""
    try:
        import mxnet
    except ImportError:
        raise IncompatibleError("this bundle has residual stages that run in MXNet, which is not "
                                "installed: pip install mxnet==1.9.1") from None
    except Exception as exc:  # e.g. numpy >= 1.24 breaks `import mxnet` with AttributeError
        raise IncompatibleError(f"this bundle has residual stages that run in MXNet, which fails "
                                f"to import ({type(exc).__name__}: {exc}); MXNet 1.9.1 needs "
                                "numpy < 1.24") from None
    return mxnet


def mxnet_error_text(exc: BaseException, limit: int = 160) -> str:
    """The informative line of an MXNet error ('Check failed: ...'), without its C++ traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if line.startswith("MXNetError:")] or lines[-1:]
    text = useful[-1] if useful else type(exc).__name__
    text = re.sub(r"^MXNetError:\s*", "", text)
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", text)
    return text.rstrip(": ")[:limit] or type(exc).__name__


# dtypes a residual param may have (what MXNet 1.9 binds); anything else is a corrupted bundle.
_PARAM_DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int32", "int64")


def load_residual_params(data: bytes) -> Dict[str, np.ndarray]:
    """Read the residual params: a .npz of plainly stored .npy members, pickle disabled."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            if any(i.compress_type != zipfile.ZIP_STORED for i in zf.infolist()):
                raise ValueError("members are compressed; trtc stores them plainly")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            params = {name: npz[name] for name in npz.files}
        odd = [name for name, value in params.items() if value.dtype.name not in _PARAM_DTYPES]
        if odd:
            raise ValueError(f"param '{odd[0][:80]}' has dtype {params[odd[0]].dtype}")
        return params
    except Exception as exc:  # zipfile/ValueError/MemoryError on hostile bytes
        text = (str(exc).splitlines() or [""])[0][:160]
        raise BundleError(f"residual params are unreadable ({type(exc).__name__}: {text}); the "
                          "bundle is corrupted: compile it again") from None


def symbol_from_json(mx: Any, text: bytes) -> Any:
    """Build an MXNet symbol from a bundle's symbol JSON through MXNet's checked API.

    ``mx.sym.load_json`` trusts its input: a node input or head pointing at an output a node does
    not have, or an op node missing inputs, crashes the process in ``bind``. Here every node is
    made with the op registry (which checks its attributes), composed with exactly the inputs it
    names (MXNet checks the count), and every reference is range-checked first.

    Raises:
        ValueError: the JSON is malformed (the caller turns it into BundleError).
        mxnet.MXNetError: MXNet refused an op, its attributes or its inputs.
    """
    import ctypes

    from mxnet.base import _LIB, OpHandle, SymbolHandle, c_str, c_str_array, check_call, mx_uint

    doc = json.loads(text.decode("utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list) \
            or not isinstance(doc.get("heads"), list) or not doc["heads"]:
        raise ValueError("not an MXNet symbol (needs 'nodes' and 'heads' lists)")

    def entry(value: Any, built: List[Any], where: str) -> Any:
        if not (isinstance(value, list) and len(value) in (2, 3)
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            raise ValueError(f"{where}: an entry must be [node, output, version]")
        node, output = value[0], value[1]
        if not 0 <= node < len(built):
            raise ValueError(f"{where}: node {node} is not an earlier node")
        if not 0 <= output < len(built[node].list_outputs()):
            raise ValueError(f"{where}: node {node} has no output {output}")
        return built[node][output]

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
            continue
        inputs = [entry(e, built, f"{where} input {j}") for j, e in enumerate(node["inputs"])]
        op = OpHandle()
        check_call(_LIB.NNGetOpHandle(c_str(node["op"]), ctypes.byref(op)))
        handle = SymbolHandle()
        keys, values = list(attrs), list(attrs.values())
        check_call(_LIB.MXSymbolCreateAtomicSymbol(op, mx_uint(len(keys)), c_str_array(keys),
                                                   c_str_array(values), ctypes.byref(handle)))
        symbol = mx.sym.Symbol(handle)
        symbol._compose(*inputs, name=node["name"])
        if len(symbol.list_inputs()) != len(set(_walk_inputs(symbol, inputs))):
            raise ValueError(f"{where}: op {node['op']} needs other inputs than the "
                             f"{len(inputs)} it names")
        built.append(symbol)
    heads = [entry(h, built, f"head {i}") for i, h in enumerate(doc["heads"])]
    return heads[0] if len(heads) == 1 else mx.sym.Group(heads)


def _walk_inputs(symbol: Any, inputs: List[Any]) -> List[str]:
    """The variable names ``symbol`` reaches through ``inputs`` (to spot auto-created ones)."""
    names: List[str] = []
    for item in inputs:
        names.extend(item.list_inputs())
    return names


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
        args: Dict[str, Any] = {}
        aux: Dict[str, Any] = {}
        arg_names = set(symbol.list_arguments())
        try:
            for key in stage["params"]:
                kind, name = key.split(":", 1)
                (args if kind == "arg" else aux)[name] = mx.nd.array(params[key], ctx=self.ctx,
                                                                      dtype=params[key].dtype)
            for spec in stage["inputs"]:
                if spec["name"] not in arg_names:
                    raise BundleError(f"stage '{self.name}': input '{spec['name']}' is not an "
                                      "argument of its symbol; recompile the bundle")
                args[spec["name"]] = mx.nd.zeros(tuple(spec["shape"]), ctx=self.ctx,
                                                 dtype=spec["dtype"])
        except BundleError:
            raise
        except Exception as exc:
            raise BundleError(f"stage '{self.name}': MXNet cannot hold its params or inputs "
                              f"({mxnet_error_text(exc)}); recompile the bundle") from None
        try:
            self._executor = symbol.bind(self.ctx, args, aux_states=aux, grad_req="null")
        except Exception as exc:
            self._raise_if_custom_op_missing(exc, custom_ops)
            raise BundleError(f"stage '{self.name}': MXNet cannot bind its symbol "
                              f"({mxnet_error_text(exc)}); recompile the bundle") from None
        self._args = args
        for spec, out in zip(stage["outputs"], self._executor.outputs):
            if tuple(out.shape) != tuple(spec["shape"]) or np.dtype(out.dtype) != spec["dtype"]:
                raise BundleError(f"stage '{self.name}': output '{spec['name']}' is "
                                  f"{np.dtype(out.dtype)} {tuple(out.shape)}, the manifest says "
                                  f"{spec['dtype']} {tuple(spec['shape'])}; recompile the bundle")

    def _raise_if_custom_op_missing(self, exc: BaseException, custom_ops: Optional[list]) -> None:
        text = str(exc)
        if custom_ops and ("Custom" in text or "custom" in text):
            raise IncompatibleError(
                f"stage '{self.name}' uses MXNet custom op(s) {', '.join(custom_ops)} that are "
                "not registered in this process: import the module that registers them "
                "(@mx.operator.register) before trtc.runtime.load()") from None

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        with self._lock:
            try:
                for name in self.inputs:
                    self._args[name][:] = feeds[name]
                outs = self._executor.forward(is_train=False)
                return {name: out.asnumpy() for name, out in zip(self.outputs, outs)}
            except Exception as exc:  # MXNetError from an op on these inputs
                raise BundleError(f"stage '{self.name}': MXNet failed to run it "
                                  f"({mxnet_error_text(exc)})") from None
