"""Residual stages: the parts of the model TensorRT does not run, executed by MXNet.

MXNet is imported here only, and only when a bundle has residual stages.
"""

from __future__ import annotations

import io
import threading
from typing import Any, Dict, Mapping, Optional

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


def load_residual_params(data: bytes) -> Dict[str, np.ndarray]:
    """Read the residual params (.npz, pickle disabled)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except Exception as exc:  # zipfile/ValueError on hostile bytes
        raise BundleError(f"residual params are unreadable ({type(exc).__name__}); "
                          "the bundle is corrupted: compile it again") from None


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
            symbol = mx.sym.load_json(symbol_json.decode("utf-8"))
        except Exception as exc:
            raise BundleError(f"stage '{self.name}': MXNet cannot load its symbol "
                              f"({str(exc).splitlines()[0][:160]}); recompile the bundle") from None
        missing = [p for p in stage["params"] if p not in params]
        if missing:
            raise BundleError(f"stage '{self.name}': param '{missing[0]}' is missing from the "
                              "bundle; recompile it")
        args: Dict[str, Any] = {}
        aux: Dict[str, Any] = {}
        arg_names = set(symbol.list_arguments())
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
        try:
            self._executor = symbol.bind(self.ctx, args, aux_states=aux, grad_req="null")
        except Exception as exc:
            text = str(exc)
            if custom_ops and ("Custom" in text or "custom" in text):
                raise IncompatibleError(
                    f"stage '{self.name}' uses MXNet custom op(s) {', '.join(custom_ops)} that are "
                    "not registered in this process: import the module that registers them "
                    "(@mx.operator.register) before trtc.runtime.load()") from None
            raise BundleError(f"stage '{self.name}': MXNet cannot bind its symbol "
                              f"({text.splitlines()[0][:160]})") from None
        self._args = args

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        with self._lock:
            for name in self.inputs:
                self._args[name][:] = feeds[name]
            outs = self._executor.forward(is_train=False)
            return {name: out.asnumpy() for name, out in zip(self.outputs, outs)}
