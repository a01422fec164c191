"""Precision you can choose and trust (issue 14): fp16 with layers kept in fp32 where fp16
overflows or loses too much, --keep-fp32, int8 by Q/DQ quantization with calibration. Real MXNet,
the TensorRT-RTX builder and ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trtc import CompileSettings, compile
from trtc.frontend import load_graph, resolve_model_files
from trtc.runtime import load
from trtc.runtime.bundle import read_bundle
from trtc.runtime.errors import UsageError
from trtc.verify import mxnet_forward


def _overflow_model(out: Path) -> Path:
    """data(1x32) -> FC 'big' (weights ~1e5: activations ~1e6, beyond fp16's 65504) -> relu ->
    FC 'small' (weights ~1e-5: back to O(1)) -> relu -> FC 'head' -> softmax."""
    import mxnet as mx

    rng = np.random.default_rng(0)
    data = mx.sym.var("data", shape=(1, 32))
    h = mx.sym.relu(mx.sym.FullyConnected(data, num_hidden=64, name="big"), name="relu1")
    h = mx.sym.relu(mx.sym.FullyConnected(h, num_hidden=64, name="small"), name="relu2")
    sym = mx.sym.softmax(mx.sym.FullyConnected(h, num_hidden=16, name="head"), name="prob")
    params = {"arg:big_weight": rng.normal(0, 1e5, (64, 32)), "arg:big_bias": np.zeros(64),
              "arg:small_weight": rng.normal(0, 1e-5, (64, 64)), "arg:small_bias": np.zeros(64),
              "arg:head_weight": rng.normal(0, 0.3, (16, 64)), "arg:head_bias": np.zeros(16)}
    out.mkdir(parents=True, exist_ok=True)
    sym.save(str(out / "overflow-symbol.json"))
    mx.nd.save(str(out / "overflow-0000.params"),
               {k: mx.nd.array(v, dtype="float32") for k, v in params.items()})
    return out / "overflow-0000.params"


def _error(params: Path, bundle: Path, seed: int = 3) -> float:
    graph = load_graph(*resolve_model_files(params))
    feeds = {n: np.random.default_rng(seed).random(s).astype(np.float32) for n, s, _ in graph.inputs}
    ref = mxnet_forward(graph, feeds)
    out = load(bundle, device="cpu")(**feeds)
    name = graph.outputs[0]
    return float(np.abs(out[name] - ref[name]).max() / np.abs(ref[name]).max())


def test_fp16_keeps_overflowing_layers_in_fp32(tmp_path):
    params = _overflow_model(tmp_path)
    result = compile(CompileSettings(params=params, fp16=True, output=tmp_path / "o.trtb"))
    layers = result.report.fp32_layers
    assert "big" in layers and "beyond fp16's range" in layers["big"], layers
    assert "small" in layers  # reads the overflowing tensor: its input must stay fp32
    assert "layers kept in fp32" in result.report.to_text()
    stage = next(s for s in result.manifest["stages"] if s["kind"] == "engine")
    assert stage["precision"] == "fp16" and "big" in stage["fp32_layers"]
    assert "head" not in stage["fp32_layers"]  # the rest runs in fp16
    assert _error(params, result.output) <= 2e-2


def test_keep_fp32_forces_named_layers(tmp_path, zoo_params):
    result = compile(CompileSettings(params=zoo_params("mobilenetv2_0.25"), fp16=True,
                                     output=tmp_path / "m.trtb", keep_fp32=("Pooling", "elemwise_add")))
    forced = {k for k, v in result.report.fp32_layers.items() if v == "--keep-fp32"}
    graph = load_graph(*resolve_model_files(zoo_params("mobilenetv2_0.25")))
    expected = {n.name for n in graph.op_nodes if n.op in ("Pooling", "elemwise_add")}
    assert expected and expected <= forced


def test_keep_fp32_mistakes(tmp_path, zoo_params):
    with pytest.raises(UsageError, match="add --fp16"):
        compile(CompileSettings(params=zoo_params("resnet18_v1"), output=tmp_path / "x.trtb",
                                keep_fp32=("softmax",)))
    with pytest.raises(UsageError, match="no op type or node of that name"):
        compile(CompileSettings(params=zoo_params("resnet18_v1"), output=tmp_path / "x.trtb",
                                fp16=True, keep_fp32=("NoSuchOp",)))


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(1)
    for i in range(4):
        np.savez(out / f"batch{i}.npz", data=rng.random((2, 1, 3, 224, 224)).astype(np.float32))
    return out


def test_int8_engine_is_smaller_than_fp16_and_meets_the_metric(tmp_path, zoo_params, calib, compiled):
    params = zoo_params("resnet18_v1")
    result = compile(CompileSettings(params=params, int8=True, calibration=calib,
                                     output=tmp_path / "i8.trtb"))
    stage = next(s for s in result.manifest["stages"] if s["kind"] == "engine")
    assert result.manifest["precision"] == "int8" and stage["precision"] == "int8"
    assert len(stage["int8_layers"]) >= 20  # every Conv and the Dense
    fp16 = read_bundle(compiled("resnet18_v1", fp16=True)).manifest
    fp16_engine = next(s for s in fp16["stages"] if s["kind"] == "engine")
    assert stage["bytes"] < 0.75 * fp16_engine["bytes"], (stage["bytes"], fp16_engine["bytes"])
    assert _error(params, result.output) <= 0.15
    assert all(c.ok for c in result.checks)


def test_int8_calibration_mistakes(tmp_path, zoo_params):
    params = zoo_params("resnet18_v1")
    with pytest.raises(UsageError, match="needs --calibration"):
        compile(CompileSettings(params=params, int8=True, output=tmp_path / "x.trtb"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="no .npy or .npz file"):
        compile(CompileSettings(params=params, int8=True, calibration=empty, output=tmp_path / "x.trtb"))
    np.savez(tmp_path / "bad.npz", image=np.zeros((1, 3, 224, 224), np.float32))
    with pytest.raises(UsageError, match="--calibration bad.npz has no array 'data'"):
        compile(CompileSettings(params=params, int8=True, calibration=tmp_path / "bad.npz",
                                output=tmp_path / "x.trtb"))
    np.savez(tmp_path / "shape.npz", data=np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(UsageError, match="'data' has shape"):
        compile(CompileSettings(params=params, int8=True, calibration=tmp_path / "shape.npz",
                                output=tmp_path / "x.trtb"))
    with pytest.raises(UsageError, match="choose one of minmax, entropy, percentile"):
        compile(CompileSettings(params=params, int8=True, calibration=tmp_path / "shape.npz",
                                calibration_method="mse", output=tmp_path / "x.trtb"))
    assert not (tmp_path / "x.trtb").exists()


def test_int8_calibrators_print_nothing(tmp_path, capfd):
    """Issue 21: ONNX Runtime's entropy/percentile calibrators print() their progress, which
    reached the Python API's stdout and the CLI's stderr even with -q."""
    import numpy as np
    from models import tiny

    params = tiny.export("tiny", tmp_path)
    np.savez(tmp_path / "calib.npz", data=np.random.default_rng(0).random(
        (4, *tiny.MODELS["tiny"]["data"])).astype(np.float32))
    capfd.readouterr()
    compile(CompileSettings(params=params, int8=True, calibration=tmp_path / "calib.npz",
                            calibration_method="entropy", output=tmp_path / "t.trtb"))
    out, err = capfd.readouterr()
    assert "histogram" not in out + err and "threshold" not in out + err, (out, err)


def test_fp16_keeps_shape_arithmetic_and_range_in_fp32(tmp_path):
    """GluonNLP's position ids (arange_like over a dynamic sequence length): --fp16 made the
    Cast(Shape) arithmetic and ONNX Range float16, which Range does not allow and TensorRT's
    parser / Myelin refused: the op went to ONNX Runtime and split the engine. Shape arithmetic
    and float32-only ONNX ops now stay float32 (said in the report); one engine."""
    import mxnet as mx

    from models import tiny
    from trtc import CompileSettings, compile
    from trtc.runtime import load

    class Positions(mx.gluon.HybridBlock):
        def __init__(self):
            super().__init__()
            self.dense = mx.gluon.nn.Dense(8, flatten=False, in_units=8)
            self.pos = mx.gluon.nn.Embedding(64, 8)

        def hybrid_forward(self, F, x):
            p = self.pos(F.contrib.arange_like(x, axis=1))
            return F.broadcast_add(self.dense(x), F.expand_dims(p, 0))

    params = tiny.export_block(Positions(), tmp_path, "pos", (1, 16, 8))
    result = compile(CompileSettings(params=params, output=tmp_path / "pos.trtb", fp16=True,
                                     inputs={"data": (1, (1, 32), 8)}))
    assert result.report.full and len(result.report.engine_segments) == 1, result.report.to_text()
    kept = result.report.fp32_layers
    assert any("arange_like" in name for name in kept), kept
    assert not any("embedding" in name or "dense" in name for name in kept), kept
    model = load(result.output, device="cpu")
    x = np.random.default_rng(0).random((1, 20, 8), dtype=np.float32)
    symbol = mx.sym.load(str(tmp_path / "pos-symbol.json"))
    loaded = mx.nd.load(str(params))
    args = {k[4:]: v for k, v in loaded.items() if k.startswith("arg:")}
    want = symbol.bind(mx.cpu(), {**args, "data": mx.nd.array(x)}).forward()[0].asnumpy()
    (got,) = model(data=x).values()
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-2 * np.abs(want).max())
