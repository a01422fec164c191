"""Dynamic shapes end to end (issue 12): one bundle takes a range of batch sizes, image sizes or
sequence lengths; engines carry an optimization profile; residual MXNet stages run any shape in
range; the gate checks min, opt, max and an odd size against MXNet. Real MXNet, the TensorRT-RTX
builder and ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trtc import CompileSettings, compile
from trtc.frontend import load_graph, resolve_model_files
from trtc.runtime import load
from trtc.runtime.errors import InputError, UsageError
from trtc.verify import mxnet_forward


def _check(params: Path, bundle: Path, shapes: list, name: str = "data", tol: float = 1e-4,
           feeds_for=None) -> None:
    """The bundle's CPU path against MXNet's forward at each shape."""
    model = load(bundle, device="cpu")
    graph = load_graph(*resolve_model_files(params))
    rng = np.random.default_rng(7)
    for shape in shapes:
        feeds = feeds_for(shape) if feeds_for else {name: rng.random(shape).astype(np.float32)}
        out = model(**feeds)
        ref = mxnet_forward(graph, feeds)
        for key in graph.outputs:
            assert out[key].shape == ref[key].shape, (shape, key)
            scale = max(float(np.abs(ref[key]).max()), 1e-12)
            err = float(np.abs(out[key].astype(np.float64) - ref[key]).max()) / scale
            assert err <= tol, (shape, key, err)


@pytest.fixture(scope="module")
def r18_dynamic(zoo_params, tmp_path_factory):
    out = tmp_path_factory.mktemp("dyn") / "r18-dyn.trtb"
    result = compile(CompileSettings(params=zoo_params("resnet18_v1"), output=out,
                                     inputs={"data": ((1, 8), 3, 224, 224)},
                                     opt_shapes={"data": (4, 3, 224, 224)}))
    return result


def test_batch_range_runs_any_batch_in_range(r18_dynamic, zoo_params):
    result = r18_dynamic
    manifest = result.manifest
    (spec,) = manifest["inputs"]
    assert spec["shape"] == [-1, 3, 224, 224]
    assert spec["min_shape"] == [1, 3, 224, 224] and spec["max_shape"] == [8, 3, 224, 224]
    assert spec["opt_shape"] == [4, 3, 224, 224]
    engine = next(s for s in manifest["stages"] if s["kind"] == "engine")
    assert engine["profile"]["data"] == {"min": [1, 3, 224, 224], "opt": [4, 3, 224, 224],
                                         "max": [8, 3, 224, 224]}
    # the gate ran at min, opt, max and an odd batch
    _check(zoo_params("resnet18_v1"), result.output, [(1, 3, 224, 224), (3, 3, 224, 224),
                                                      (8, 3, 224, 224)])


def test_outside_the_range_is_an_input_error_naming_axis_and_range(r18_dynamic):
    model = load(r18_dynamic.output, device="cpu")
    with pytest.raises(InputError, match=r"input 'data': axis 0 is 9, outside this bundle's range 1\.\.8"):
        model(data=np.zeros((9, 3, 224, 224), np.float32))
    with pytest.raises(InputError, match="axis 2 is 225"):
        model(data=np.zeros((2, 3, 225, 224), np.float32))
    assert model.inputs["data"].is_dynamic and model.inputs["data"].opt_shape == (4, 3, 224, 224)


def test_inspect_shows_the_range(r18_dynamic):
    from typer.testing import CliRunner

    from trtc.cli import app

    result = CliRunner().invoke(app, ["inspect", str(r18_dynamic.output)])
    assert result.exit_code == 0, result.output
    assert "data 1..8x3x224x224 float32 (opt 4x3x224x224)" in result.output
    bench = CliRunner().invoke(app, ["bench", str(r18_dynamic.output), "--batch", "2",
                                     "--device", "cpu", "--warmup", "0", "--iterations", "1", "--json"])
    assert bench.exit_code == 0, bench.output
    assert json.loads(bench.stdout)["batch"] == 2


@pytest.mark.parametrize("spec,phrase", [
    ({"inputs": {"data": ((1, 8), 3, 224, 224)}, "opt_shapes": {"data": (9, 3, 224, 224)}},
     "outside the range"),
    ({"opt_shapes": {"label": (1, 3, 224, 224)}}, "not an input"),
    ({"inputs": {"nope": ((1, 8), 3, 224, 224)}}, "not an input"),
    ({"opt_shapes": {"data": (2, 3, 224, 224)}}, "differs from its fixed shape"),
])
def test_range_mistakes_are_usage_errors(zoo_params, tmp_path, spec, phrase):
    with pytest.raises(UsageError, match=phrase):
        compile(CompileSettings(params=zoo_params("resnet18_v1"), output=tmp_path / "x.trtb", **spec))
    assert not (tmp_path / "x.trtb").exists()


def test_range_syntax():
    from trtc.frontend import parse_input_spec

    assert parse_input_spec("data:1..32x3x224x224") == ("data", ((1, 32), 3, 224, 224), None)
    assert parse_input_spec("x:1x3x256..768x256..768") == ("x", (1, 3, (256, 768), (256, 768)), None)
    assert parse_input_spec("ids:1x8..128:int32") == ("ids", (1, (8, 128)), "int32")
    assert parse_input_spec("d:4..4x3") == ("d", (4, 3), None)
    for bad in ("d:0..4x3", "d:8..1x3", "d:1...4x3", "d:..4", "d:1..x3"):
        with pytest.raises(UsageError):
            parse_input_spec(bad)


def test_wavenet_dynamic_sequence_length(zoo_params, tmp_path):
    params = zoo_params("wavenet")
    result = compile(CompileSettings(params=params, output=tmp_path / "w.trtb",
                                     inputs={"data": (1, 1, 1, (256, 1024))}))
    _check(params, result.output, [(1, 1, 1, 256), (1, 1, 1, 600), (1, 1, 1, 1024)])


def test_onnx_runtime_stage_runs_every_shape(zoo_params, tmp_path):
    """The default: the Pooling kept out of the engines runs in an ONNX Runtime stage exported with
    the same symbolic batch as the engines, at every size of the range."""
    params = zoo_params("resnet18_v1")
    result = compile(CompileSettings(params=params, output=tmp_path / "r.trtb",
                                     inputs={"data": ((1, 4), 3, 224, 224)}, exclude_ops=("Pooling",)))
    kinds = [s.kind for s in result.report.segments]
    assert "onnx" in kinds and "residual" not in kinds, kinds
    _check(params, result.output, [(1, 3, 224, 224), (3, 3, 224, 224), (4, 3, 224, 224)])


def test_residual_stage_runs_every_shape(zoo_params, tmp_path):
    """A Pooling kept in MXNet between engines: the MXNet stage rebinds per shape."""
    params = zoo_params("resnet18_v1")
    result = compile(CompileSettings(params=params, output=tmp_path / "r.trtb",
                                     inputs={"data": ((1, 4), 3, 224, 224)}, exclude_ops=("Pooling",),
                                     residual="mxnet"))
    assert any(s.kind == "residual" for s in result.report.segments)
    _check(params, result.output, [(1, 3, 224, 224), (2, 3, 224, 224), (4, 3, 224, 224),
                                   (2, 3, 224, 224)])


def test_static_bundles_still_load(r18_bundle):
    model = load(r18_bundle, device="cpu")
    spec = model.inputs["data"]
    assert not spec.is_dynamic and spec.shape == (1, 3, 224, 224)


def test_a_model_that_cannot_take_the_range_says_where(tmp_path):
    import mxnet as mx

    data = mx.sym.var("data")
    flat = mx.sym.reshape(mx.sym.FullyConnected(data, num_hidden=4, name="fc"), shape=(1, -1), name="fixed")
    sym = mx.sym.relu(mx.sym.FullyConnected(flat, num_hidden=3, name="fc2"), name="out")
    sym.save(str(tmp_path / "m-symbol.json"))
    rng = np.random.default_rng(0)
    mx.nd.save(str(tmp_path / "m-0000.params"),
               {"arg:fc_weight": mx.nd.array(rng.random((4, 8))), "arg:fc_bias": mx.nd.zeros(4),
                "arg:fc2_weight": mx.nd.array(rng.random((3, 4))), "arg:fc2_bias": mx.nd.zeros(3)})
    with pytest.raises(UsageError, match="cannot run at the (opt shape|max) of the --input range .*fc2"):
        compile(CompileSettings(params=tmp_path / "m-0000.params", output=tmp_path / "m.trtb",
                                inputs={"data": ((1, 4), 8)}))


def test_segmentation_with_dynamic_height_and_width(zoo_params, tmp_path):
    pytest.importorskip("gluoncv")
    params = zoo_params("fcn_resnet50_voc")
    result = compile(CompileSettings(params=params, output=tmp_path / "fcn.trtb",
                                     inputs={"data": (1, 3, (256, 384), (256, 384))}))
    _check(params, result.output, [(1, 3, 256, 256), (1, 3, 384, 320)])


def test_yolo3_batch_range_with_onnx_runtime_stages_between_engines(zoo_params, tmp_path):
    pytest.importorskip("gluoncv")
    params = zoo_params("yolo3_mobilenet1.0_voc")
    result = compile(CompileSettings(params=params, output=tmp_path / "yolo.trtb",
                                     inputs={"data": ((1, 4), 3, 416, 416)}))
    kinds = [s.kind for s in result.report.segments]
    assert "onnx" in kinds and "residual" not in kinds and kinds.count("engine") >= 2, kinds
    model = load(result.output, device="cpu")
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        out = model(data=rng.random((batch, 3, 416, 416)).astype(np.float32))
        assert all(v.shape[0] == batch for v in out.values())


def test_bert_small_with_a_sequence_length_range(tmp_path):
    pytest.importorskip("gluonnlp")
    from models import families

    params = families.export_bert_small(tmp_path)
    result = compile(CompileSettings(params=params, output=tmp_path / "bert.trtb",
                                     inputs={"inputs": (1, (8, 32)), "token_types": (1, (8, 32))}))
    assert result.report.full, result.report.to_text()

    def feeds(shape):
        rng = np.random.default_rng(shape[1])
        return {"inputs": rng.integers(0, 1000, shape).astype(np.int32),
                "token_types": rng.integers(0, 2, shape).astype(np.int32),
                "valid_length": np.array([shape[1] - 1], np.float32)}

    _check(params, result.output, [(1, 8), (1, 17), (1, 32)], feeds_for=feeds)
