"""Dynamic shapes on the GPU path (issue 12): buffers allocated once for a tensor's largest shape
serve every shape in range, CUDA graphs are cached per input shape with a bound (LRU) and never
replayed for another shape, and GPU inputs are checked against the range.

The CUDA-layer tests use real device and pinned buffers, real streams and real CUDA graphs (a
captured device-to-device copy whose size depends on the shape stands in for an engine's kernels),
and need only a GPU and cuda-python. The engine tests compile a dynamic bundle (batch 1..12) and
also need a TensorRT flavor that runs on this GPU, MXNet and ONNX Runtime; each test skips with the
exact reason (on an H100: TensorRT-RTX does not run on compute capability 9.0). The few tests at
the end check the bound and its documentation and run anywhere.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

from trtc.runtime import BundleError, InputError, TensorSpec, cuda, load
from trtc.runtime.dlpack import DeviceArray

from models import tiny
from test_gpu_engine import ENGINE_REASON, _close

GPU_REASON = cuda.gpu_unavailable_reason(0)
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=str(GPU_REASON))
needs_engines = pytest.mark.skipif(ENGINE_REASON is not None, reason=str(ENGINE_REASON))

MAX_BATCH = 12
ROW = (3, 4)  # one batch item of the stand-in tensors below
FLOAT = np.dtype("float32")


def _rows(batch: int) -> Tuple[int, ...]:
    return (batch, *ROW)


def _download(stream: cuda.Stream, ptr: int, shape: Tuple[int, ...], dtype: Any = FLOAT) -> np.ndarray:
    host = cuda.PinnedBuffer(shape, dtype)
    stream.copy_d2h(host.ptr, ptr, host.nbytes)
    stream.synchronize()
    return host.array.copy()


# ---------------------------------------------------------------------------------------------
# Buffers sized once for the largest shape
# ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_gpu
def test_pinned_view_serves_every_smaller_shape():
    pinned = cuda.PinnedBuffer(_rows(MAX_BATCH), FLOAT)
    assert pinned.view(_rows(MAX_BATCH)) is pinned.array
    for batch in (1, 5, MAX_BATCH - 1):
        view = pinned.view(_rows(batch))
        assert view.shape == _rows(batch) and view.flags.c_contiguous
        assert view.ctypes.data == pinned.ptr and np.shares_memory(view, pinned.array)
    assert pinned.view((2, 6)).shape == (2, 6)  # any shape of at most as many elements
    with pytest.raises(ValueError, match=r"shape \(13, 3, 4\) needs 624 bytes, this pinned buffer "
                                         r"holds 576"):
        pinned.view(_rows(MAX_BATCH + 1))


@pytest.mark.gpu
@needs_gpu
def test_tensor_buffers_are_sized_for_the_largest_shape_and_viewed_at_the_call_shape():
    from trtc.runtime.stages.engine_cuda import TensorBuffers

    cuda.set_device(0)
    buffers = TensorBuffers({"x": (_rows(MAX_BATCH), FLOAT),
                             "y": ((MAX_BATCH, 2), np.dtype("float16"))}, 0)
    assert "x" in buffers and "z" not in buffers
    assert buffers.capacity("x") == MAX_BATCH * 12 * 4 and buffers.capacity("y") == MAX_BATCH * 2 * 2
    assert cuda.pointer_device(buffers.ptr("x")) == 0
    full = buffers.view("x", _rows(MAX_BATCH))
    assert full.shape == _rows(MAX_BATCH) and full.ptr == buffers.ptr("x")
    five = buffers.view("x", _rows(5))
    assert (five.ptr, five.shape, five.dtype, five.nbytes) == (buffers.ptr("x"), _rows(5), FLOAT, 240)
    assert buffers.view("x", _rows(5)) is five  # the same shape again: the same view
    assert five.owner is full.owner  # views keep the one allocation alive
    assert buffers.view("y", (3, 2)).dtype == np.float16
    with pytest.raises(BundleError, match=r"tensor 'x' has shape \(13, 3, 4\) in this call, larger "
                                          r"than the largest shape \(12, 3, 4\) in the manifest"):
        buffers.view("x", _rows(MAX_BATCH + 1))


@pytest.mark.gpu
@needs_gpu
def test_per_shape_copies_through_max_sized_buffers_move_only_that_shape():
    """What the pipeline does per call: upload a numpy input of this call's shape through the
    max-sized pinned buffer into the max-sized device buffer, and read back only that shape."""
    from trtc.runtime.stages.engine_cuda import TensorBuffers

    cuda.set_device(0)
    stream = cuda.Stream()
    buffers = TensorBuffers({"x": (_rows(MAX_BATCH), FLOAT)}, 0)
    pinned = cuda.PinnedBuffer(_rows(MAX_BATCH), FLOAT)
    sentinel = np.full(_rows(MAX_BATCH), -7.0, np.float32)
    pinned.array[...] = sentinel
    stream.copy_h2d(buffers.ptr("x"), pinned.ptr, pinned.nbytes)
    expected = sentinel.copy()
    rng = np.random.default_rng(0)
    for batch in (3, MAX_BATCH, 1, 8):
        value = rng.standard_normal(_rows(batch)).astype(np.float32)
        target = buffers.view("x", value.shape)
        staging = pinned.view(value.shape)
        np.copyto(staging, value)
        stream.copy_h2d(target.ptr, pinned.ptr, target.nbytes)
        expected[:batch] = value
        assert np.array_equal(_download(stream, target.ptr, target.shape), value)
        # only this call's rows were written: the rest of the buffer is as earlier calls left it
        assert np.array_equal(_download(stream, buffers.ptr("x"), _rows(MAX_BATCH)), expected)


# ---------------------------------------------------------------------------------------------
# CUDA graphs cached per shape
# ---------------------------------------------------------------------------------------------
class _CopyGraphs:
    """Stand-in engine launches on real memory: for batch ``b`` a captured device-to-device copy
    of ``b`` rows from ``src`` to ``dst`` (what an engine's kernels captured at one shape do:
    touch exactly that shape's data)."""

    def __init__(self) -> None:
        cuda.set_device(0)
        self.stream = cuda.Stream()
        self.row_bytes = int(np.prod(ROW)) * FLOAT.itemsize
        self.src = cuda.DeviceBuffer(MAX_BATCH * self.row_bytes)
        self.dst = cuda.DeviceBuffer(MAX_BATCH * self.row_bytes)
        self.values = np.arange(MAX_BATCH * 12, dtype=np.float32).reshape(_rows(MAX_BATCH)) + 1
        host = cuda.PinnedBuffer(_rows(MAX_BATCH), FLOAT)
        host.array[...] = self.values
        self.stream.copy_h2d(self.src.ptr, host.ptr, host.nbytes)
        self.stream.synchronize()
        self.captured: List[int] = []

    def capture(self, batch: int) -> cuda.Graph:
        self.captured.append(batch)
        nbytes = batch * self.row_bytes
        return cuda.Graph(self.stream, lambda: self.stream.copy_d2d(self.dst.ptr, self.src.ptr, nbytes))

    def clear_dst(self) -> None:
        cuda.check(cuda.cudart().cudaMemsetAsync(self.dst.ptr, 0, MAX_BATCH * self.row_bytes,
                                                 self.stream.handle), "cudaMemsetAsync")

    def rows_copied(self) -> int:
        dst = _download(self.stream, self.dst.ptr, _rows(MAX_BATCH))
        copied = int(np.count_nonzero(dst.reshape(MAX_BATCH, -1).any(axis=1)))
        assert np.array_equal(dst[:copied], self.values[:copied])
        return copied


@pytest.mark.gpu
@needs_gpu
def test_graph_cache_replays_the_graph_of_exactly_that_shape():
    work = _CopyGraphs()
    cache = cuda.GraphCache(capacity=4)
    for batch in (1, 5, 12):
        key = (_rows(batch),)
        assert cache.lookup(key) is None
        cache.add(key, work.capture(batch), f"contexts for {batch}")
    for batch in (5, 1, 12, 5):
        graph, value = cache.lookup((_rows(batch),))
        assert value == f"contexts for {batch}"
        work.clear_dst()
        graph.launch(work.stream)
        assert work.rows_copied() == batch  # this shape's graph, never another's
    assert cache.lookup((_rows(2),)) is None  # a shape never captured is a miss, not a neighbor
    assert cache.lookup(((5, 4, 3),)) is None  # same element count, another shape: a miss too
    assert (cache.hits, cache.misses, cache.evictions) == (4, 5, 0)
    assert work.captured == [1, 5, 12]


@pytest.mark.gpu
@needs_gpu
def test_graph_cache_is_bounded_and_evicts_the_least_recently_used():
    work = _CopyGraphs()
    cache = cuda.GraphCache(capacity=3)
    graphs: Dict[int, cuda.Graph] = {}
    for batch in (1, 2, 3):
        assert cache.make_room() is None  # room left: nothing evicted
        graphs[batch] = work.capture(batch)
        cache.add((_rows(batch),), graphs[batch], batch)
    assert cache.lookup((_rows(1),)) is not None  # 1 is now the most recently used
    assert cache.keys() == [(_rows(2),), (_rows(3),), (_rows(1),)]
    assert cache.make_room() == 2  # full: the least recently used goes, its value comes back
    assert graphs[2]._exec is None  # ... and its graph is destroyed
    graphs[4] = work.capture(4)
    cache.add((_rows(4),), graphs[4], 2)  # its execution contexts reused for the new shape
    assert len(cache) == 3 and (_rows(2),) not in cache
    cache.add((_rows(5),), work.capture(5), 5)  # add evicts by itself when full
    assert cache.keys() == [(_rows(1),), (_rows(4),), (_rows(5),)] and graphs[3]._exec is None
    assert cache.evictions == 2
    for batch in (4, 1, 5):  # the survivors still replay their own shapes
        graph, _ = cache.lookup((_rows(batch),))
        work.clear_dst()
        graph.launch(work.stream)
        assert work.rows_copied() == batch
    replaced = cache.lookup((_rows(5),))[0]
    cache.add((_rows(5),), work.capture(5), 6)  # re-adding a key replaces (and destroys) its graph
    assert replaced._exec is None and cache.lookup((_rows(5),))[1] == 6 and len(cache) == 3
    assert sorted(cache.clear()) == [1, 2, 6] and len(cache) == 0
    assert graphs[1]._exec is None and graphs[4]._exec is None


@pytest.mark.gpu
@needs_gpu
def test_evicting_a_graph_while_it_runs_is_safe():
    """An evicted graph may still be running on the stream: CUDA frees it once it completes."""
    work = _CopyGraphs()
    cache = cuda.GraphCache(capacity=1)
    cache.add((_rows(MAX_BATCH),), work.capture(MAX_BATCH))
    graph, _ = cache.lookup((_rows(MAX_BATCH),))
    work.clear_dst()
    for _ in range(50):
        graph.launch(work.stream)
    cache.add((_rows(1),), work.capture(1))  # evicts (destroys) the graph queued 50 times
    assert work.rows_copied() == MAX_BATCH


# ---------------------------------------------------------------------------------------------
# The pipeline's checks of GPU inputs against a range (a host stage, no engine)
# ---------------------------------------------------------------------------------------------
class DoubleOnHost:
    """A residual stage stand-in (what MXNet does on the host): y = 2 * x, any shape."""

    name, inputs, outputs = "double", ["x"], ["y"]

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {"y": feeds["x"] * 2}


RANGE = TensorSpec((-1, 3), FLOAT, min_shape=(1, 3), max_shape=(8, 3), opt_shape=(4, 3))


def _device(values: np.ndarray) -> DeviceArray:
    cuda.set_device(0)
    array = DeviceArray.empty(values.shape, values.dtype, 0)
    rt = cuda.cudart()
    cuda.check(rt.cudaMemcpy(array.ptr, values.ctypes.data, values.nbytes,
                             rt.cudaMemcpyKind.cudaMemcpyHostToDevice), "cudaMemcpy")
    return array


@pytest.mark.gpu
@needs_gpu
def test_device_inputs_anywhere_in_the_range_and_outputs_of_their_shape():
    from trtc.runtime.stages.engine_cuda import GpuPipeline

    pipeline = GpuPipeline([DoubleOnHost()], ["x"], ["y"])
    for batch in (1, 5, 8, 2):
        x = np.arange(batch * 3, dtype=np.float32).reshape(batch, 3)
        array = pipeline.device_input("x", _device(x), RANGE)
        assert array.shape == (batch, 3)
        out = pipeline.run({"x": array}, "device")["y"]
        assert out.shape == (batch, 3) and np.array_equal(out.numpy(), 2 * x)
        assert np.array_equal(pipeline.run({"x": x}, "numpy")["y"], 2 * x)
    with pytest.raises(InputError, match=r"input 'x': axis 0 is 9, outside this bundle's range "
                                         r"1\.\.8 \(shape 1\.\.8x3\)"):
        pipeline.device_input("x", _device(np.zeros((9, 3), np.float32)), RANGE)
    with pytest.raises(InputError, match=r"input 'x': axis 1 is 4, outside this bundle's range "
                                         r"exactly 3"):
        pipeline.device_input("x", _device(np.zeros((2, 4), np.float32)), RANGE)
    with pytest.raises(InputError, match=r"input 'x': wrong rank: expected 2 dimensions"):
        pipeline.device_input("x", _device(np.zeros(6, np.float32)), RANGE)
    with pytest.raises(InputError, match="expected dtype float32, got float16"):
        pipeline.device_input("x", _device(np.zeros((2, 3), np.float16)), RANGE)


# ---------------------------------------------------------------------------------------------
# Real engines: a dynamic bundle (batch 1..12) against the CPU path
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dynamic_bundle(tmp_path_factory):
    from trtc import CompileSettings, compile

    out_dir = tmp_path_factory.mktemp("dynamic")
    params = tiny.export("tiny", out_dir)
    path = out_dir / "tiny-dynamic.trtb"
    compile(CompileSettings(params=params, output=path,
                            inputs={"data": ((1, MAX_BATCH), 3, 16, 16)}))
    return path


def _feeds(batch: int, seed: int = 0) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"data": rng.standard_normal((batch, 3, 16, 16)).astype(np.float32)}


