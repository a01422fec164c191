"""Engine execution on the GPU path with real engines: numpy and GPU-array I/O, CUDA graphs,
threads, residual stages in between. Compared against the CPU path (ONNX Runtime).

The ``gpu`` tests skip, with the exact reason, where no GPU, no TensorRT flavor that runs on it
(TensorRT-RTX refuses compute capability 9.0) or no MXNet to compile the test bundles is found.
The few tests at the end check the ``output=`` keyword on the CPU path and run anywhere.
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any, Dict, Optional

import numpy as np
import pytest

from trtc.runtime import InputError, UsageError, cuda, load

from _threads import run_in_threads
from models import tiny


def engine_unavailable_reason() -> Optional[str]:
    """Why the engine tests cannot run here, or None."""
    reason = cuda.gpu_unavailable_reason(0)
    if reason:
        return reason
    from trtc.runtime.stages.engine_cuda import runtime_unavailable_reason

    major, minor = cuda.compute_capability(0)
    # what `trtc compile --backend auto` builds with
    backend = "tensorrt" if importlib.util.find_spec("tensorrt") else "tensorrt_rtx"
    reason = runtime_unavailable_reason(backend, f"{major}.{minor}")
    if reason:
        return reason
    if importlib.util.find_spec("mxnet") is None:
        return "compiling the test bundles needs MXNet, which is not installed"
    if importlib.util.find_spec("onnxruntime") is None:
        return "the reference (CPU path) needs onnxruntime, which is not installed"
    return None


ENGINE_REASON = engine_unavailable_reason()
needs_engines = pytest.mark.skipif(ENGINE_REASON is not None, reason=str(ENGINE_REASON))


def _close(actual: np.ndarray, expected: np.ndarray) -> None:
    # TensorRT may run fp32 convolutions in TF32
    scale = float(np.abs(expected).max()) or 1.0
    np.testing.assert_allclose(actual, expected, rtol=1e-2, atol=1e-2 * scale)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    return tiny.bundle("tiny", tmp_path_factory)


@pytest.fixture(scope="module")
def reference(tiny_bundle):
    cpu = load(tiny_bundle, device="cpu")
    return lambda feeds: cpu(**feeds)


def _contexts(model: Any) -> list:
    return list(model._gpu._pool._free)


@pytest.mark.gpu
@needs_engines
@pytest.mark.parametrize("cuda_graph", [True, False])
def test_gpu_path_matches_cpu_path(tiny_bundle, reference, cuda_graph):
    model = load(tiny_bundle, device="cuda", cuda_graph=cuda_graph)
    assert model.device == "cuda" and model.device_reason is None
    for seed in range(3):  # the first call warms up, the next ones replay the graph
        feeds = tiny.random_feeds("tiny", seed)
        out = model(**feeds)
        assert list(out) == list(model.outputs)
        for name, value in out.items():
            assert isinstance(value, np.ndarray) and value.shape == model.outputs[name].shape
            _close(value, reference(feeds)[name])
    (context,) = _contexts(model)
    assert len(context.graphs) == (1 if cuda_graph else 0) and not context.graph_failed


@pytest.mark.gpu
@needs_engines
def test_graph_replay_equals_stage_by_stage(tiny_bundle):
    graphed = load(tiny_bundle, device="cuda")
    eager = load(tiny_bundle, device="cuda", cuda_graph=False)
    for seed in range(4):
        feeds = tiny.random_feeds("tiny", seed)
        a, b = graphed(**feeds), eager(**feeds)
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
@needs_engines
@pytest.mark.parametrize("cuda_graph", [True, False])
def test_torch_inputs_in_place_and_device_outputs(tiny_bundle, reference, cuda_graph):
    torch = pytest.importorskip("torch")
    model = load(tiny_bundle, device="cuda", cuda_graph=cuda_graph)
    for seed in range(3):
        feeds = tiny.random_feeds("tiny", seed)
        gpu_feeds = {n: torch.from_numpy(v).cuda() for n, v in feeds.items()}
        out = model(output="device", **gpu_feeds)
        for name, value in out.items():
            tensor = torch.from_dlpack(value)
            assert tensor.is_cuda and tuple(tensor.shape) == model.outputs[name].shape
            _close(tensor.cpu().numpy(), reference(feeds)[name])
        numpy_out = model(**gpu_feeds)
        for name in numpy_out:
            np.testing.assert_allclose(numpy_out[name], out[name].numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
@needs_engines
def test_device_outputs_survive_later_calls(tiny_bundle):
    model = load(tiny_bundle, device="cuda")
    first_feeds = tiny.random_feeds("tiny", 0)
    first = model(output="device", **first_feeds)
    kept = {n: v.numpy() for n, v in first.items()}
    model(**tiny.random_feeds("tiny", 1))
    for name, value in first.items():
        assert np.array_equal(value.numpy(), kept[name])


@pytest.mark.gpu
@needs_engines
def test_cupy_inputs(tiny_bundle, reference):
    cp = pytest.importorskip("cupy")
    model = load(tiny_bundle, device="cuda")
    feeds = tiny.random_feeds("tiny", 5)
    out = model(output="device", **{n: cp.asarray(v) for n, v in feeds.items()})
    for name, value in out.items():
        _close(cp.asnumpy(cp.from_dlpack(value)), reference(feeds)[name])


@pytest.mark.gpu
@needs_engines
def test_bad_gpu_inputs_are_input_errors(tiny_bundle):
    torch = pytest.importorskip("torch")
    model = load(tiny_bundle, device="cuda")
    (name, spec), = model.inputs.items()
    with pytest.raises(InputError, match="expected dtype float32, got float16"):
        model(**{name: torch.zeros(spec.shape, device="cuda", dtype=torch.float16)})
    with pytest.raises(InputError, match="wrong shape"):
        model(**{name: torch.zeros((1, 3, 8, 8), device="cuda")})
    with pytest.raises(InputError, match="wrong shape"):
        model(**{name: np.zeros((1, 3, 8, 8), np.float32)})


@pytest.mark.gpu
@needs_engines
def test_threads_get_one_context_each(tiny_bundle, reference):
    from trtc.runtime.stages.engine_cuda import DEFAULT_MAX_CONTEXTS

    model = load(tiny_bundle, device="cuda")
    expected: Dict[int, Dict[str, np.ndarray]] = {}
    for seed in range(8):
        expected[seed] = reference(tiny.random_feeds("tiny", seed))
    start = threading.Barrier(8)

    def work(seed: int) -> None:
        start.wait()
        for _ in range(5):
            out = model(**tiny.random_feeds("tiny", seed))
            for name, value in out.items():
                _close(value, expected[seed][name])

    run_in_threads(work)
    assert 1 <= model._gpu.contexts_created <= DEFAULT_MAX_CONTEXTS
    assert len({id(c) for c in _contexts(model)}) == model._gpu.contexts_created


@pytest.mark.gpu
@needs_engines
def test_residual_stage_between_engines(tmp_path_factory):
    path = tiny.bundle("pair", tmp_path_factory, exclude_ops=("BatchNorm",))
    gpu, cpu = load(path, device="cuda"), load(path, device="cpu")
    assert [s["kind"] for s in gpu.manifest["stages"]] == ["engine", "residual", "engine"]
    assert gpu._gpu.cuda_graph is False  # graphs need every stage to be an engine
    for seed in range(2):
        feeds = tiny.random_feeds("pair", seed)
        want = cpu(**feeds)
        for output in ("numpy", "device"):
            out = gpu(output=output, **feeds)
            for name, value in out.items():
                _close(value if output == "numpy" else value.numpy(), want[name])


# ---------------------------------------------------------------------------------------------
# The output keyword on the CPU path (runs anywhere MXNet and ONNX Runtime are installed)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cpu_model(tmp_path_factory):
    pytest.importorskip("mxnet")
    pytest.importorskip("onnxruntime")
    return load(tiny.bundle("tiny", tmp_path_factory), device="cpu", cuda_graph=False)


def test_device_output_needs_the_gpu_path(cpu_model):
    with pytest.raises(UsageError, match="output='device' needs the GPU path; this model runs on "
                                         "the CPU \\(device='cpu' was asked for\\)"):
        cpu_model(output="device", **tiny.random_feeds("tiny"))


def test_output_must_be_numpy_or_device(cpu_model):
    with pytest.raises(UsageError, match=r"output must be 'numpy', 'device'.*, not 'torch'"):
        cpu_model(output="torch", **tiny.random_feeds("tiny"))
    out = cpu_model(output="numpy", **tiny.random_feeds("tiny"))
    assert all(isinstance(v, np.ndarray) for v in out.values())


# ---------------------------------------------------------------------------------------------
# The context pool behind the thread rule (plain Python, runs anywhere)
# ---------------------------------------------------------------------------------------------
def test_context_pool_lends_each_context_to_one_thread_at_a_time():
    import time

    from trtc.runtime.stages.engine_cuda import ContextPool

    made: list = []
    pool = ContextPool(lambda: made.append(object()) or made[-1], max_size=3)
    lock = threading.Lock()
    in_use: set = set()
    peak = [0]

    def work(_thread: int) -> None:
        for _ in range(30):
            with pool.take() as context:
                with lock:
                    assert id(context) not in in_use, "one context lent twice"
                    in_use.add(id(context))
                    peak[0] = max(peak[0], len(in_use))
                time.sleep(0.0005)
                with lock:
                    in_use.remove(id(context))

    run_in_threads(work, count=12)
    assert len(made) == pool.created <= 3 and peak[0] <= 3


def test_context_pool_factory_failure_frees_its_slot():
    from trtc.runtime.stages.engine_cuda import ContextPool

    calls = [0]

    def factory() -> object:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("out of memory")
        return object()

    pool = ContextPool(factory, max_size=1)
    with pytest.raises(RuntimeError):
        with pool.take():
            pass
    with pool.take() as context:
        assert context is not None
    assert pool.created == 1
