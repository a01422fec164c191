"""Issue 3: partitioning into TensorRT engines and a residual MXNet graph (real MXNet, real
TensorRT-RTX parser and builder, real ONNX Runtime)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Dict, List, Set

import numpy as np
import pytest

import trtc.runtime as rt
from trtc import CompileSettings, compile
from trtc.frontend import Graph, load_graph, resolve_model_files
from trtc.partition import Decision, Reason, segment_graph
from trtc.runtime.bundle import read_bundle
from trtc.runtime.errors import CompileError
from trtc.verify import mxnet_forward


def _assert_acyclic(graph: Graph, segments) -> None:
    """No path leaves a segment and comes back into it."""
    owner = {n: i for i, s in enumerate(segments) for n in s.nodes}
    succ: Dict[int, Set[int]] = {i: set() for i in range(len(segments))}
    for node in graph.op_nodes:
        for src, _ in node.inputs:
            if graph.nodes[src].is_op and owner[src] != owner[node.index]:
                succ[owner[src]].add(owner[node.index])
    # the segment order is a topological order of the segment graph
    for i, targets in succ.items():
        assert all(t > i for t in targets), (i, targets)


def _stagewise_matches_mxnet(params: Path, bundle: Path, tolerance: float = 1e-4) -> int:
    """Run the bundle stage by stage; every stage output must match MXNet's tensor."""
    graph = load_graph(*resolve_model_files(params))
    model = rt.load(bundle, device="cpu")
    rng = np.random.default_rng(11)
    feeds = {n: rng.random(s.shape).astype(s.dtype) for n, s in model.inputs.items()}
    tensors = dict(feeds)
    names: List[str] = []
    for stage in model.stages:
        tensors.update(stage.run(tensors))
        names.extend(stage.outputs)
    reference = mxnet_forward(graph, feeds, names)
    for name in names:
        ref = reference[name].astype(np.float64)
        scale = max(float(np.abs(ref).max()), 1e-12)
        assert float(np.abs(tensors[name] - ref).max()) / scale <= tolerance, name
    final = model(**feeds)
    for name in graph.outputs:
        np.testing.assert_array_equal(final[name], tensors[name])
    return len(names)


def test_cycle_free_segments_on_a_diamond(zoo_params):
    # Keep every Activation of resnet18_v2 in MXNet: each residual block becomes a diamond whose
    # two sides mix engine and MXNet ops; segments must never form a cycle.
    graph = load_graph(*resolve_model_files(zoo_params("resnet18_v2")))
    decisions = {n.index: Decision(n.name, n.op, Reason.EXCLUDED)
                 for n in graph.op_nodes if n.op == "Activation"}
    segments, all_decisions = segment_graph(graph, decisions, 1)
    _assert_acyclic(graph, segments)
    kinds = {s.kind for s in segments}
    assert kinds == {"engine", "residual"}
    assert sum(len(s.nodes) for s in segments) == len(graph.op_nodes)


def test_min_segment_size_keeps_tiny_segments_in_mxnet(zoo_params):
    graph = load_graph(*resolve_model_files(zoo_params("resnet18_v2")))
    decisions = {n.index: Decision(n.name, n.op, Reason.EXCLUDED)
                 for n in graph.op_nodes if n.op == "Pooling"}
    segments, all_decisions = segment_graph(graph, decisions, 3)
    small = [d for d in all_decisions.values() if d.reason == Reason.BELOW_MIN_SIZE]
    assert {d.op for d in small} == {"Flatten", "FullyConnected"}
    assert all(len(s.nodes) >= 3 for s in segments if s.kind == "engine")


def test_exclude_pooling_splits_resnet(compiled, zoo_params):
    bundle = compiled("resnet18_v2", exclude_ops=("Pooling",), residual="mxnet")
    opened = read_bundle(bundle)
    kinds = [s["kind"] for s in opened.manifest["stages"]]
    assert kinds.count("engine") >= 2 and "residual" in kinds
    residual_ops = {op for s in opened.residual_stages for op in s["op_types"]}
    assert "Pooling" in residual_ops and "Convolution" not in residual_ops
    with np.load(io.BytesIO(opened.read_member(opened.manifest["residual_params"]))) as npz:
        keys = set(npz.files)
    assert not any("conv" in k for k in keys), keys
    used = {p for s in opened.residual_stages for p in s["params"]}
    assert keys == used  # only what residual nodes use, each once
    assert _stagewise_matches_mxnet(zoo_params("resnet18_v2"), bundle) >= 4


