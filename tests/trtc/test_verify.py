"""The accuracy gate's fp64 cross-check (real MXNet): a tensor that fails against MXNet's fp32
forward only because the model is ill-conditioned passes; a wrong result still fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trtc.frontend import load_graph
from trtc.verify import compare, mxnet_forward, random_inputs, recheck_in_fp64


def _ill_conditioned(tmp_path: Path):
    """data(1x32) -> FC(256, weights ~1e3) -> FC(16) whose bias cancels its ~1e5 sums to O(1)
    for the verification input -> sigmoid. fp32 rounding of the big sums moves the sigmoid."""
    import mxnet as mx

    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 1e3, (256, 32))
    w2 = rng.normal(0, 1, (16, 256))
    data = mx.sym.var("data", shape=(1, 32))
    hidden = mx.sym.FullyConnected(data, num_hidden=256, no_bias=True, name="fc1")
    logits = mx.sym.FullyConnected(hidden, num_hidden=16, name="fc2")
    symbol = mx.sym.sigmoid(logits, name="out")
    symbol_path, params_path = tmp_path / "ill-symbol.json", tmp_path / "ill-0000.params"
    symbol.save(str(symbol_path))
    graph0_params = {"arg:fc1_weight": w1, "arg:fc2_weight": w2, "arg:fc2_bias": np.zeros(16)}
    mx.nd.save(str(params_path), {k: mx.nd.array(v, dtype="float32") for k, v in graph0_params.items()})
    graph = load_graph(symbol_path, params_path, {"data": (1, 32)})
    feeds = random_inputs(graph, 0)
    exact = feeds["data"].astype(np.float64) @ graph.params["arg:fc1_weight"].T.astype(np.float64)
    exact = exact @ graph.params["arg:fc2_weight"].T.astype(np.float64)
    bias = -exact[0] + rng.normal(0, 1, 16)  # pre-sigmoid values O(1), sums O(1e5)
    mx.nd.save(str(params_path), {**{k: mx.nd.array(v, dtype="float32") for k, v in graph0_params.items()
                                     if k != "arg:fc2_bias"},
                                  "arg:fc2_bias": mx.nd.array(bias, dtype="float32")})
    return load_graph(symbol_path, params_path, {"data": (1, 32)}), feeds


def test_fp64_forward_runs_in_float64(tmp_path):
    graph, feeds = _ill_conditioned(tmp_path)
    out = mxnet_forward(graph, feeds, float64=True)[graph.outputs[0]]
    assert out.dtype == np.float64 and out.shape == (1, 16)


def test_ill_conditioned_fp32_differences_are_told_apart_from_wrong_results(tmp_path):
    graph, feeds = _ill_conditioned(tmp_path)
    name = graph.outputs[0]
    fp32 = mxnet_forward(graph, feeds)
    exact = mxnet_forward(graph, feeds, float64=True)
    # the premise: MXNet's own fp32 result is far from its fp64 result on this model
    assert np.abs(fp32[name] - exact[name]).max() > 1e-3

    # an fp32 implementation that rounds better than MXNet: fails against fp32, passes in fp64
    good = {name: exact[name].astype(np.float32)}
    checks = compare(good, fp32, 1e-4)
    assert not checks[0].ok
    recheck_in_fp64(graph, feeds, checks, good, fp32)
    assert checks[0].fp64 is not None and checks[0].ok
    assert "ill-conditioned" in checks[0].note

    # a wrong result stays wrong
    bad = {name: (exact[name] + 0.3).astype(np.float32)}
    checks = compare(bad, fp32, 1e-4)
    recheck_in_fp64(graph, feeds, checks, bad, fp32)
    assert checks[0].fp64 is not None and not checks[0].ok
    assert checks[0].fp64[0] > 0.2


def test_passing_checks_are_not_rechecked(tmp_path):
    graph, feeds = _ill_conditioned(tmp_path)
    fp32 = mxnet_forward(graph, feeds)
    checks = compare(fp32, fp32, 1e-4)
    recheck_in_fp64(graph, feeds, checks, fp32, fp32)
    assert checks[0].ok and checks[0].fp64 is None and checks[0].note == ""


def test_non_finite_entries_must_match_exactly():
    ref = np.array([1.0, np.nan, np.inf, -np.inf, 2.0], dtype=np.float32)
    same = compare({"y": ref.copy()}, {"y": ref}, 1e-4)[0]
    assert same.ok and same.relative == 0.0  # NaN and inf in the same places, both kinds
    for wrong in ([1.0, 0.0, np.inf, -np.inf, 2.0], [1.0, np.nan, -np.inf, -np.inf, 2.0],
                  [np.nan, np.nan, np.inf, -np.inf, 2.0], [1.0, np.nan, np.inf, -np.inf, np.inf]):
        assert not compare({"y": np.array(wrong, np.float32)}, {"y": ref}, 1e-4)[0].ok, wrong
    assert not compare({"y": ref[:4]}, {"y": ref}, 1e-4)[0].ok


def test_take_in_clip_and_wrap_mode_takes_any_id(tmp_path):
    """``take``'s default mode 'clip' and its 'wrap' accept any id (MXNet clips or wraps it, so
    does mxnet.onnx's ONNX); the runtime refused ids outside the table as for an Embedding."""
    import mxnet as mx

    from models import tiny
    from trtc.api import compile as trtc_compile
    from trtc.runtime import load

    class Take(mx.gluon.HybridBlock):
        def hybrid_forward(self, F, x, ids):
            return F.take(x, ids, axis=1, mode="wrap") + 2 * F.take(x, ids, axis=1)

    params = tiny.export_block(Take(), tmp_path, "take", (3, 5, 4), (4,))
    bundle = tmp_path / "take.trtb"
    trtc_compile(params, output=bundle,
                 inputs={"data0": (3, 5, 4), "data1": (4,)}, input_dtypes={"data1": "int32"})
    model = load(bundle, device="cpu")
    assert "index_range" not in model.manifest["inputs"][1]
    x = np.random.default_rng(0).random((3, 5, 4), dtype=np.float32)
    ids = np.array([1, 8, -3, 4], np.int32)
    symbol = mx.sym.load(str(tmp_path / "take-symbol.json"))
    want = symbol.bind(mx.cpu(), {"data0": mx.nd.array(x),
                                  "data1": mx.nd.array(ids, dtype="int32")}).forward()[0]
    (got,) = model(data0=x, data1=ids).values()
    np.testing.assert_allclose(got, want.asnumpy(), rtol=1e-6)
