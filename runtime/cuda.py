"""The CUDA layer of the GPU path, on cuda-python's runtime bindings: devices, device and pinned
buffers, streams, events, async copies and CUDA graphs. Every call's status is checked and turned
into :class:`CudaError`.

Nothing here knows TensorRT: the engine stages (``stages/engine_cuda.py``) build on these pieces,
and the tests exercise them on a GPU without TensorRT. Buffers follow the CUDA runtime's rule of a
*current device* per thread: they are made on the device :func:`set_device` last chose.

Dynamic shapes: a buffer is sized once for a tensor's largest shape and serves every smaller one
(:meth:`PinnedBuffer.view`); a :class:`GraphCache` keeps at most a fixed number of CUDA graphs,
one per key (an input shape), evicting the least recently used.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from typing import Any, Callable, Hashable, List, Optional, Sequence, Tuple

import numpy as np

from .errors import CudaError, IncompatibleError

__all__ = [
    "cudart",
    "check",
    "device_count",
    "compute_capability",
    "gpu_unavailable_reason",
    "set_device",
    "current_device",
    "mem_get_info",
    "pointer_device",
    "DeviceBuffer",
    "PinnedBuffer",
    "Stream",
    "Event",
    "Graph",
    "GraphCache",
    "LEGACY_STREAM",
]

# The legacy default stream (``cudaStreamLegacy``): every blocking stream is ordered with it.
LEGACY_STREAM = 1

_CUDART: Any = None
_DEVICE_COUNT: Optional[int] = None


def cudart() -> Any:
    """The cuda-python runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6).

    Raises:
        IncompatibleError: cuda-python is not installed.
    """
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
    """Unpack a cuda-python result tuple ``(err, *values)``; raise CudaError unless success.

    Args:
        result: what a ``cudart`` function returned.
        what: the call, for the message (e.g. ``"cudaMalloc(1024)"``).

    Returns:
        None, the one value, or a tuple of the values after the status.
    """
    rt = cudart()
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if err != rt.cudaError_t.cudaSuccess:
        rt.cudaGetLastError()  # reset a non-sticky error so that later calls do not report it
        name = getattr(err, "name", str(err))
        _, text = rt.cudaGetErrorString(err)
        text = text.decode() if isinstance(text, bytes) else str(text)
        raise CudaError(f"CUDA call {what} failed: {name} ({text})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def device_count() -> int:
    """Number of CUDA devices; raises CudaError when the driver is missing or too old."""
    global _DEVICE_COUNT
    if _DEVICE_COUNT is None:
        _DEVICE_COUNT = int(check(cudart().cudaGetDeviceCount(), "cudaGetDeviceCount"))
    return _DEVICE_COUNT


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
    """Make ``device`` the calling thread's current CUDA device.

    Raises:
        CudaError: no such device (the message names how many there are), or the driver failed.
    """
    count = device_count()
    if not 0 <= device < count:
        raise CudaError(f"GPU {device} does not exist: this machine has {count} CUDA GPU(s), "
                        f"valid indices are 0..{count - 1}")
    check(cudart().cudaSetDevice(device), f"cudaSetDevice({device})")


def current_device() -> int:
    """The calling thread's current CUDA device."""
    return int(check(cudart().cudaGetDevice(), "cudaGetDevice"))


def mem_get_info() -> Tuple[int, int]:
    """(free, total) bytes of the current device."""
    free, total = check(cudart().cudaMemGetInfo(), "cudaMemGetInfo")
    return int(free), int(total)


def device_name(device: int = 0) -> str:
    """The GPU's name, e.g. 'NVIDIA H200'."""
    props = check(cudart().cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name
    return (name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)).rstrip("\x00")


def driver_version() -> int:
    """The CUDA driver's version (e.g. 13000 for 13.0)."""
    return int(check(cudart().cudaDriverGetVersion(), "cudaDriverGetVersion"))


