"""The accuracy gate (issue 10): each engine judged on MXNet's own inputs, tensors after a
discontinuous op compared order-insensitively, meaningful inputs, a failure that says where and
what helps. Real MXNet, the TensorRT-RTX builder and ONNX Runtime; bundles edited on purpose."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from bundle_surgery import manifest_of, members_of, repack
from models import tiny
from trtc import CompileSettings, compile
from trtc.frontend import load_graph, resolve_model_files
from trtc.runtime import load
from trtc.runtime.errors import CompileError, UsageError
from trtc.verify import (OutputCheck, compare, discontinuities, gate_inputs, load_verify_inputs,
                         run_gate)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The two-engine + residual model, compiled; (params, CompileResult)."""
    out = tmp_path_factory.mktemp("gate")
    params = tiny.export("pair", out)
    result = compile(CompileSettings(params=params, output=out / "pair.trtb", exclude_ops=("BatchNorm",)))
    return params, result


def _scale_weights(onnx_bytes: bytes, factor: float) -> bytes:
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    init = max(model.graph.initializer, key=lambda i: np.prod(i.dims))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * factor, init.name))
    return model.SerializeToString()


def test_a_wrong_engine_fails_locally_and_its_successor_does_not(pair, tmp_path):
    params, result = pair
    segments = result.report.segments
    engines = [s for s in segments if s.kind == "engine"]
    assert len(engines) == 2
    members = members_of(result.output)
    target = f"onnx/{engines[1].name}.onnx"
    members = [(n, _scale_weights(d, 1.01) if n == target else d) for n, d in members]
    bad = tmp_path / "bad.trtb"
    bad.write_bytes(repack(members, manifest_of(members)))
    graph = load_graph(*resolve_model_files(params))
    gate = run_gate(graph, load(bad, device="cpu"), segments, [tiny.random_feeds("pair", 1)], 1e-4)
    failed = gate.failed
    assert failed and all(c.stage == engines[1].name for c in failed if c.scope == "local")
    assert any(c.scope == "local" and c.stage == engines[1].name for c in failed)
    # engine0 is judged on MXNet's inputs: fine
    assert all(c.ok for c in gate.checks if c.scope == "local" and c.stage == engines[0].name)


def test_gate_failure_names_the_stage_and_carries_the_report(tmp_path):
    params = tiny.export("pair", tmp_path)
    with pytest.raises(CompileError) as info:
        compile(CompileSettings(params=params, output=tmp_path / "p.trtb",
                                exclude_ops=("BatchNorm",), tolerance=1e-15))
    text = str(info.value)
    assert "on MXNet's own inputs" in text and "itself is off" in text and "--exclude-op" in text
    assert getattr(info.value, "report", None) is not None
    assert not (tmp_path / "p.trtb").exists()


def _symbol_model(tmp_path: Path, symbol, params: dict, shapes: dict):
    import mxnet as mx

    sp, pp = tmp_path / "m-symbol.json", tmp_path / "m-0000.params"
    symbol.save(str(sp))
    mx.nd.save(str(pp), {f"arg:{k}": mx.nd.array(v) for k, v in params.items()})
    return load_graph(sp, pp, shapes)


def test_discontinuities_need_noise_upstream(tmp_path):
    import mxnet as mx

    data = mx.sym.var("data")
    length = mx.sym.var("valid_length")
    fc = mx.sym.FullyConnected(data, num_hidden=8, name="fc")
    top = mx.sym.topk(fc, k=3, ret_typ="value", name="top")
    after = mx.sym.relu(top, name="after")
    steps = mx.sym.arange(0, 8, name="steps")
    mask = mx.sym.broadcast_lesser(mx.sym.reshape(steps, (1, 8)), mx.sym.reshape(length, (1, 1)),
                                   name="mask")
    masked = mx.sym.broadcast_mul(fc, mask, name="masked")
    sym = mx.sym.Group([after, masked])
    rng = np.random.default_rng(0)
    graph = _symbol_model(tmp_path, sym, {"fc_weight": rng.random((8, 4)), "fc_bias": rng.random(8)},
                          {"data": (1, 4), "valid_length": (1,)})
    found = discontinuities(graph)
    assert found.get("after_output", "").startswith("top ") and any(k.startswith("top_output") for k in found)
    assert "masked_output" not in found and "mask_output" not in found  # exact inputs: exact mask
    feeds, how = gate_inputs(graph, 0)
    assert 1 <= feeds["valid_length"].min() <= feeds["valid_length"].max() <= 8


