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
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        try:
            self._session = ort.InferenceSession(onnx_bytes, sess_options=options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for bad models
            raise BundleError(f"stage '{self.name}': ONNX Runtime cannot load its ONNX "
                              f"({str(exc).splitlines()[0][:200]})") from None
        names = {i.name for i in self._session.get_inputs()}
        if names != set(self.inputs):
            raise BundleError(f"stage '{self.name}': its ONNX inputs {sorted(names)} do not match "
                              f"the manifest {sorted(self.inputs)}; recompile the bundle")

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        results = self._session.run(self.outputs, {name: feeds[name] for name in self.inputs})
        return dict(zip(self.outputs, results))