def copy_d2d_sync(dst: int, src: int, nbytes: int) -> None:
    """Copy ``nbytes`` between two device addresses and wait until it is done (a device-to-device
    ``cudaMemcpy`` alone does not wait on the host)."""
    rt = cudart()
    check(rt.cudaMemcpy(dst, src, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice),
          "cudaMemcpy(D2D)")
    check(rt.cudaDeviceSynchronize(), "cudaDeviceSynchronize")


def pointer_device(ptr: int) -> Optional[int]:
    """The device that owns device or managed memory at ``ptr``; None for host memory."""
    rt = cudart()
    attrs = check(rt.cudaPointerGetAttributes(ptr), "cudaPointerGetAttributes")
    if attrs.type in (rt.cudaMemoryType.cudaMemoryTypeDevice, rt.cudaMemoryType.cudaMemoryTypeManaged):
        return int(attrs.device)
    return None


def _out_of_memory(what: str, nbytes: int, exc: CudaError) -> CudaError:
    try:
        free, total = mem_get_info()
        have = f"; the GPU has {free / 2**20:.0f} MiB free of {total / 2**20:.0f} MiB"
    except CudaError:
        have = ""
    return CudaError(f"{exc}: cannot allocate {nbytes} bytes of {what}{have}")


class DeviceBuffer:
    """``nbytes`` of memory on the current device, freed with the object (or by :meth:`free`).

    Args:
        nbytes: the size; 0 still allocates one byte so that ``ptr`` is a valid address.
        stream: allocate stream-ordered (``cudaMallocAsync``) on this stream; the memory is then
            freed on the legacy default stream, after any work that blocking streams (torch's and
            cupy's defaults) queued on it. None: a plain ``cudaMalloc``.

    Raises:
        CudaError: out of memory (with the free/total memory of the GPU) or another CUDA error.
    """

    def __init__(self, nbytes: int, stream: "Optional[Stream]" = None):
        rt = cudart()
        self.nbytes = int(nbytes)
        self._stream_ordered = stream is not None
        size = max(self.nbytes, 1)
        try:
            if stream is None:
                self.ptr = int(check(rt.cudaMalloc(size), f"cudaMalloc({size})"))
            else:
                self.ptr = int(check(rt.cudaMallocAsync(size, stream.handle),
                                     f"cudaMallocAsync({size})"))
        except CudaError as exc:
            raise _out_of_memory("device memory", size, exc) from None

    def free(self) -> None:
        """Give the memory back (idempotent)."""
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            rt = cudart()
            if self._stream_ordered:
                check(rt.cudaFreeAsync(ptr, 0), "cudaFreeAsync")
            else:
                check(rt.cudaFree(ptr), "cudaFree")

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:
            pass


class PinnedBuffer:
    """Page-locked host memory viewed as a numpy array ``array`` of ``shape`` and ``dtype``.

    Raises:
        CudaError: the host memory could not be page-locked.
    """

    def __init__(self, shape: Tuple[int, ...], dtype: Any):
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(d) for d in shape)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        size = max(self.nbytes, 1)
        try:
            self.ptr = int(check(cudart().cudaMallocHost(size), f"cudaMallocHost({size})"))
        except CudaError as exc:
            raise _out_of_memory("pinned host memory", size, exc) from None
        raw = (ctypes.c_byte * size).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=np.uint8, count=self.nbytes).view(self.dtype).reshape(self.shape)

    def view(self, shape: Sequence[int]) -> np.ndarray:
        """The first elements of the buffer as a C-contiguous array of ``shape`` (at most as many
        elements as the buffer holds): how one buffer sized for a tensor's largest shape serves
        the smaller shapes of a dynamic model. ``array`` when ``shape`` is the buffer's own.

        Raises:
            ValueError: ``shape`` needs more bytes than the buffer has.
        """
        shape = tuple(int(d) for d in shape)
        if shape == self.shape:
            return self.array
        count = int(np.prod(shape, dtype=np.int64))
        if count * self.dtype.itemsize > self.nbytes or min(shape, default=0) < 0:
            raise ValueError(f"shape {shape} needs {count * self.dtype.itemsize} bytes, this pinned "
                             f"buffer holds {self.nbytes} (shape {self.shape})")
        return self.array.reshape(-1)[:count].reshape(shape)

    def free(self) -> None:
        """Give the memory back (idempotent); ``array`` must not be used afterwards."""
        if self.ptr:
            self.array = None  # type: ignore[assignment]
            ptr, self.ptr = self.ptr, 0
            check(cudart().cudaFreeHost(ptr), "cudaFreeHost")

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:
            pass


