"""GPU arrays on the GPU path: :class:`DeviceArray` (what ``model(..., output="device")``
returns) and the reading of other libraries' GPU arrays (torch, cupy, MXNet NDArray, JAX, numba,
...) through DLPack or ``__cuda_array_interface__``, without copying them.

Imports only ctypes and numpy; cuda-python is imported when memory is touched.
"""

from __future__ import annotations

import ctypes
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError

__all__ = ["DeviceArray", "is_device_array", "as_device_array", "KDL_CPU", "KDL_CUDA"]

# DLDeviceType values (dlpack.h)
KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13
_GPU_DEVICE_TYPES = (KDL_CUDA, KDL_CUDA_MANAGED)
# DLDataTypeCode -> numpy kind; bfloat16 (4) has no numpy dtype
_KIND_BY_CODE = {0: "i", 1: "u", 2: "f", 5: "c", 6: "b"}
_CODE_BY_KIND = {kind: code for code, kind in _KIND_BY_CODE.items()}


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int), ("device_id", ctypes.c_int)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)  # void (*)(DLManagedTensor*)


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _DELETER)]


# Private prototypes of the capsule API (setting argtypes on ctypes.pythonapi would leak to others).
_DLTENSOR, _USED_DLTENSOR = b"dltensor", b"used_dltensor"
_capsule_new = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)(
    ("PyCapsule_New", ctypes.pythonapi))
_capsule_is_valid = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_IsValid", ctypes.pythonapi))
_capsule_is_valid_raw = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_IsValid", ctypes.pythonapi))
_capsule_get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi))
_capsule_get_pointer_raw = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi))
_capsule_set_name = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_SetName", ctypes.pythonapi))

# Exported DLManagedTensor address -> what must stay alive until the consumer calls the deleter.
_EXPORTED: Dict[int, Tuple[Any, ...]] = {}


def _release_export(address: Optional[int]) -> None:
    if address:
        _EXPORTED.pop(address, None)


def _destroy_capsule(capsule: int) -> None:
    # A capsule nobody consumed still holds its name "dltensor": release the tensor here.
    if _capsule_is_valid_raw(capsule, _DLTENSOR):
        _release_export(_capsule_get_pointer_raw(capsule, _DLTENSOR))


_DELETER_FN = _DELETER(_release_export)
_CAPSULE_DESTRUCTOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_destroy_capsule)


def _c_strides(shape: Sequence[int]) -> Tuple[int, ...]:
    """Row-major strides in elements."""
    strides, step = [], 1
    for dim in reversed(shape):
        strides.append(step)
        step *= max(int(dim), 1)
    return tuple(reversed(strides))


def _is_c_contiguous(shape: Sequence[int], strides: Optional[Sequence[int]]) -> bool:
    """Whether element ``strides`` (None: row-major) lay ``shape`` out row-major; strides of
    dimensions of size 1 do not matter, as in numpy."""
    if strides is None or 0 in shape:
        return True
    expected = 1
    for dim, stride in zip(reversed(shape), reversed(strides)):
        if dim != 1 and stride != expected:
            return False
        expected *= dim
    return True