def _context(model: Any) -> Any:
    (context,) = list(model._gpu._pool._free)
    return context


@pytest.mark.gpu
@needs_engines
@pytest.mark.parametrize("cuda_graph", [True, False])
def test_dynamic_bundle_matches_the_cpu_path_at_every_shape(dynamic_bundle, cuda_graph):
    gpu = load(dynamic_bundle, device="cuda", cuda_graph=cuda_graph)
    cpu = load(dynamic_bundle, device="cpu")
    assert gpu.inputs["data"].is_dynamic
    for seed, batch in enumerate((1, 5, MAX_BATCH, 5, 3, 1)):
        feeds = _feeds(batch, seed)
        want = cpu(**feeds)
        out = gpu(**feeds)
        for name, value in out.items():
            assert value.shape == want[name].shape and value.shape[0] == batch
            _close(value, want[name])
    graphs = _context(gpu).graphs
    assert len(graphs) == (4 if cuda_graph else 0)  # batches 1, 5, 12 and 3


@pytest.mark.gpu
@needs_engines
def test_graphs_are_cached_per_shape_with_a_bound(dynamic_bundle):
    from trtc.runtime.stages.engine_cuda import GRAPH_CACHE_SIZE

    graphed = load(dynamic_bundle, device="cuda")
    eager = load(dynamic_bundle, device="cuda", cuda_graph=False)
    graphs = _context(graphed).graphs
    batches = list(range(1, MAX_BATCH + 1))  # more shapes than the bound
    for batch in batches + batches[::-1]:
        feeds = _feeds(batch, batch)
        a, b = graphed(**feeds), eager(**feeds)
        for name in a:
            assert a[name].shape[0] == batch
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-5)
        assert len(graphs) <= GRAPH_CACHE_SIZE and ((batch, 3, 16, 16),) in graphs
    assert graphs.evictions > 0 and not _context(graphed).graph_failed
    hits = graphs.hits
    batch = graphs.keys()[-1][0][0]  # the most recent shape: replayed, not captured again
    graphed(**_feeds(batch))
    assert graphs.hits == hits + 1


