"""CPU execution of an engine stage: ONNX Runtime runs the very ONNX the engine was built from."""

from __future__ import annotations

from typing import Any, Dict, Mapping

import numpy as np

from ..errors import BundleError, IncompatibleError

__all__ = ["OnnxRuntimeStage", "import_onnxruntime"]


def import_onnxruntime() -> Any:
    """Import onnxruntime or explain how to get it."""
    try:
        import onnxruntime
    except ImportError:
        raise IncompatibleError("the CPU execution path needs ONNX Runtime: "
                                "pip install 'trtc[cpu]' (or onnxruntime)") from None
    return onnxruntime


class OnnxRuntimeStage:
    """One engine stage run by ONNX Runtime on the CPU. Thread-safe (ORT sessions are)."""

    def __init__(self, stage: Mapping[str, Any], onnx_bytes: bytes, intra_op_threads: int = 0):
        ort = import_onnxruntime()
        self.name: str = stage["name"]
        self.inputs = [t["name"] for t in stage["inputs"]]
        self.outputs = [t["name"] for t in stage["outputs"]]
        self._output_specs = [(t["name"], tuple(t["shape"]), np.dtype(t["dtype"]))
                              for t in stage["outputs"]]
        options = ort.SessionOptions()
        # Fatal only: a failure reaches the user once, as our one-line error, not also as ORT's
        # multi-line log on stderr.
        options.log_severity_level = 4
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        try:
            self._session = ort.InferenceSession(onnx_bytes, sess_options=options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for bad models
            raise BundleError(f"stage '{self.name}': ONNX Runtime cannot load its ONNX "
                              f"({_first_line(exc)}); recompile the bundle") from None
        names = {i.name for i in self._session.get_inputs()}
        if names != set(self.inputs):
            raise BundleError(f"stage '{self.name}': its ONNX inputs {sorted(names)} do not match "
                              f"the manifest {sorted(self.inputs)}; recompile the bundle")
        declared = {o.name for o in self._session.get_outputs()}
        if not set(self.outputs) <= declared:
            raise BundleError(f"stage '{self.name}': its ONNX has no output "
                              f"'{sorted(set(self.outputs) - declared)[0]}' that the manifest "
                              "names; recompile the bundle")
        for given, spec in zip(sorted(self._session.get_inputs(), key=lambda i: i.name),
                               sorted(stage["inputs"], key=lambda t: t["name"])):
            want = f"tensor({_ORT_TYPES.get(spec['dtype'], spec['dtype'])})"
            if given.type != want or list(given.shape) != list(spec["shape"]):
                raise BundleError(f"stage '{self.name}': ONNX input '{given.name}' is "
                                  f"{given.type} {given.shape}, the manifest says {spec['dtype']} "
                                  f"{spec['shape']}; recompile the bundle")

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        try:
            results = self._session.run(self.outputs, {name: feeds[name] for name in self.inputs})
        except Exception as exc:  # ORT's own exception types; a bundle whose ONNX cannot run
            raise BundleError(f"stage '{self.name}': ONNX Runtime failed to run its ONNX "
                              f"({_first_line(exc)}); recompile the bundle") from None
        for (name, shape, dtype), value in zip(self._output_specs, results):
            if value.shape != shape or value.dtype != dtype:
                raise BundleError(f"stage '{self.name}': output '{name}' came out {value.dtype} "
                                  f"{value.shape}, the manifest says {dtype} {shape}; the bundle "
                                  "is inconsistent: recompile it")
        return dict(zip(self.outputs, results))


# Manifest dtype -> ONNX Runtime's type name inside "tensor(...)".
_ORT_TYPES = {"float32": "float", "float64": "double", "float16": "float16", "bool": "bool",
              "int8": "int8", "uint8": "uint8", "int32": "int32", "int64": "int64"}


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]