class DeviceArray:
    """A C-contiguous array in GPU memory, readable by torch, cupy, JAX, numba, ... in place.

    ``torch.from_dlpack(a)``, ``cupy.from_dlpack(a)`` (DLPack) and ``cupy.asarray(a)`` /
    ``torch.as_tensor(a, device="cuda")`` (``__cuda_array_interface__``) share its memory. The
    arrays ``model(..., output="device")`` returns own their memory and are complete (their stream
    synchronized) when returned; the memory is freed, stream-ordered on the legacy default stream,
    when the last holder (this object or a consumer's tensor) lets go.

    Attributes:
        ptr: device address of the first element.
        shape, dtype, device: shape, numpy dtype and CUDA device index.
        contiguous: False only for views of another library's strided arrays (used internally).
        sync_stream: a CUDA stream (handle as an int) the data may still be being written on
            (None: ready). The GPU path waits for it before reading.
    """

    def __init__(self, ptr: int, shape: Sequence[int], dtype: Any, device: int, owner: Any = None,
                 contiguous: bool = True, sync_stream: Optional[int] = None):
        self.ptr = int(ptr)
        self.shape: Tuple[int, ...] = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.device = int(device)
        self.owner = owner  # keeps the memory alive: a DeviceBuffer or the producer's tensor
        self.contiguous = contiguous
        self.sync_stream = sync_stream

    @classmethod
    def empty(cls, shape: Sequence[int], dtype: Any, device: int, stream: Any = None) -> "DeviceArray":
        """A new array on the current device, allocated on ``stream`` (a cuda.Stream) if given.

        Raises:
            CudaError: out of memory.
        """
        from . import cuda

        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        buffer = cuda.DeviceBuffer(nbytes, stream=stream)
        return cls(buffer.ptr, shape, dtype, device, owner=buffer)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype}, device='cuda:{self.device}')"

    def numpy(self) -> np.ndarray:
        """A host copy (synchronous ``cudaMemcpy``).

        Returns:
            A new numpy array of the same shape and dtype.
        """
        from . import cuda

        host = np.empty(self.shape, self.dtype)
        if host.nbytes:
            rt = cuda.cudart()
            cuda.check(rt.cudaMemcpy(host.ctypes.data, self.ptr, host.nbytes,
                                     rt.cudaMemcpyKind.cudaMemcpyDeviceToHost), "cudaMemcpy(D2H)")
        return host

    @property
    def __cuda_array_interface__(self) -> Dict[str, Any]:
        """Version 3 of the CUDA Array Interface (numba's specification)."""
        return {"shape": self.shape, "typestr": self.dtype.str, "descr": [("", self.dtype.str)],
                "data": (self.ptr if self.size else 0, False), "strides": None, "version": 3,
                "stream": self.sync_stream}

    def __dlpack_device__(self) -> Tuple[int, int]:
        """(kDLCUDA, device index)."""
        return KDL_CUDA, self.device

    def __dlpack__(self, *, stream: Optional[int] = None, max_version: Optional[Tuple[int, int]] = None,
                   dl_device: Optional[Tuple[int, int]] = None, copy: Optional[bool] = None) -> Any:
        """A DLPack capsule (``"dltensor"``, unversioned) sharing this array's memory.

        Args:
            stream: the consumer's stream; the data is complete, so no wait is queued on it
                unless ``sync_stream`` is set.
            max_version: the highest DLPack version the consumer reads; an unversioned capsule
                suits every consumer.
            dl_device: must be this array's device when given.
            copy: True is refused (BufferError): the point of this array is not to copy.

        Returns:
            A PyCapsule named ``"dltensor"``.
        """
        if dl_device is not None and tuple(int(v) for v in dl_device) != (KDL_CUDA, self.device):
            raise BufferError(f"DeviceArray lives on cuda:{self.device}, cannot export to {dl_device}")
        if copy:
            raise BufferError("DeviceArray exports its memory in place; copy=True is not supported")
        if self.sync_stream is not None and stream not in (None, -1):
            from . import cuda

            event = cuda.Event()  # order the consumer's stream after the producer's
            event.record(self.sync_stream)
            cuda.check(cuda.cudart().cudaStreamWaitEvent(stream, event.handle, 0), "cudaStreamWaitEvent")
        return _export(self)


def _export(array: DeviceArray) -> Any:
    code = _CODE_BY_KIND.get(array.dtype.kind)
    if code is None or not array.contiguous:
        raise BufferError(f"cannot export {array.dtype} / non-contiguous arrays through DLPack")
    ndim = array.ndim
    shape = (ctypes.c_int64 * max(ndim, 1))(*array.shape)
    strides = (ctypes.c_int64 * max(ndim, 1))(*_c_strides(array.shape))
    managed = _DLManagedTensor()
    tensor = managed.dl_tensor
    tensor.data = array.ptr
    tensor.device = _DLDevice(KDL_CUDA, array.device)
    tensor.ndim = ndim
    tensor.dtype = _DLDataType(code, array.dtype.itemsize * 8, 1)
    tensor.shape = ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64))
    tensor.strides = ctypes.cast(strides, ctypes.POINTER(ctypes.c_int64))
    tensor.byte_offset = 0
    managed.deleter = _DELETER_FN
    address = ctypes.addressof(managed)
    _EXPORTED[address] = (managed, shape, strides, array)
    return _capsule_new(address, _DLTENSOR, ctypes.cast(_CAPSULE_DESTRUCTOR, ctypes.c_void_p))


class _ImportedTensor:
    """Owns a consumed DLManagedTensor: calls the producer's deleter when dropped."""

    def __init__(self, address: int, producer: Any):
        self.address = address
        self.producer = producer

    def __del__(self) -> None:
        try:
            managed = _DLManagedTensor.from_address(self.address)
            if managed.deleter:
                managed.deleter(self.address)
        except Exception:
            pass


def _from_capsule(capsule: Any, producer: Any, name: str) -> DeviceArray:
    if not _capsule_is_valid(capsule, _DLTENSOR):
        raise InputError(f"input '{name}': its DLPack capsule is not an unversioned 'dltensor' "
                         "(consumed already?)")
    address = _capsule_get_pointer(capsule, _DLTENSOR)
    _capsule_set_name(capsule, _USED_DLTENSOR)  # we own it now; the capsule no longer frees it
    owner = _ImportedTensor(address, producer)
    tensor = _DLManagedTensor.from_address(address).dl_tensor
    shape = tuple(tensor.shape[i] for i in range(tensor.ndim))
    strides = tuple(tensor.strides[i] for i in range(tensor.ndim)) if tensor.strides else None
    kind = _KIND_BY_CODE.get(tensor.dtype.code)
    if kind is None or tensor.dtype.lanes != 1:
        raise InputError(f"input '{name}': DLPack dtype (code {tensor.dtype.code}, "
                         f"{tensor.dtype.bits} bits, {tensor.dtype.lanes} lanes) has no numpy dtype")
    dtype = np.dtype(f"{kind}{tensor.dtype.bits // 8}") if kind != "b" else np.dtype(bool)
    if tensor.device.device_type not in _GPU_DEVICE_TYPES:
        raise InputError(f"input '{name}': DLPack device type {tensor.device.device_type} is not "
                         "CUDA GPU memory")
    return DeviceArray((tensor.data or 0) + tensor.byte_offset, shape, dtype,
                       tensor.device.device_id, owner=owner,
                       contiguous=_is_c_contiguous(shape, strides))


