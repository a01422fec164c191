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