def test_order_insensitive_comparison_after_a_discontinuity():
    ref = np.array([[3.0, 2.0, 2.0, 1.0]], np.float32)
    got = np.array([[3.0, 2.0, 1.0, 2.0]], np.float32)  # a tie reordered
    strict = compare({"t": got}, {"t": ref}, 1e-4)[0]
    assert not strict.ok and strict.blocking
    loose = compare({"t": got}, {"t": ref}, 1e-4, {"t": "nms (box_nms)"})[0]
    assert loose.ok and loose.order_insensitive and "order-insensitively" in loose.note
    other = compare({"t": got + 1}, {"t": ref}, 1e-4, {"t": "nms (box_nms)"})[0]
    assert not other.ok and not other.blocking and "not counted" in other.note


def test_nan_where_mxnet_is_finite_fails_and_all_nan_is_said():
    ref = np.ones((2, 2), np.float32)
    got = ref.copy()
    got[0, 0] = np.nan
    assert not compare({"t": got}, {"t": ref}, 1e-4)[0].ok
    nan = np.full((2,), np.nan, np.float32)
    check = compare({"t": nan}, {"t": nan}, 1e-4)[0]
    assert check.only_nonfinite and "NaN/Inf" in check.note


def test_verify_inputs_file_is_checked(pair, tmp_path):
    params, _ = pair
    graph = load_graph(*resolve_model_files(params))
    good = tiny.random_feeds("pair", 0)
    np.savez(tmp_path / "one.npz", **good)
    assert len(load_verify_inputs(graph, tmp_path / "one.npz")) == 1
    np.savez(tmp_path / "three.npz", **{k: np.stack([v] * 3) for k, v in good.items()})
    assert len(load_verify_inputs(graph, tmp_path / "three.npz")) == 3
    np.savez(tmp_path / "missing.npz", a=good["a"])
    with pytest.raises(UsageError, match="has no array 'b'"):
        load_verify_inputs(graph, tmp_path / "missing.npz")
    np.savez(tmp_path / "shape.npz", a=good["a"][..., :4], b=good["b"])
    with pytest.raises(UsageError, match="'a' has shape"):
        load_verify_inputs(graph, tmp_path / "shape.npz")
    with pytest.raises(UsageError, match="no such file"):
        load_verify_inputs(graph, tmp_path / "absent.npz")


def test_integer_samples_for_a_float_input_are_said(pair, tmp_path):
    """uint8 images for a float input are taken as is (unscaled), and the compile says so."""
    params, _ = pair
    images = {k: (np.random.default_rng(0).random(v.shape) * 255).astype(np.uint8)
              for k, v in tiny.random_feeds("pair", 0).items()}
    np.savez(tmp_path / "u8.npz", **images)
    notes: list = []
    (sample,) = load_verify_inputs(load_graph(*resolve_model_files(params)), tmp_path / "u8.npz",
                                   notes=notes)
    assert sample["a"].dtype == np.float32 and sample["a"].max() == images["a"].max()
    assert len(notes) == 2 and "'a' is uint8 (values 0..25" in notes[0] and "not scaled" in notes[0]
    result = compile(CompileSettings(params=params, output=tmp_path / "m.trtb",
                                     verify_inputs=tmp_path / "u8.npz"))
    assert any("converted as is, not scaled" in w for w in result.warnings)


# ----------------------------------------------------------------------------------------------
# Issue 22 part 4: gate inputs that mean something, and outputs that prove nothing are said
# ----------------------------------------------------------------------------------------------
def _masked_block():
    """Embedding -> Dense -> SequenceMask(use_sequence_length): Gluon exports the lengths as
    ``data1``, a name that says nothing (issue 22's RoBERTa-style repro)."""
    from mxnet import gluon

    class Masked(gluon.HybridBlock):
        def __init__(self) -> None:
            super().__init__()
            self.embed = gluon.nn.Embedding(50, 16)
            self.dense = gluon.nn.Dense(8, flatten=False)

        def hybrid_forward(self, F, tokens, lengths):
            x = self.dense(self.embed(tokens))  # (N, T, 8)
            x = F.swapaxes(x, 0, 1)  # (T, N, 8): SequenceMask's axis 0
            return F.SequenceMask(x, sequence_length=lengths, use_sequence_length=True)

    return Masked()


