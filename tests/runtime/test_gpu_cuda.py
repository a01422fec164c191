"""The CUDA layer (runtime/cuda.py) on a real GPU, without TensorRT: buffers, copies, streams,
events, CUDA graphs (a captured cudaMemcpy stands in for a kernel), threads and error paths.

Every test runs on every visible GPU (``cuda:N``, issue 23): it makes that GPU current and
checks that what it makes lives there. With one GPU, ``cuda:1`` skips with the reason (issue 24
runs it on two). Skipped, with the reason, where cuda-python or a GPU is missing.
"""

from __future__ import annotations

import numpy as np
import pytest

from trtc.runtime import CudaError, cuda

from _gpus import gpu_params
from _threads import run_in_threads

GPU_REASON = cuda.gpu_unavailable_reason(0)
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(GPU_REASON is not None, reason=str(GPU_REASON))]
@pytest.fixture(autouse=True, params=gpu_params())
def device(request: pytest.FixtureRequest) -> int:
    """The GPU this test runs on: current for the test's thread, device 0 again after it."""
    cuda.set_device(request.param)
    yield request.param
    cuda.set_device(0)


def _roundtrip(stream: cuda.Stream, values: np.ndarray) -> np.ndarray:
    src = cuda.PinnedBuffer(values.shape, values.dtype)
    dst = cuda.PinnedBuffer(values.shape, values.dtype)
    a, b = cuda.DeviceBuffer(src.nbytes), cuda.DeviceBuffer(src.nbytes)
    src.array[...] = values
    stream.copy_h2d(a.ptr, src.ptr, src.nbytes)
    stream.copy_d2d(b.ptr, a.ptr, src.nbytes)
    stream.copy_d2h(dst.ptr, b.ptr, src.nbytes)
    stream.synchronize()
    return dst.array.copy()


def test_device_facts(device):
    assert cuda.device_count() > device
    major, minor = cuda.compute_capability(device)
    assert major >= 5 and minor >= 0
    assert cuda.current_device() == device
    free, total = cuda.mem_get_info()
    assert 0 < free <= total
    assert cuda.device_name(device)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int64", "int8", "bool"])
def test_h2d_d2d_d2h_roundtrip(dtype):
    rng = np.random.default_rng(0)
    values = (rng.standard_normal((3, 5, 7)) * 50).astype(dtype)
    assert np.array_equal(_roundtrip(cuda.Stream(), values), values)


def test_pinned_buffer_is_a_numpy_view():
    pinned = cuda.PinnedBuffer((2, 3), np.float32)
    pinned.array[...] = 7
    assert pinned.array.shape == (2, 3) and pinned.nbytes == 24
    pinned.free()
    pinned.free()  # idempotent
    assert pinned.ptr == 0


def test_device_buffer_free_and_pointer_device(device):
    buffer = cuda.DeviceBuffer(1024)
    assert cuda.pointer_device(buffer.ptr) == device
    host = cuda.PinnedBuffer((4,), np.float32)
    assert cuda.pointer_device(host.ptr) is None
    buffer.free()
    buffer.free()
    assert buffer.ptr == 0


def test_stream_ordered_buffer(device):
    stream = cuda.Stream()
    buffer = cuda.DeviceBuffer(4096, stream=stream)
    assert buffer.ptr and cuda.pointer_device(buffer.ptr) == device
    stream.synchronize()
    buffer.free()


def test_out_of_memory_request_raises_cuda_error_and_leaves_cuda_usable():
    with pytest.raises(CudaError) as info:
        cuda.DeviceBuffer(1 << 50)  # 1 PiB
    message = str(info.value)
    assert "cudaErrorMemoryAllocation" in message and "cannot allocate" in message
    assert "MiB free of" in message
    assert np.array_equal(_roundtrip(cuda.Stream(), np.arange(10.0)), np.arange(10.0))


