"""The GPU path through ONNX Runtime's CUDA execution provider (issue 20 part 5): ONNX Runtime
stages run on the GPU with their tensors on the device (I/O binding), and where no TensorRT
flavor can run a bundle's engines on this GPU (TensorRT-RTX on compute capability 9.0: H100,
H200), ``device="auto"``/``"cuda"`` runs each engine's ONNX through the same provider on the GPU
instead of falling back to the CPU. Compared against the CPU path (ONNX Runtime's CPU provider).

The bundles are the committed fixtures in tests/data (no MXNet needed on the GPU machine):
``tiny-fp32.trtb`` (engines only) and ``pair-onnx-dyn.trtb`` (two engines around an ONNX Runtime
stage, batch 1..4). The ``gpu`` tests skip, with the exact reason, where there is no GPU or no
onnxruntime-gpu; the test at the end runs anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import pytest

from _gpus import gpu_params
from _threads import run_in_threads
from trtc.runtime import IncompatibleError, cuda, load
from trtc.runtime.dlpack import DeviceArray

DATA = Path(__file__).resolve().parents[1] / "data"
TINY = DATA / "tiny-fp32.trtb"
PAIR = DATA / "pair-onnx-dyn.trtb"  # engine0 -> onnx0 (BatchNorm) -> engine1, batch 1..4


def ort_cuda_unavailable_reason() -> Optional[str]:
    reason = cuda.gpu_unavailable_reason(0)
    if reason:
        return reason
    from trtc.runtime.stages.engine_cpu import cuda_provider_unavailable_reason

    return cuda_provider_unavailable_reason()


def tensorrt_runs_reason() -> Optional[str]:
    """None when no TensorRT flavor can run the fixtures' engines here (the case these tests
    are about: engines then run on ONNX Runtime's CUDA provider), else why this GPU runs them
    with TensorRT (their ONNX Runtime stages are still on the GPU: see the mixed test)."""
    from trtc.runtime.model import _gpu_reason
    from trtc.runtime.bundle import read_bundle

    with read_bundle(TINY, verify=False) as bundle:
        if _gpu_reason(bundle) is None:
            return "a TensorRT flavor runs the engines on this GPU (test_gpu_engine.py covers it)"
    return None


REASON = ort_cuda_unavailable_reason()
needs_ort_cuda = pytest.mark.skipif(REASON is not None, reason=str(REASON))


def _feeds(model: Any, batch: int = 1, seed: int = 0) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, spec in model.inputs.items():
        shape = list(spec.max_shape or spec.shape)
        if spec.is_dynamic:
            shape[0] = batch
        feeds[name] = rng.random(shape, dtype=np.float32)
    return feeds


def _close(actual: np.ndarray, expected: np.ndarray) -> None:
    # fp32 fixtures: trtc turns TF32 off for fp32 stages, so the GPU meets the fp32 tolerance
    # the gate verified on the CPU path (with ONNX Runtime's default TF32: 8e-4 on HRNet)
    scale = float(np.abs(expected).max()) or 1.0
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.gpu
@needs_ort_cuda
@pytest.mark.parametrize("cuda_graph", [True, False])
def test_engines_run_on_the_gpu_through_onnxruntime_where_tensorrt_cannot(cuda_graph):
    why = tensorrt_runs_reason()
    if why:
        pytest.skip(why)
    cpu = load(TINY, device="cpu")
    for device in ("auto", "cuda"):
        model = load(TINY, device=device, cuda_graph=cuda_graph)
        # static shapes, every node on the GPU: ONNX Runtime captures a CUDA graph when asked
        assert [s.graphed for s in model.stages] == [cuda_graph]
        assert model.device == "cuda", model.device_reason
        assert model.engine_executor == "onnxruntime"
        assert "ONNX Runtime's CUDA execution provider runs each engine's ONNX" in \
            model.device_reason
        assert set(model.executors.values()) == {"ONNX Runtime (CUDA)"}, model.executors
        for seed in range(3):  # the graph's replays take each call's own inputs
            feeds = _feeds(model, seed=seed)
            out, ref = model(**feeds), cpu(**feeds)
            assert list(out) == list(model.outputs)
            for name in out:
                assert isinstance(out[name], np.ndarray)
                _close(out[name], ref[name])
            device_out = model(output="device", **feeds)
            first = {n: v.numpy() for n, v in device_out.items()}
            model(**_feeds(model, seed=seed + 10))  # a later call must not change returned arrays
            for name, value in device_out.items():
                np.testing.assert_array_equal(value.numpy(), first[name])
                _close(first[name], ref[name])


@pytest.mark.gpu
@needs_ort_cuda
@pytest.mark.parametrize("gpu", gpu_params())
@pytest.mark.parametrize("batch", [1, 3, 4, 2])
def test_mixed_bundle_keeps_onnx_stages_on_the_gpu(batch, gpu):
    """Two engines around an ONNX Runtime stage; every stage on the GPU (the engines too, by
    TensorRT where it runs here, else by ONNX Runtime), any batch of the range, on each GPU."""
    model = load(PAIR, device=f"cuda:{gpu}")
    assert model.gpu == gpu
    assert model.executors["onnx0"] == "ONNX Runtime (CUDA)", model.executors
    assert not any(getattr(s, "graphed", False) for s in model.stages)  # dynamic: no graph
    cpu = load(PAIR, device="cpu")
    feeds = _feeds(model, batch=batch, seed=batch)
    out, ref = model(**feeds), cpu(**feeds)
    for name in out:
        assert out[name].shape[0] == batch
        _close(out[name], ref[name])


@pytest.mark.gpu
@needs_ort_cuda
@pytest.mark.parametrize("gpu", gpu_params())
def test_device_outputs_and_device_inputs_stay_on_the_gpu(gpu):
    model = load(PAIR, device=f"cuda:{gpu}")
    cpu = load(PAIR, device="cpu")
    feeds = _feeds(model, batch=2, seed=7)
    on_gpu = {}
    for name, value in feeds.items():  # inputs already on the GPU, read in place
        cuda.set_device(gpu)
        array = DeviceArray.empty(value.shape, value.dtype, gpu)
        stream = cuda.Stream()
        stream.copy_h2d(array.ptr, value.ctypes.data, value.nbytes)
        stream.synchronize()
        on_gpu[name] = array
    out = model(output="device", **on_gpu)
    ref = cpu(**feeds)
    for name, value in out.items():
        assert isinstance(value, DeviceArray) and value.device == gpu
        assert cuda.pointer_device(value.ptr) == gpu
        _close(value.numpy(), ref[name])


@pytest.mark.gpu
@needs_ort_cuda
@pytest.mark.parametrize("gpu", gpu_params())
def test_threads_share_the_onnxruntime_gpu_stages(gpu):
    model = load(PAIR, device=f"cuda:{gpu}")
    cpu = load(PAIR, device="cpu")
    cases = [_feeds(model, batch=1 + i % 4, seed=i) for i in range(8)]
    expected = [cpu(**feeds) for feeds in cases]

    def work(i: int) -> None:
        for _ in range(5):
            out = model(**cases[i])
            for name in out:
                _close(out[name], expected[i][name])

    run_in_threads(work, len(cases))


def test_cuda_without_a_way_to_run_the_engines_says_both_ways(monkeypatch):
    """Anywhere: with a GPU that TensorRT cannot serve and no onnxruntime-gpu, device='cuda' is
    one IncompatibleError naming TensorRT's reason and the ONNX Runtime alternative."""
    from trtc.runtime import model as model_module
    from trtc.runtime.stages import engine_cpu

    monkeypatch.setattr(cuda, "gpu_unavailable_reason", lambda device=0: None)
    monkeypatch.setattr(model_module, "_gpu_reason", lambda bundle, gpu=0:
                        "GPU compute capability 9.0 is not supported by TensorRT-RTX")
    monkeypatch.setattr(engine_cpu, "cuda_provider_unavailable_reason",
                        lambda: "ONNX Runtime 1.x has no CUDA execution provider: pip install "
                                "'trtc[cuda]' (onnxruntime-gpu) for it")
    with pytest.raises(IncompatibleError) as info:
        load(TINY, device="cuda")
    text = str(info.value)
    assert "\n" not in text
    assert "9.0 is not supported by TensorRT-RTX" in text and "onnxruntime-gpu" in text, text
    model = load(TINY, device="auto")  # auto falls back to the CPU and says why
    assert model.device == "cpu" and "TensorRT-RTX" in model.device_reason


