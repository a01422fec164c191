"""trtc.runtime: load a .trtb bundle and run it. Imports only numpy, plus per stage, lazily,
ONNX Runtime (CPU path), TensorRT / TensorRT-RTX and cuda-python (GPU path), MXNet (residual),
cryptography (signed bundles: only when a key is used)."""

from ._version import __version__
from .dlpack import DeviceArray
from .errors import (BundleError, CompileError, CudaError, IncompatibleError, InputError,
                     TrtcError, UsageError)
from .model import Model, TensorSpec, load
from .signing import generate_keypair, sign_bundle, verify_bundle

__all__ = [
    "__version__",
    "load",
    "Model",
    "TensorSpec",
    "DeviceArray",
    "sign_bundle",
    "verify_bundle",
    "generate_keypair",
    "TrtcError",
    "BundleError",
    "IncompatibleError",
    "InputError",
    "CudaError",
    "UsageError",
    "CompileError",
]