def test_a_sequence_length_input_gets_lengths_whatever_its_name(tmp_path: Path) -> None:
    params = tiny.export_block(_masked_block(), tmp_path, "masked", (1, 12), (1,))
    graph = load_graph(*resolve_model_files(params), {"data0": (1, 12), "data1": (1,)})
    feeds, how = gate_inputs(graph, seed=0)
    assert 1 <= feeds["data1"][0] <= 12 and feeds["data1"][0] == int(feeds["data1"][0])
    assert any(line.startswith("data1: lengths in [1, 12] (the sequence length of ")
               and "sequencemask" in line.lower() for line in how), how
    lines = []
    result = compile(CompileSettings(params=params, inputs={"data0": (1, 12), "data1": (1,)},
                                     output=tmp_path / "masked.trtb"), progress=lines.append)
    assert not any("degenerate" in w for w in result.warnings), result.warnings
    assert any("data1: lengths in [1, 12]" in line for line in lines)


def test_degenerate_outputs_are_said_and_strict_verify_fails(tmp_path: Path) -> None:
    """Issue 22 part 4: with every position masked (lengths of 0, as uniform [0, 1) floats made
    them) the outputs were all zeros and the gate said "max abs err 0 ok". Now an output all
    zeros, or the same for two different inputs, is a warning; --strict-verify fails."""
    import mxnet as mx
    from mxnet import gluon

    class Zeroed(gluon.HybridBlock):  # the output is all zeros whatever the input
        def __init__(self) -> None:
            super().__init__()
            self.dense = gluon.nn.Dense(8)

        def hybrid_forward(self, F, x):
            return F.relu(self.dense(x)) * 0

    class Constant(gluon.HybridBlock):  # the output does not depend on the input
        def __init__(self) -> None:
            super().__init__()
            self.dense = gluon.nn.Dense(8)

        def hybrid_forward(self, F, x):
            return self.dense(F.ones_like(x))

    for name, block, why in [("zeroed", Zeroed(), "all zeros on all 2 gate inputs"),
                             ("constant", Constant(), "the same for two different gate inputs")]:
        params = tiny.export_block(block, tmp_path, name, (2, 6))
        lines = []
        result = compile(CompileSettings(params=params, inputs={"data": (2, 6)},
                                         output=tmp_path / f"{name}.trtb"), progress=lines.append)
        warning = next(w for w in result.warnings if "degenerate" in w)
        assert why in warning and "--verify-inputs" in warning, warning
        assert any(line.startswith("warning: the accuracy gate saw degenerate outputs")
                   and "--strict-verify makes this an error" in line for line in lines)
        assert result.output.exists()
        with pytest.raises(CompileError, match=f"degenerate outputs.*{why}.*--strict-verify: "
                                               "no bundle written"):
            compile(CompileSettings(params=params, inputs={"data": (2, 6)},
                                    output=tmp_path / f"{name}-strict.trtb", strict_verify=True))
        assert not (tmp_path / f"{name}-strict.trtb").exists()
    # an ordinary model: nothing said
    params = tiny.export("pair", tmp_path)
    result = compile(CompileSettings(params=params, output=tmp_path / "pair.trtb",
                                     strict_verify=True))
    assert not any("degenerate" in w for w in result.warnings)


def test_a_cast_to_float16_inside_an_fp32_model_compiles_and_is_judged_at_fp16(tmp_path: Path
                                                                              ) -> None:
    """Issue 22 part 5: mxnet.onnx wrote every float16 scalar as its uint16 bit pattern, which
    onnx >= 1.15 reads as a number (0.5 became 14336): the gate failed 1.5e4 off and said "raise
    --tolerance". trtc's export reads them as bit patterns again; what is computed in float16
    inside the model is judged at the fp16 tolerance, and the report says so."""
    from mxnet import gluon

    class Half(gluon.HybridBlock):
        def __init__(self) -> None:
            super().__init__()
            self.a = gluon.nn.Dense(16)
            self.b = gluon.nn.Dense(4)

        def hybrid_forward(self, F, x):
            h = F.cast(self.a(x), "float16") * 0.5 + 1.25
            return self.b(F.cast(F.relu(h), "float32"))

    params = tiny.export_block(Half(), tmp_path, "half", (2, 8))
    lines = []
    result = compile(CompileSettings(params=params, inputs={"data": (2, 8)},
                                     output=tmp_path / "half.trtb"), progress=lines.append)
    (out,) = [c for c in result.checks if c.kind == "output" and c.scope == "end_to_end"]
    assert out.ok and out.half and out.tolerance == 2e-2 and out.relative < 2e-2
    assert "judged at the fp16 tolerance 0.02" in out.note
    assert any("computed in float16 inside the model" in line for line in lines)
    graph = load_graph(*resolve_model_files(params), {"data": (2, 8)})
    feeds = {"data": np.random.default_rng(1).random((2, 8)).astype(np.float32)}
    from trtc.verify import mxnet_forward
    reference = mxnet_forward(graph, feeds, graph.outputs)[graph.outputs[0]]
    got = load(result.output, device="cpu")(**feeds)[graph.outputs[0]]
    np.testing.assert_allclose(got, reference, rtol=2e-2, atol=2e-2 * np.abs(reference).max())


