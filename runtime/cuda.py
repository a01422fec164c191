"""The CUDA layer of the GPU path, on cuda-python's runtime bindings: devices, buffers, streams,
copies. Every call's status is checked and turned into :class:`CudaError`."""

from __future__ import annotations

import ctypes
from typing import Any, Optional, Tuple

import numpy as np

from .errors import CudaError, IncompatibleError

__all__ = [
    "cudart",
    "check",
    "device_count",
    "compute_capability",
    "gpu_unavailable_reason",
    "DeviceBuffer",
    "PinnedBuffer",
    "Stream",
]

_CUDART: Any = None


def cudart() -> Any:
    """The cuda-python runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6)."""
    global _CUDART
    if _CUDART is None:
        try:
            from cuda.bindings import runtime as mod  # cuda-python >= 12.6
        except ImportError:
            try:
                from cuda import cudart as mod  # type: ignore[no-redef]  # older cuda-python
            except ImportError:
                raise IncompatibleError("the GPU path needs cuda-python: pip install 'trtc[cuda]'") from None
        _CUDART = mod
    return _CUDART


def check(result: Any, what: str) -> Any:
    """Unpack a cuda-python result tuple ``(err, *values)``; raise CudaError unless success."""
    rt = cudart()
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if err != rt.cudaError_t.cudaSuccess:
        name = getattr(err, "name", str(err))
        _, text = rt.cudaGetErrorString(err)
        text = text.decode() if isinstance(text, bytes) else str(text)
        raise CudaError(f"CUDA call {what} failed: {name} ({text})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def device_count() -> int:
    """Number of CUDA devices; raises CudaError when the driver is missing or too old."""
    return int(check(cudart().cudaGetDeviceCount(), "cudaGetDeviceCount"))


def compute_capability(device: int = 0) -> Tuple[int, int]:
    """(major, minor) of ``device``."""
    rt = cudart()
    major = check(rt.cudaDeviceGetAttribute(rt.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor,
                                            device), "cudaDeviceGetAttribute")
    minor = check(rt.cudaDeviceGetAttribute(rt.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor,
                                            device), "cudaDeviceGetAttribute")
    return int(major), int(minor)


def gpu_unavailable_reason(device: int = 0) -> Optional[str]:
    """Why no GPU can be used (cuda-python missing, no driver, no device), or None."""
    try:
        cudart()
    except IncompatibleError as exc:
        return str(exc)
    try:
        count = device_count()
    except CudaError as exc:
        return f"no usable NVIDIA driver ({exc})"
    if count == 0:
        return "no CUDA GPU is present"
    if device >= count:
        return f"GPU {device} does not exist (this machine has {count})"
    return None


def set_device(device: int) -> None:
    check(cudart().cudaSetDevice(device), f"cudaSetDevice({device})")


class DeviceBuffer:
    """``nbytes`` of device memory, freed with the object (or by :meth:`free`)."""

    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)
        self.ptr = int(check(cudart().cudaMalloc(max(self.nbytes, 1)), f"cudaMalloc({self.nbytes})"))

    def free(self) -> None:
        if self.ptr:
            check(cudart().cudaFree(self.ptr), "cudaFree")
            self.ptr = 0

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:
            pass


class PinnedBuffer:
    """Page-locked host memory viewed as a numpy array of ``shape`` and ``dtype``."""

    def __init__(self, shape: Tuple[int, ...], dtype: Any):
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(d) for d in shape)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.ptr = int(check(cudart().cudaMallocHost(max(self.nbytes, 1)),
                             f"cudaMallocHost({self.nbytes})"))
        raw = (ctypes.c_byte * max(self.nbytes, 1)).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=np.uint8, count=self.nbytes).view(self.dtype).reshape(self.shape)

    def free(self) -> None:
        if self.ptr:
            self.array = None  # type: ignore[assignment]
            check(cudart().cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:
            pass


class Stream:
    """A CUDA stream with async copies and a synchronize."""

    def __init__(self) -> None:
        rt = cudart()
        self.handle = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking),
                            "cudaStreamCreateWithFlags")

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def copy_h2d(self, dst: int, src: int, nbytes: int) -> None:
        rt = cudart()
        check(rt.cudaMemcpyAsync(dst, src, nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                 self.handle), "cudaMemcpyAsync(H2D)")

    def copy_d2h(self, dst: int, src: int, nbytes: int) -> None:
        rt = cudart()
        check(rt.cudaMemcpyAsync(dst, src, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                 self.handle), "cudaMemcpyAsync(D2H)")

    def copy_d2d(self, dst: int, src: int, nbytes: int) -> None:
        rt = cudart()
        check(rt.cudaMemcpyAsync(dst, src, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
                                 self.handle), "cudaMemcpyAsync(D2D)")

    def synchronize(self) -> None:
        check(cudart().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def destroy(self) -> None:
        if self.handle is not None:
            check(cudart().cudaStreamDestroy(self.handle), "cudaStreamDestroy")
            self.handle = None

    def __del__(self) -> None:
        try:
            self.destroy()
        except Exception:
            pass