def _dlpack_device_type(value: Any) -> Optional[int]:
    get = getattr(value, "__dlpack_device__", None)
    if get is None:
        return None
    try:
        return int(get()[0])
    except Exception:
        return None


def _is_mxnet_gpu(value: Any) -> bool:
    context = getattr(value, "context", None)
    return (callable(getattr(value, "to_dlpack_for_read", None))
            and getattr(context, "device_type", None) == "gpu")


def is_device_array(value: Any) -> bool:
    """Whether ``value`` is a GPU array this module reads (numpy arrays and CPU tensors are not).

    Args:
        value: anything passed as a model input.

    Returns:
        True for DeviceArray, GPU tensors with ``__dlpack__`` or ``__cuda_array_interface__``,
        and MXNet NDArrays on a GPU.
    """
    if isinstance(value, np.ndarray):
        return False
    if isinstance(value, DeviceArray):
        return True
    kind = _dlpack_device_type(value)
    if kind is not None:
        return kind in _GPU_DEVICE_TYPES
    return _has_cuda_array_interface(value) or _is_mxnet_gpu(value)


def _has_cuda_array_interface(value: Any) -> bool:
    try:  # a property that may raise more than AttributeError (torch: tensors that need grad)
        return hasattr(value, "__cuda_array_interface__")
    except Exception:
        return True  # it has one, and as_device_array will say why it cannot be read


def as_device_array(value: Any, name: str = "?") -> DeviceArray:
    """View a GPU array of another library as a DeviceArray, without copying.

    DLPack is preferred (the producer then orders its pending work before the legacy default
    stream, which the GPU path waits for); ``__cuda_array_interface__`` next (its ``stream``, or
    the legacy default stream when it names none); MXNet 1.x NDArrays through
    ``to_dlpack_for_read``. The view keeps the producer's memory alive.

    Args:
        value: a GPU array (see :func:`is_device_array`).
        name: the input's name, for messages.

    Returns:
        The view; check ``shape``, ``dtype``, ``device`` and ``contiguous`` before use.

    Raises:
        InputError: the array cannot be read in place (not on a GPU, exotic dtype, a producer
            that refuses to export, e.g. a torch tensor that requires grad).
    """
    from .cuda import LEGACY_STREAM

    if isinstance(value, DeviceArray):
        return value
    try:
        if hasattr(value, "__dlpack__") and _dlpack_device_type(value) is not None:
            array = _from_capsule(value.__dlpack__(stream=LEGACY_STREAM), value, name)
            array.sync_stream = LEGACY_STREAM
            return array
        if _has_cuda_array_interface(value):
            return _from_cuda_array_interface(value, name)
        if _is_mxnet_gpu(value):
            return _from_capsule(value.to_dlpack_for_read(), value, name)
    except InputError:
        raise
    except Exception as exc:  # the producer's own error types (RuntimeError, BufferError, ...)
        raise InputError(f"input '{name}': cannot read {type(value).__name__} in place on the "
                         f"GPU ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    raise InputError(f"input '{name}': {type(value).__module__}.{type(value).__name__} is not a "
                     "GPU array (no __dlpack__ / __cuda_array_interface__)")


def _from_cuda_array_interface(value: Any, name: str) -> DeviceArray:
    from . import cuda

    iface = value.__cuda_array_interface__
    if iface.get("mask") is not None:
        raise InputError(f"input '{name}': masked CUDA arrays are not supported")
    shape = tuple(int(d) for d in iface["shape"])
    dtype = np.dtype(iface["typestr"])
    ptr = int(iface["data"][0] or 0)
    device = cuda.pointer_device(ptr) if ptr else cuda.current_device()
    if device is None:
        raise InputError(f"input '{name}': its __cuda_array_interface__ points to host memory")
    strides = iface.get("strides")
    contiguous = True
    if strides is not None:
        byte_strides = tuple(int(s) for s in strides)
        contiguous = (not any(s % dtype.itemsize for s in byte_strides)
                      and _is_c_contiguous(shape, [s // dtype.itemsize for s in byte_strides]))
    # Version 3 names the stream the data is written on; older versions name none: be safe.
    sync = iface.get("stream", cuda.LEGACY_STREAM) if int(iface.get("version", 0)) >= 3 \
        else cuda.LEGACY_STREAM
    return DeviceArray(ptr, shape, dtype, device, owner=value, contiguous=contiguous,
                       sync_stream=sync)
