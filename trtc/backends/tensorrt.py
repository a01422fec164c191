"""NVIDIA TensorRT (10.x+): needs a GPU to build; the engine targets the build GPU.

Networks are created strongly typed, so an fp16 ONNX network gives an fp16 engine exactly as with
TensorRT-RTX (no FP16 builder flag, no silent precision changes).
"""

from __future__ import annotations

from typing import Any, List, Sequence

from ._trt import TrtBackend

__all__ = ["TensorRTBackend"]


class TensorRTBackend(TrtBackend):
    name = "tensorrt"
    module_name = "tensorrt"

    def _network_flags(self) -> int:
        flag = getattr(self.trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        return 1 << int(flag) if flag is not None else 0

    def _configure(self, config: Any, compute_capabilities: Sequence[str]) -> List[str]:
        if compute_capabilities:
            # Full TensorRT cannot cross-compile; AMPERE_PLUS makes the engine portable to 8.0+.
            config.hardware_compatibility_level = self.trt.HardwareCompatibilityLevel.AMPERE_PLUS
            return list(compute_capabilities)
        try:
            from trtc.runtime import cuda

            major, minor = cuda.compute_capability(0)
            return [f"{major}.{minor}"]
        except Exception:
            return []
