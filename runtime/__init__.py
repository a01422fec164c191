"""trtc.runtime: load a .trtb bundle and run it. Imports only numpy, plus per stage, lazily,
ONNX Runtime (CPU path), TensorRT / TensorRT-RTX and cuda-python (GPU path), MXNet (residual)."""

from ._version import __version__
from .dlpack import DeviceArray
from .errors import (BundleError, CompileError, CudaError, IncompatibleError, InputError,
                     TrtcError, UsageError)
from .model import Model, TensorSpec, load

__all__ = [
    "__version__",
    "load",
    "Model",
    "TensorSpec",
    "DeviceArray",
    "TrtcError",
    "BundleError",
    "IncompatibleError",
    "InputError",
    "CudaError",
    "UsageError",
    "CompileError",
]
