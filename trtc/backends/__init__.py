"""Build-side adapters, one per TensorRT flavor."""

from __future__ import annotations

from ..runtime.errors import UsageError
from ._trt import BuildError, BuiltEngine, ParseResult, ParserIssue, TrtBackend

__all__ = ["get_backend", "BuildError", "BuiltEngine", "ParseResult", "ParserIssue", "TrtBackend"]


def get_backend(name: str = "auto") -> TrtBackend:
    """'tensorrt' if importable (auto), else 'tensorrt_rtx'; a clear error when neither is."""
    from .tensorrt import TensorRTBackend
    from .tensorrt_rtx import TensorRTRTXBackend

    order = {"auto": (TensorRTBackend, TensorRTRTXBackend), "tensorrt": (TensorRTBackend,),
             "tensorrt_rtx": (TensorRTRTXBackend,)}.get(name)
    if order is None:
        raise UsageError(f"unknown backend {name!r}: use auto, tensorrt or tensorrt_rtx")
    for cls in order:
        try:
            return cls()
        except Exception:  # not installed, or a stub package that fails to import
            continue
    raise UsageError(f"no TensorRT builder for backend '{name}' is installed: pip install "
                     "'trtc[rtx]' (TensorRT-RTX, builds on CPU) or NVIDIA's tensorrt")
