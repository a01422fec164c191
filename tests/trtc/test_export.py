"""Export (real mxnet.onnx, onnx-graphsurgeon, ONNX Runtime, TensorRT-RTX parser): a segment cut
out of one whole-model export computes exactly what exporting that segment alone computes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from trtc.backends import get_backend
from trtc.export import cut_segment, export_nodes, onnx_from_segment
from trtc.frontend import load_graph, resolve_model_files
from trtc.partition import Decision, Reason, segment_graph


def _run(onnx_bytes: bytes, feeds):
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def test_cut_equals_segment_export(zoo_params):
    graph = load_graph(*resolve_model_files(zoo_params("resnet18_v2")))
    decisions = {n.index: Decision(n.name, n.op, Reason.EXCLUDED)
                 for n in graph.op_nodes if n.op == "Pooling"}
    segments, _ = segment_graph(graph, decisions, 3)
    engines = [s for s in segments if s.kind == "engine"]
    assert len(engines) >= 2
    whole = export_nodes(graph, sorted(i for s in engines for i in s.nodes))
    try:
        backend = get_backend("tensorrt_rtx")
        rng = np.random.default_rng(0)
        light_bytes = full_bytes = 0
        for seg in engines:
            cut = cut_segment(whole, graph, seg)
            light = cut_segment(whole, graph, seg, light=True)
            alone = onnx_from_segment(graph, seg)
            assert cut is not None and light is not None
            # boundary tensors carry trtc's names, in the segment's order
            assert [i.name for i in cut.model.graph.input] == seg.inputs
            assert [o.name for o in cut.model.graph.output] == seg.outputs
            # every node keeps its provenance (MXNet op name)
            assert set(cut.node_origin) <= {graph.nodes[i].name for i in seg.nodes}
            # the light cut references the weights instead of holding them
            light_bytes += len(light.onnx_bytes)
            full_bytes += len(cut.onnx_bytes)
            assert backend.parse(light.onnx_bytes, whole.model_path).ok
            assert backend.parse(cut.onnx_bytes).ok
            feeds = {n: rng.random(graph.shapes[n]).astype(np.float32) for n in seg.inputs}
            got, want = _run(cut.onnx_bytes, feeds), _run(alone.onnx_bytes, feeds)
            assert got.keys() == want.keys()
            for name in want:
                np.testing.assert_array_equal(got[name], want[name])
        assert light_bytes < full_bytes / 10
    finally:
        directory = whole.directory
        whole.close()
    import os

    assert not os.path.exists(directory)


def test_uncovered_segment_is_not_cut(zoo_params):
    graph = load_graph(*resolve_model_files(zoo_params("resnet18_v2")))
    segments, _ = segment_graph(graph, {}, 3)
    engine = segments[0]
    whole = export_nodes(graph, engine.nodes[:10])
    try:
        assert not whole.covers(engine)
        assert cut_segment(whole, graph, engine) is None
    finally:
        whole.close()


def test_export_declares_the_opset_its_converters_implement(tmp_path):
    """mxnet.onnx writes opset-13 nodes; declaring onnx's newest opset made a Split without
    num_outputs (SliceChannel) invalid and ONNX Runtime refused it (GluonCV CenterNet)."""
    import mxnet as mx

    from trtc.partition import describe_nodes

    data = mx.sym.var("data", shape=(1, 4, 8, 8))
    parts = mx.sym.split(data, num_outputs=2, axis=1, name="split0")
    symbol = mx.sym.relu(mx.sym.broadcast_add(parts[0], mx.sym.broadcast_mul(
        parts[1], mx.sym.var("w", shape=(1,)))), name="out")
    symbol.save(str(tmp_path / "s-symbol.json"))
    mx.nd.save(str(tmp_path / "s-0000.params"), {"arg:w": mx.nd.ones((1,))})
    graph = load_graph(tmp_path / "s-symbol.json", tmp_path / "s-0000.params", {"data": (1, 4, 8, 8)})
    seg = describe_nodes(graph, [n.index for n in graph.op_nodes], "engine")
    exp = onnx_from_segment(graph, seg)
    assert [o.version for o in exp.model.opset_import if o.domain in ("", "ai.onnx")] == [13]
    x = np.random.default_rng(0).random((1, 4, 8, 8)).astype(np.float32)
    (got,) = _run(exp.onnx_bytes, {"data": x}).values()
    np.testing.assert_allclose(got, np.maximum(x[:, :2] + x[:, 2:], 0), rtol=1e-6)


def test_swapaxes_is_one_transpose_and_parses_with_a_dynamic_batch(tmp_path):
    """mxnet.onnx pads SwapAxis to rank 8 with Shape/ScatterND/Pad arithmetic (it is not told the
    rank), which TensorRT's parser refuses where the batch is dynamic. trtc gives converters the
    static rank: one exact Transpose, negative axes too; the model is one engine and matches
    MXNet at every batch of the range."""
    import mxnet as mx

    from trtc import CompileSettings, compile
    from trtc.runtime import load
    from trtc.verify import mxnet_forward

    data = mx.sym.var("data")
    x = mx.sym.swapaxes(mx.sym.relu(data), dim1=-1, dim2=1)  # (N, 5, 4, 3)
    x = mx.sym.swapaxes(x * 2, dim1=0, dim2=2)  # (4, 5, N, 3)
    sym = mx.sym.sum(x, axis=(0, 1)) + 1
    sym.save(str(tmp_path / "sw-symbol.json"))
    mx.nd.save(str(tmp_path / "sw-0000.params"), {})
    params = tmp_path / "sw-0000.params"
    result = compile(CompileSettings(params=params, inputs={"data": ((1, 4), 3, 4, 5)},
                                     output=tmp_path / "sw.trtb"))
    assert [s["kind"] for s in result.manifest["stages"]] == ["engine"], result.report.to_text()
    model = load(result.output, device="cpu")
    rng = np.random.default_rng(0)
    for batch in (1, 3, 4):
        feeds = {"data": rng.standard_normal((batch, 3, 4, 5)).astype(np.float32)}
        graph = load_graph(*resolve_model_files(params), {"data": (batch, 3, 4, 5)})
        reference = mxnet_forward(graph, feeds, graph.outputs)
        out = model(**feeds)
        for name in graph.outputs:
            np.testing.assert_allclose(out[name], reference[name], rtol=1e-5, atol=1e-5)
    segment_onnx = [n.op_type for n in export_nodes(
        load_graph(*resolve_model_files(params), {"data": (2, 3, 4, 5)}),
        [n.index for n in load_graph(*resolve_model_files(params),
                                     {"data": (2, 3, 4, 5)}).op_nodes]).model.graph.node]
    assert segment_onnx.count("Transpose") == 2 and "ScatterND" not in segment_onnx, segment_onnx


def test_static_shape_folding_keeps_fractional_scales():
    """onnx-graphsurgeon's cast elision turned ``Cast(int(Shape * [1, 1, 1.5, 0.5]))`` into an
    integer Mul with the scales truncated to [1, 1, 1, 0]: a 16x16 map resized to 16x0 instead
    of 24x8 (mxnet.onnx's scale resize). trtc's folding shields such casts: the folded model
    computes the float sizes, and shields it added are gone again."""
    from onnx import TensorProto, helper

    from trtc.export import fold_static_shapes

    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["sf", "scales"], ["p"]),
        helper.make_node("Cast", ["p"], ["sizes"], to=TensorProto.INT64),
        helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 2, 16, 16))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 1.5, 0.5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    folded = fold_static_shapes(model)
    assert not any(n.op_type in ("Shape", "Identity") for n in folded.graph.node)
    x = np.random.default_rng(0).standard_normal((1, 2, 16, 16)).astype(np.float32)
    session = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x})
    assert y.shape == (1, 2, 24, 8)