def test_device_strings() -> None:
    """Issue 23: 'cuda:N' names a GPU; anything else is one UsageError."""
    from trtc.runtime import UsageError
    from trtc.runtime.model import parse_device

    assert parse_device("cuda:0") == ("cuda", 0) and parse_device("cuda:3") == ("cuda", 3)
    assert parse_device("cuda") == ("cuda", None) and parse_device("cpu") == ("cpu", None)
    for bad in ("cuda:", "cuda:-1", "cuda:x", "gpu", "cuda:1:2", "CUDA", 0, None, "cuda:١"):
        with pytest.raises(UsageError, match="device must be one of"):
            parse_device(bad)


def test_a_gpu_index_beyond_the_machine_is_one_clear_error() -> None:
    """Anywhere: without that GPU (or any), device='cuda:N' is one IncompatibleError naming why;
    'auto' is never given an index."""
    count = 0 if cuda.gpu_unavailable_reason(0) else cuda.device_count()
    with pytest.raises(IncompatibleError) as info:
        load(TINY, device=f"cuda:{count}")
    text = str(info.value)
    assert "\n" not in text and f"device='cuda:{count}' cannot be served" in text, text


@pytest.mark.gpu
@needs_ort_cuda
@pytest.mark.parametrize("gpu", gpu_params())
def test_model_on_a_gpu_by_index(gpu) -> None:
    model = load(PAIR, device=f"cuda:{gpu}")
    assert model.device == "cuda" and model.gpu == gpu
    out = model(output="device", **_feeds(model, batch=2))
    assert all(v.device == gpu and cuda.pointer_device(v.ptr) == gpu for v in out.values())