def test_bad_device_index_is_a_clear_error(device):
    count = cuda.device_count()
    with pytest.raises(CudaError, match=rf"GPU {count} does not exist: this machine has {count}"):
        cuda.set_device(count)
    with pytest.raises(CudaError, match="does not exist"):
        cuda.set_device(-1)
    assert cuda.gpu_unavailable_reason(count) == f"GPU {count} does not exist (this machine has {count})"
    assert cuda.current_device() == device  # a refused switch changes nothing


def test_check_turns_a_status_into_cuda_error():
    rt = cuda.cudart()
    with pytest.raises(CudaError, match=r"CUDA call cudaFree failed: cudaError\w+ \("):
        cuda.check(rt.cudaFree(12345), "cudaFree")
    assert cuda.check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount") == cuda.device_count()


def test_wait_for_orders_one_stream_after_another():
    n = 1 << 22
    producer, consumer = cuda.Stream(), cuda.Stream()
    src = cuda.PinnedBuffer((n,), np.float32)
    dst = cuda.PinnedBuffer((n,), np.float32)
    src.array[...] = 3.0
    a, b = cuda.DeviceBuffer(src.nbytes), cuda.DeviceBuffer(src.nbytes)
    for _ in range(5):
        producer.copy_h2d(a.ptr, src.ptr, src.nbytes)
    consumer.wait_for(producer.ptr)
    consumer.copy_d2d(b.ptr, a.ptr, src.nbytes)
    consumer.copy_d2h(dst.ptr, b.ptr, src.nbytes)
    consumer.synchronize()
    assert np.all(dst.array == 3.0)
    consumer.wait_for(cuda.LEGACY_STREAM)  # the legacy default stream is a valid producer
    consumer.wait_for(consumer.ptr)  # waiting for itself is a no-op
    consumer.synchronize()


def test_graph_replays_captured_copies(device):
    """A captured D2D copy stands in for a kernel: replaying it moves fresh data each time."""
    stream = cuda.Stream()
    host = cuda.PinnedBuffer((256,), np.float32)
    out = cuda.PinnedBuffer((256,), np.float32)
    a, b = cuda.DeviceBuffer(host.nbytes), cuda.DeviceBuffer(host.nbytes)
    assert cuda.pointer_device(a.ptr) == cuda.pointer_device(b.ptr) == device
    graph = cuda.Graph(stream, lambda: stream.copy_d2d(b.ptr, a.ptr, host.nbytes))
    for value in (1.0, 2.0, 5.0):
        host.array[...] = value
        stream.copy_h2d(a.ptr, host.ptr, host.nbytes)
        graph.launch(stream)
        stream.copy_d2h(out.ptr, b.ptr, host.nbytes)
        stream.synchronize()
        assert np.all(out.array == value)
    graph.destroy()
    graph.destroy()


def test_graph_capture_failure_leaves_the_stream_usable():
    stream = cuda.Stream()

    def broken() -> None:
        raise CudaError("engine refused")

    with pytest.raises(CudaError, match="engine refused"):
        cuda.Graph(stream, broken)
    with pytest.raises(CudaError, match="(?i)captur"):
        cuda.Graph(stream, stream.synchronize)  # synchronizing inside a capture is illegal
    assert np.array_equal(_roundtrip(stream, np.arange(6.0)), np.arange(6.0))


def test_threads_each_with_their_own_stream_and_buffers(device):
    def work(seed: int) -> None:
        cuda.set_device(device)  # the current device is per thread
        stream = cuda.Stream()
        assert cuda.pointer_device(cuda.DeviceBuffer(64).ptr) == device
        for i in range(20):
            values = np.full((1024,), seed * 100 + i, np.int32)
            assert np.array_equal(_roundtrip(stream, values), values)

    run_in_threads(work)


def test_event_synchronize():
    stream = cuda.Stream()
    event = cuda.Event()
    event.record(stream.ptr)
    event.synchronize()
    event.destroy()