@pytest.mark.gpu
@needs_engines
def test_gpu_arrays_of_any_shape_in_range(dynamic_bundle):
    torch = pytest.importorskip("torch")
    model = load(dynamic_bundle, device="cuda")
    cpu = load(dynamic_bundle, device="cpu")
    for batch in (2, MAX_BATCH, 2):
        feeds = _feeds(batch, batch)
        out = model(output="device", data=torch.from_numpy(feeds["data"]).cuda())
        for name, value in out.items():
            tensor = torch.from_dlpack(value)
            assert tuple(tensor.shape) == (batch, 4, 16, 16)
            _close(tensor.cpu().numpy(), cpu(**feeds)[name])
    with pytest.raises(InputError, match=r"axis 0 is 13, outside this bundle's range 1\.\.12"):
        model(data=torch.zeros((MAX_BATCH + 1, 3, 16, 16), device="cuda"))
    with pytest.raises(InputError, match=r"axis 2 is 8, outside this bundle's range exactly 16"):
        model(data=torch.zeros((1, 3, 8, 16), device="cuda"))


# ---------------------------------------------------------------------------------------------
# The bound and its documentation (runs anywhere)
# ---------------------------------------------------------------------------------------------
def test_graph_cache_bound_is_documented():
    from trtc.runtime.stages import engine_cuda

    assert engine_cuda.GRAPH_CACHE_SIZE == 8
    doc = engine_cuda.__doc__ or ""
    assert "GRAPH_CACHE_SIZE" in doc and "(8)" in doc and "least recently used" in doc
    assert "never replayed for another shape" in doc


def test_graph_cache_needs_room_for_one():
    with pytest.raises(ValueError, match="at least 1"):
        cuda.GraphCache(0)
    cache = cuda.GraphCache(2)  # no CUDA call until a graph is added
    assert len(cache) == 0 and cache.make_room() is None and cache.lookup("k") is None
    assert cache.misses == 1 and cache.clear() == []
