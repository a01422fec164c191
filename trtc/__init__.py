"""trtc: compile Apache MXNet models into TensorRT bundles (.trtb) and run them.

This file stays light: ``import trtc.runtime`` runs it first, so it imports no MXNet, onnx or
typer. ``trtc.compile`` (trtc/api.py: a Gluon HybridBlock, a Symbol + params, a params path or a
CompileSettings) is loaded on first use.
"""

from typing import Any

from .runtime._version import __version__
from .runtime.errors import TrtcError
from .settings import CompileSettings

__all__ = ["__version__", "compile", "CompileSettings", "TrtcError"]


def __getattr__(name: str) -> Any:
    if name == "compile":
        from .api import compile

        return compile
    raise AttributeError(f"module 'trtc' has no attribute {name!r}")
