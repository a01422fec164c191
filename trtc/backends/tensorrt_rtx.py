"""TensorRT for RTX: builds on CPU-only machines (ahead of time), strongly typed networks."""

from __future__ import annotations

from typing import Any, List, Sequence

from ._trt import TrtBackend

__all__ = ["TensorRTRTXBackend", "DEFAULT_COMPUTE_CAPABILITIES"]

# What a TensorRT-RTX engine targets when no compute capability is set (its documentation:
# "8.0, 8.6, 8.9, 12.0, and later"); Turing (7.5) only when asked for.
DEFAULT_COMPUTE_CAPABILITIES = ["8.0", "8.6", "8.9", "12.0", "12.1"]


class TensorRTRTXBackend(TrtBackend):
    name = "tensorrt_rtx"
    module_name = "tensorrt_rtx"

    def _configure(self, config: Any, compute_capabilities: Sequence[str]) -> List[str]:
        if not compute_capabilities or list(compute_capabilities) == DEFAULT_COMPUTE_CAPABILITIES:
            return list(DEFAULT_COMPUTE_CAPABILITIES)  # (a rebuild from a bundle's manifest)
        config.num_compute_capabilities = len(compute_capabilities)
        for i, cc in enumerate(compute_capabilities):
            member = "SM" + cc.replace(".", "")
            config.set_compute_capability(getattr(self.trt.ComputeCapability, member), i)
        return list(compute_capabilities)
