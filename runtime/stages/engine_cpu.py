"""CPU execution of an engine stage: ONNX Runtime runs the very ONNX the engine was built from."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Tuple

import numpy as np

from ..bundle import shape_fits, shape_text
from ..errors import BundleError, IncompatibleError, InputError
from ..onnx_check import OnnxRefused, check_onnx

__all__ = ["OnnxRuntimeStage", "import_onnxruntime", "check_onnx"]


def import_onnxruntime() -> Any:
    """Import onnxruntime or explain how to get it."""
    try:
        import onnxruntime
    except ImportError:
        raise IncompatibleError("the CPU execution path needs ONNX Runtime: "
                                "pip install 'trtc[cpu]' (or onnxruntime)") from None
    return onnxruntime


class OnnxRuntimeStage:
    """A stage run by ONNX Runtime on the host: an engine stage on the CPU path (the ONNX the
    engine was built from), or an ONNX stage on any path (ops kept out of engines that have an
    exact ONNX). Thread-safe (ORT sessions are)."""

    def __init__(self, stage: Mapping[str, Any], onnx_bytes: bytes, intra_op_threads: int = 0):
        ort = import_onnxruntime()
        self.name: str = stage["name"]
        self.inputs = [t["name"] for t in stage["inputs"]]
        self.outputs = [t["name"] for t in stage["outputs"]]
        self._output_specs = [(t["name"], t, np.dtype(t["dtype"])) for t in stage["outputs"]]
        try:
            check_onnx(onnx_bytes)
        except OnnxRefused as exc:
            raise BundleError(f"stage '{self.name}': {exc}; refusing a bundle `trtc compile` "
                              "did not write") from None
        options = ort.SessionOptions()
        # Fatal only: a failure reaches the user once, as our one-line error, not also as ORT's
        # multi-line log on stderr.
        options.log_severity_level = 4
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        try:
            # enable_fallback=0: on a failure ORT's Python layer would otherwise print an
            # "EP Error" banner on stdout and retry; the failure reaches the user as one line.
            self._session = ort.InferenceSession(onnx_bytes, sess_options=options,
                                                 providers=["CPUExecutionProvider"],
                                                 enable_fallback=0)
        except Exception as exc:  # ORT raises its own exception types for bad models
            raise BundleError(f"stage '{self.name}': ONNX Runtime cannot load its ONNX "
                              f"({_first_line(exc)}); recompile the bundle") from None
        if hasattr(self._session, "disable_fallback"):
            self._session.disable_fallback()  # the same banner from run()
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
            onnx_dims = [d if isinstance(d, int) else -1 for d in given.shape]
            if given.type != want or onnx_dims != list(spec["shape"]):
                raise BundleError(f"stage '{self.name}': ONNX input '{given.name}' is "
                                  f"{given.type} {given.shape}, the manifest says {spec['dtype']} "
                                  f"{spec['shape']}; recompile the bundle")

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        try:
            results = self._session.run(self.outputs, {name: feeds[name] for name in self.inputs})
        except Exception as exc:  # ORT's own exception types; a bundle whose ONNX cannot run
            text = str(exc)
            if "out of bounds" in text or "out of data bou" in text:  # Gather/GatherND indices
                raise InputError(f"stage '{self.name}': an index input is out of range (e.g. a "
                                 "token id >= the vocabulary size, a token type other than 0/1): "
                                 f"{_first_line(exc)[-160:]}") from None
            raise BundleError(f"stage '{self.name}': ONNX Runtime failed to run its ONNX "
                              f"({_first_line(exc)}); recompile the bundle") from None
        for (name, spec, dtype), value in zip(self._output_specs, results):
            if not shape_fits(spec, value.shape) or value.dtype != dtype:
                raise BundleError(f"stage '{self.name}': output '{name}' came out {value.dtype} "
                                  f"{value.shape}, the manifest says {dtype} {shape_text(spec)}; "
                                  "the bundle is inconsistent: recompile it")
        return dict(zip(self.outputs, results))


# Manifest dtype -> ONNX Runtime's type name inside "tensor(...)".
_ORT_TYPES = {"float32": "float", "float64": "double", "float16": "float16", "bool": "bool",
              "int8": "int8", "uint8": "uint8", "int32": "int32", "int64": "int64"}


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]
