"""Issue 2: whole-model compile of zoo models into verified bundles (real MXNet, TensorRT-RTX,
ONNX Runtime), fp32 and fp16."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

import trtc.runtime as rt
from trtc import CompileSettings, compile
from trtc.frontend import load_graph, resolve_model_files
from trtc.runtime.bundle import read_bundle, sha256_hex
from trtc.runtime.errors import CompileError
from trtc.verify import mxnet_forward


def _relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - ref).max() / np.abs(ref).max())


def _check_against_mxnet(params: Path, bundle: Path, tolerance: float, seed: int = 7) -> float:
    graph = load_graph(*resolve_model_files(params))
    model = rt.load(bundle, device="cpu")
    rng = np.random.default_rng(seed)
    feeds = {n: rng.random(s.shape).astype(s.dtype) for n, s in model.inputs.items()}
    got = model(**feeds)
    ref = mxnet_forward(graph, feeds)
    worst = 0.0
    for name in graph.outputs:
        assert got[name].shape == ref[name].shape and got[name].dtype == np.float32
        worst = max(worst, _relative_error(got[name], ref[name]))
    assert worst <= tolerance, worst
    return worst


@pytest.mark.parametrize("name", ["resnet18_v2", "mobilenetv2_1.0"])
def test_fp32_bundle_matches_mxnet(name, compiled, zoo_params):
    bundle = compiled(name)
    _check_against_mxnet(zoo_params(name), bundle, 1e-4)
    stages = read_bundle(bundle).manifest["stages"]
    assert [s["kind"] for s in stages] == ["engine"]


@pytest.mark.parametrize("name", ["resnet18_v2", "mobilenetv2_1.0"])
def test_fp16_bundle_matches_mxnet_within_fp16_tolerance(name, compiled, zoo_params):
    bundle = compiled(name, fp16=True)
    err = _check_against_mxnet(zoo_params(name), bundle, 2e-2)
    assert err > 1e-6  # really computed in fp16, not a float32 engine
    manifest = read_bundle(bundle).manifest
    assert manifest["precision"] == "fp16"
    # The bundle's IO stays float32 for the caller.
    assert all(t["dtype"] == "float32" for t in manifest["inputs"] + manifest["outputs"])


def test_fp16_network_is_fp16_inside(compiled):
    opened = read_bundle(compiled("resnet18_v2", fp16=True))
    stage = opened.engine_stages[0]
    model = onnx.load_from_string(opened.read_member(stage["onnx"]))
    types = {init.data_type for init in model.graph.initializer if len(init.dims) > 1}
    assert types == {onnx.TensorProto.FLOAT16}
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {onnx.TensorProto.FLOAT}
    assert all(spec["dtype"] == "float32" for spec in stage["io"])


def test_manifest_describes_engines(r18_bundle, zoo_params):
    opened = read_bundle(r18_bundle)
    m = opened.manifest
    assert m["format_version"] == 1 and m["format"] == "trtc-bundle"
    graph = load_graph(*resolve_model_files(zoo_params("resnet18_v2")))
    assert m["source"]["symbol"]["sha256"] == graph.symbol_sha256
    assert m["source"]["params"]["sha256"] == graph.params_sha256
    assert m["inputs"] == [{"name": "data", "shape": [1, 3, 224, 224], "dtype": "float32"}]
    (stage,) = opened.engine_stages
    import tensorrt_rtx

    assert stage["backend"] == "tensorrt_rtx" and stage["backend_version"] == tensorrt_rtx.__version__
    plan = opened.read_member(stage["engine"])
    assert len(plan) == stage["bytes"] and sha256_hex(plan) == stage["sha256"]
    assert stage["compute_capabilities"] and "9.0" not in stage["compute_capabilities"]
    io_names = {(s["name"], s["mode"]) for s in stage["io"]}
    assert io_names == {("data", "input"), (m["outputs"][0]["name"], "output")}
    assert m["requires"]["mxnet"] is False and "residual_params" not in m


def test_bundle_has_no_pickle(r18_bundle):
    with zipfile.ZipFile(r18_bundle) as zf:
        names = zf.namelist()
        assert names[:2] == ["trtc-bundle", "manifest.json"]
        for name in names:
            assert not name.endswith((".pkl", ".pickle", ".pt"))
        json.loads(zf.read("manifest.json"))


def test_accuracy_gate_refuses_and_keeps_existing_bundle(tmp_path, zoo_params, r18_bundle):
    out = tmp_path / "model.trtb"
    previous = r18_bundle.read_bytes()  # a good bundle is the only file -o may replace
    out.write_bytes(previous)
    with pytest.raises(CompileError, match="accuracy gate failed"):
        compile(CompileSettings(params=zoo_params("resnet18_v2"), fp16=True, output=out,
                                tolerance=1e-9))
    assert out.read_bytes() == previous
    assert [p.name for p in tmp_path.iterdir()] == ["model.trtb"]


def test_batchnorm_fix_gamma_is_honoured(r18_bundle, zoo_params):
    # resnet v2 starts with BatchNorm(scale=False): MXNet ignores its (random) gamma.
    symbol = json.loads(resolve_model_files(zoo_params("resnet18_v2"))[0].read_text())
    first_bn = next(n for n in symbol["nodes"] if n["op"] == "BatchNorm")
    assert first_bn["attrs"].get("fix_gamma", "True") == "True"
    _check_against_mxnet(zoo_params("resnet18_v2"), r18_bundle, 1e-4, seed=3)