def test_a_failure_far_beyond_rounding_never_suggests_raising_the_tolerance(pair) -> None:
    from trtc.compiler import _gate_message

    params, result = pair
    graph = load_graph(*resolve_model_files(params), {})
    engine = next(s for s in result.report.segments if s.kind == "engine")
    output = graph.outputs[0]
    for relative, tolerance, wrong in [(1.5e4, 1e-4, True), (3e-3, 1e-4, False),
                                       (1e-7, 1e-15, False), (0.5, 2e-2, False), (5.0, 2e-2, True)]:
        for scope in ("local", "end_to_end"):
            check = OutputCheck(output, relative, relative, tolerance, scope=scope,
                                stage=engine.name)
            text = _gate_message([check], CompileSettings(params=params), result.report.segments,
                                 graph)
            assert ("raise --tolerance" in text) is not wrong, (relative, tolerance, text)
            assert ("far more than rounding explains" in text) is wrong, text


def test_an_argsort_stage_that_orders_ties_differently_passes_and_a_wrong_one_fails(
        tmp_path: Path) -> None:
    """Mask R-CNN's argsort (over TensorRT's TopK limit: an ONNX Runtime stage) failed its local
    check on scores with many ties: ONNX TopK and MXNet order equal values differently, and the
    op went to MXNet. Indices that pick exactly MXNet's values, each once, now pass (said in the
    report); indices that pick other values, or one twice, still fail."""
    import mxnet as mx

    from trtc.verify import _same_selection

    data = mx.sym.var("data")
    scores = mx.sym.relu(mx.sym.floor(mx.sym.broadcast_mul(data, mx.sym.var("w"))) + 1) * 3
    idx = mx.sym.argsort(scores, axis=-1, is_ascend=False)  # 5000 wide: > TopK's 3840
    out = mx.sym.take(mx.sym.reshape(data, shape=(-1,)), mx.sym.reshape(idx, shape=(-1,))) * 2 + 1
    mx.sym.Group([out, idx]).save(str(tmp_path / "ties-symbol.json"))
    mx.nd.save(str(tmp_path / "ties-0000.params"),
               {"arg:w": mx.nd.array(np.full((1, 5000), 4.0, np.float32))})
    result = compile(CompileSettings(params=tmp_path / "ties-0000.params",
                                     inputs={"data": (1, 5000)}, output=tmp_path / "t.trtb"))
    assert result.report.mxnet_ops == 0, result.report.to_text()
    (local,) = [c for c in result.checks if c.scope == "local" and c.name == "argsort0_output"]
    assert result.manifest["stages"][1]["kind"] == "onnx"
    assert local.ok and local.tie_order and "ties in another order" in local.note

    graph = load_graph(tmp_path / "ties-symbol.json", tmp_path / "ties-0000.params",
                       {"data": (1, 5000)})
    node = next(n for n in graph.op_nodes if n.op == "argsort")
    values = np.array([[3.0, 1.0, 3.0, 2.0, 1.0]], np.float32)
    mxnet_order = np.array([[0, 2, 3, 1, 4]], np.float32)  # descending
    assert _same_selection(node, 0, values, np.array([[2, 0, 3, 4, 1]], np.float32), mxnet_order)
    for wrong in ([[0, 2, 1, 3, 4]], [[0, 0, 3, 1, 4]], [[0, 2, 3, 1, 5]], [[0, 2, 3, 1, 4.5]]):
        assert not _same_selection(node, 0, values, np.array(wrong, np.float32), mxnet_order)