def test_custom_op_stays_in_mxnet_between_engines(tmp_path):
    from models.make_models import make_custom_op_net

    params = make_custom_op_net(tmp_path)
    out = tmp_path / "custom.trtb"
    result = compile(CompileSettings(params=params, output=out, imports=("models.custom_ops",)))
    kinds = [s.kind for s in result.report.segments]
    assert kinds == ["engine", "residual", "engine"]
    (decision,) = result.report.decisions
    assert decision.op == "Custom" and decision.reason == Reason.NO_CONVERTER
    assert "trtc_scale_shift" in decision.message
    manifest = read_bundle(out).manifest
    assert manifest["requires"]["custom_ops"] == ["trtc_scale_shift"]
    _stagewise_matches_mxnet(params, out)


def test_random_ops_run_in_mxnet(tmp_path):
    """Issue 21: ONNX's RandomUniform/Multinomial draw other numbers than MXNet (and the runtime
    refuses them: unbounded work from an attribute), so a random op is an MXNet stage with its
    reason, never an engine or ONNX Runtime stage."""
    from models.make_models import make_random_op_net

    params = make_random_op_net(tmp_path)
    result = compile(CompileSettings(params=params, output=tmp_path / "random.trtb"))
    random = [d for d in result.report.decisions if d.reason == Reason.RANDOM]
    assert [d.op for d in random] == ["_random_uniform_like"], result.report.to_text()
    assert random[0].runs_in == "mxnet"
    assert "residual" in [s.kind for s in result.report.segments]
    graph = load_graph(*resolve_model_files(params))
    feeds = {"data": np.random.default_rng(1).random((1, 3, 16, 16)).astype(np.float32)}
    reference = mxnet_forward(graph, feeds, graph.outputs)
    out = rt.load(result.output, device="cpu")(**feeds)
    for name in graph.outputs:  # the draws are multiplied by 0: outputs agree exactly enough
        np.testing.assert_allclose(out[name], reference[name], rtol=1e-4, atol=1e-5)


def test_dry_run_builds_nothing(tmp_path, zoo_params):
    out = tmp_path / "never.trtb"
    result = compile(CompileSettings(params=zoo_params("resnet18_v2"), output=out, dry_run=True,
                                     exclude_ops=("Pooling",)))
    assert result.output is None and not out.exists()
    assert result.report.engine_ops == 65 and result.report.residual_ops == 4
    report = result.report.to_text()
    assert "excluded by the user" in report and "below the minimum size" in report


def test_require_full(tmp_path, zoo_params):
    with pytest.raises(CompileError, match="--require-full") as info:
        compile(CompileSettings(params=zoo_params("resnet18_v2"), output=tmp_path / "x.trtb",
                                exclude_ops=("Pooling",), require_full=True, dry_run=True))
    assert info.value.report.residual_ops == 4
    result = compile(CompileSettings(params=zoo_params("resnet18_v2"), require_full=True,
                                     dry_run=True))
    assert result.report.full
    # issue 21: without --dry-run it fails as soon as the partition decides, building nothing
    lines: List[str] = []
    with pytest.raises(CompileError, match="--require-full"):
        compile(CompileSettings(params=zoo_params("resnet18_v2"), output=tmp_path / "y.trtb",
                                exclude_ops=("Pooling",), require_full=True), lines.append)
    assert not any(line.startswith("building ") for line in lines), lines
    assert not (tmp_path / "y.trtb").exists()




@pytest.fixture(scope="module")
def yolo_params(models_dir):
    pytest.importorskip("gluoncv", reason="GluonCV is not installed (pip install 'trtc[gluoncv]')")
    from trtc.zoo import export_example

    return export_example("yolo3_darknet53_voc", models_dir)[1]


def test_yolo3_real_split(yolo_params, tmp_path):
    out = tmp_path / "yolo3.trtb"
    result = compile(CompileSettings(params=yolo_params, output=out))
    report = result.report
    assert report.engine_segments and report.residual_ops > 0
    # issue 22: static shape folding to a fixed point puts the tile ops (whose Shape chains the
    # parser refused: "Only support constant zero padding for slicing a shape tensor") into the
    # engine; only the NMS stays out (TensorRT-RTX has no NonMaxSuppression runner)
    assert {d.op for d in report.decisions} == {"_contrib_box_nms"}, report.to_text()
    # every op out of the engines has an exact ONNX (box_nms: trtc's own): no MXNet at run time
    assert report.mxnet_ops == 0 and not result.manifest["requires"]["mxnet"], report.to_text()
    assert {d.runs_in for d in report.decisions} == {"onnxruntime"}
    # the whole darknet backbone is in the first engine
    first = report.segments[0]
    assert first.kind == "engine" and len(first.nodes) > 250
    _stagewise_matches_mxnet(yolo_params, out)
    with pytest.raises(CompileError, match="--require-full"):  # the NMS's build fails
        compile(CompileSettings(params=yolo_params, output=tmp_path / "full.trtb",
                                require_full=True))
    assert not (tmp_path / "full.trtb").exists()
