"""GPU execution of an engine stage: TensorRT or TensorRT-RTX runtime, cuda-python buffers,
``set_tensor_address`` + ``execute_async_v3``.

Thread rule: one execution context, one stream and one set of buffers per stage, serialized by a
lock. Concurrent calls from several threads are correct and run one at a time on the GPU.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from .. import cuda
from ..errors import BundleError, IncompatibleError

__all__ = ["TensorRTStage", "import_backend", "backend_unavailable_reason", "RTX_RUNNABLE_CC"]

# Compute capabilities TensorRT-RTX engines can run on (its support matrix); 9.0 is not one.
RTX_RUNNABLE_CC = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
_MODULES = {"tensorrt": ("tensorrt", "tensorrt_lean"), "tensorrt_rtx": ("tensorrt_rtx",)}


def import_backend(backend: str) -> Any:
    """Import the runtime module for ``backend`` ('tensorrt' also accepts the lean runtime)."""
    last: Optional[BaseException] = None
    for module in _MODULES.get(backend, ()):
        try:
            return __import__(module)
        except ImportError as exc:
            last = exc
    hint = {"tensorrt": "pip install tensorrt (NVIDIA's index)",
            "tensorrt_rtx": "pip install 'trtc[rtx]'"}.get(backend, "")
    raise IncompatibleError(f"engine built with {backend}, which is not installed ({last}); {hint}")


def backend_unavailable_reason(stage: Mapping[str, Any], cc: str) -> Optional[str]:
    """Why ``stage``'s engine cannot run on a GPU of compute capability ``cc``, or None."""
    backend, built = stage["backend"], stage["backend_version"]
    try:
        trt = import_backend(backend)
    except IncompatibleError as exc:
        return str(exc)
    have = getattr(trt, "__version__", "?")
    if have != built:
        return (f"engine '{stage['name']}' was built with {backend} {built}, this runtime has "
                f"{backend} {have}; recompile the bundle or install {backend}=={built}")
    if backend == "tensorrt_rtx" and cc not in RTX_RUNNABLE_CC:
        return (f"GPU compute capability {cc} is not supported by TensorRT-RTX "
                f"(runs on {', '.join(RTX_RUNNABLE_CC)})")
    targets = stage["compute_capabilities"]
    if targets and cc not in targets:
        return (f"engine '{stage['name']}' targets compute capabilities {', '.join(targets)}, "
                f"this GPU is {cc}; recompile with --compute-capability {cc}")
    return None


class TensorRTStage:
    """One engine stage on the GPU, with device buffers allocated once from the engine's IO."""

    def __init__(self, stage: Mapping[str, Any], engine_bytes: bytes, device: int = 0):
        trt = import_backend(stage["backend"])
        self.name: str = stage["name"]
        self.inputs = [t["name"] for t in stage["inputs"]]
        self.outputs = [t["name"] for t in stage["outputs"]]
        self._lock = threading.Lock()
        cuda.set_device(device)
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise IncompatibleError(f"stage '{self.name}': {stage['backend']} refused to "
                                    "deserialize the engine on this GPU; recompile for it")
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        self._device: Dict[str, cuda.DeviceBuffer] = {}
        self._host: Dict[str, cuda.PinnedBuffer] = {}
        names: List[str] = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if set(names) != set(self.inputs) | set(self.outputs):
            raise BundleError(f"stage '{self.name}': engine IO {sorted(names)} does not match the "
                              "manifest; recompile the bundle")
        for name in names:
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            host = cuda.PinnedBuffer(shape, dtype)
            dev = cuda.DeviceBuffer(host.nbytes)
            self._host[name], self._device[name] = host, dev
            self.context.set_tensor_address(name, dev.ptr)

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        with self._lock:
            for name in self.inputs:
                host = self._host[name]
                np.copyto(host.array, feeds[name], casting="same_kind")
                self.stream.copy_h2d(self._device[name].ptr, host.ptr, host.nbytes)
            if not self.context.execute_async_v3(self.stream.ptr):
                raise IncompatibleError(f"stage '{self.name}': execute_async_v3 failed")
            for name in self.outputs:
                host = self._host[name]
                self.stream.copy_d2h(host.ptr, self._device[name].ptr, host.nbytes)
            self.stream.synchronize()
            return {name: self._host[name].array.copy() for name in self.outputs}