@pytest.mark.gpu
@needs_ort_cuda
def test_two_models_on_two_gpus() -> None:
    if cuda.device_count() < 2:
        pytest.skip(f"needs 2 GPUs, this machine has {cuda.device_count()} (issue 24 runs it)")
    cpu = load(PAIR, device="cpu")
    models = [load(PAIR, device=f"cuda:{i}") for i in (0, 1)]
    feeds = _feeds(models[0], batch=3, seed=4)
    ref = cpu(**feeds)

    def work(i: int) -> None:
        model = models[i % 2]
        for _ in range(5):
            out = model(output="device", **feeds)
            for name, value in out.items():
                assert value.device == model.gpu == cuda.pointer_device(value.ptr)
                _close(value.numpy(), ref[name])

    run_in_threads(work, 8)


def test_fp32_stages_compute_without_tf32() -> None:
    """The provider options trtc gives ONNX Runtime's CUDA provider (runs anywhere): TF32 off
    for an fp32 stage, ONNX Runtime's default for an fp16 or int8 one."""
    from trtc.runtime.stages.engine_cpu import cuda_options

    assert cuda_options(1, {"precision": "fp32"}) == {"device_id": 1, "use_tf32": "0"}
    assert cuda_options(0, {}, enable_cuda_graph="1")["use_tf32"] == "0"
    assert "use_tf32" not in cuda_options(0, {"precision": "fp16"})
    assert "use_tf32" not in cuda_options(0, {"precision": "int8"})