class Event:
    """A CUDA event without timing, to order one stream after another."""

    def __init__(self) -> None:
        rt = cudart()
        self.handle = check(rt.cudaEventCreateWithFlags(rt.cudaEventDisableTiming),
                            "cudaEventCreateWithFlags")

    def record(self, stream: int) -> None:
        """Record the event on the stream whose handle (an int) is ``stream``."""
        check(cudart().cudaEventRecord(self.handle, stream), "cudaEventRecord")

    def synchronize(self) -> None:
        """Wait on the host until the recorded work is done."""
        check(cudart().cudaEventSynchronize(self.handle), "cudaEventSynchronize")

    def destroy(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            check(cudart().cudaEventDestroy(handle), "cudaEventDestroy")

    def __del__(self) -> None:
        try:
            self.destroy()
        except Exception:
            pass


class Stream:
    """A non-blocking CUDA stream with async copies, waits and a synchronize.

    ``copy_*`` take raw addresses (ints); host addresses should be pinned (:class:`PinnedBuffer`)
    for the copy to be asynchronous.
    """

    def __init__(self) -> None:
        rt = cudart()
        self.handle = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking),
                            "cudaStreamCreateWithFlags")
        self.ptr = int(self.handle)
        self._event: Optional[Event] = None

    def _copy(self, dst: int, src: int, nbytes: int, kind: Any, what: str) -> None:
        if nbytes:
            check(cudart().cudaMemcpyAsync(dst, src, nbytes, kind, self.handle), what)

    def copy_h2d(self, dst: int, src: int, nbytes: int) -> None:
        """Enqueue a host-to-device copy of ``nbytes``."""
        self._copy(dst, src, nbytes, cudart().cudaMemcpyKind.cudaMemcpyHostToDevice,
                   "cudaMemcpyAsync(H2D)")

    def copy_d2h(self, dst: int, src: int, nbytes: int) -> None:
        """Enqueue a device-to-host copy of ``nbytes``."""
        self._copy(dst, src, nbytes, cudart().cudaMemcpyKind.cudaMemcpyDeviceToHost,
                   "cudaMemcpyAsync(D2H)")

    def copy_d2d(self, dst: int, src: int, nbytes: int) -> None:
        """Enqueue a device-to-device copy of ``nbytes``."""
        self._copy(dst, src, nbytes, cudart().cudaMemcpyKind.cudaMemcpyDeviceToDevice,
                   "cudaMemcpyAsync(D2D)")

    def wait_for(self, other: int) -> None:
        """Order this stream's later work after the work queued so far on stream ``other``
        (a handle as an int; :data:`LEGACY_STREAM` for the legacy default stream)."""
        if other == self.ptr:
            return
        if self._event is None:
            self._event = Event()
        self._event.record(other)
        check(cudart().cudaStreamWaitEvent(self.handle, self._event.handle, 0), "cudaStreamWaitEvent")

    def synchronize(self) -> None:
        """Wait on the host until all work queued on the stream is done."""
        check(cudart().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def destroy(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            check(cudart().cudaStreamDestroy(handle), "cudaStreamDestroy")

    def __del__(self) -> None:
        try:
            self.destroy()
        except Exception:
            pass


class Graph:
    """Work queued on a stream, captured once as a CUDA graph and replayed by :meth:`launch`.

    The capture is thread-local (``cudaStreamCaptureModeThreadLocal``), so other threads may
    allocate or copy meanwhile. Whatever ``enqueue`` queues must be capturable: kernels and async
    copies between fixed addresses, no synchronization and no allocation.

    Args:
        stream: the stream to capture on (a non-blocking one: the legacy stream cannot capture).
        enqueue: queues the work on ``stream``; nothing runs during the capture.

    Raises:
        CudaError: the capture or the instantiation failed (the stream is left usable).
    """

    def __init__(self, stream: Stream, enqueue: Callable[[], None]):
        rt = cudart()
        self._exec: Any = None
        check(rt.cudaStreamBeginCapture(
            stream.handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
            "cudaStreamBeginCapture")
        try:
            enqueue()
        except BaseException:
            err, graph = rt.cudaStreamEndCapture(stream.handle)  # always leave capture mode
            if err == rt.cudaError_t.cudaSuccess and graph is not None:
                rt.cudaGraphDestroy(graph)
            rt.cudaGetLastError()
            raise
        graph = check(rt.cudaStreamEndCapture(stream.handle), "cudaStreamEndCapture")
        try:
            self._exec = check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        finally:
            check(rt.cudaGraphDestroy(graph), "cudaGraphDestroy")

    def launch(self, stream: Stream) -> None:
        """Enqueue one replay of the captured work on ``stream``."""
        check(cudart().cudaGraphLaunch(self._exec, stream.handle), "cudaGraphLaunch")

    def destroy(self) -> None:
        if self._exec is not None:
            graph_exec, self._exec = self._exec, None
            check(cudart().cudaGraphExecDestroy(graph_exec), "cudaGraphExecDestroy")

    def __del__(self) -> None:
        try:
            self.destroy()
        except Exception:
            pass


class GraphCache:
    """At most ``capacity`` CUDA graphs, one per key, the least recently used evicted first.

    The GPU path keys graphs by the input shapes they were captured with, so a graph is only ever
    replayed for exactly the key it was added under. Each entry also holds a value: what the
    graph was captured from (TensorRT execution contexts), handed back on eviction so the caller
    can reuse it. An evicted graph is destroyed; CUDA frees one still running once it completes.
    Not thread-safe: one owner at a time (the GPU path: one per pipeline context).

    Args:
        capacity: the most graphs kept (at least 1).

    Attributes:
        hits, misses, evictions: counts of :meth:`lookup` results and of evictions.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("a graph cache holds at least 1 graph")
        self.capacity = int(capacity)
        self._entries: "OrderedDict[Hashable, Tuple[Graph, Any]]" = OrderedDict()
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        """Whether ``key`` has a graph (without counting a hit or refreshing its age)."""
        return key in self._entries

    def keys(self) -> List[Hashable]:
        """The keys, least recently used first."""
        return list(self._entries)

    def lookup(self, key: Hashable) -> Optional[Tuple[Graph, Any]]:
        """``(graph, value)`` added for ``key`` (now the most recently used), or None."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def make_room(self) -> Optional[Any]:
        """When full, evict the least recently used entry (its graph destroyed) and return its
        value; None when there was room."""
        if len(self._entries) < self.capacity:
            return None
        _, (graph, value) = self._entries.popitem(last=False)
        self.evictions += 1
        graph.destroy()
        return value

    def add(self, key: Hashable, graph: Graph, value: Any = None) -> None:
        """Keep ``graph`` (and ``value``) for ``key``; a graph already there for ``key`` is
        destroyed, else the least recently used is evicted when full (call :meth:`make_room`
        first to reuse its value)."""
        old = self._entries.pop(key, None)
        if old is not None:
            old[0].destroy()
        else:
            self.make_room()
        self._entries[key] = (graph, value)

    def clear(self) -> List[Any]:
        """Destroy every graph; returns their values."""
        values = []
        while self._entries:
            _, (graph, value) = self._entries.popitem(last=False)
            graph.destroy()
            values.append(value)
        return values
