"""Gluon recurrent layers (issue 22): MXNet's fused ``RNN`` op (LSTM, GRU, vanilla RNN with tanh
or relu) is exported by trtc's own converter (trtc/converters.py ``convert_rnn``) to ONNX
LSTM/GRU/RNN nodes, which TensorRT-RTX's parser takes: a Gluon RNN model compiles to engines
with no MXNet stage and matches MXNet. With its default begin state Gluon writes
``_zeros(shape=(L, 0, H))`` (its 0 filled in by MXNet from the batch): the converter leaves that
state out (ONNX's default is zeros). Real MXNet, TensorRT-RTX and ONNX Runtime; no mocks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import onnxruntime as ort
import pytest

from models.tiny import export_block
from trtc import CompileSettings, compile
from trtc.converters import ONNX_OPS_USED
from trtc.frontend import load_graph, resolve_model_files
from trtc.runtime import load
from trtc.verify import mxnet_forward

mx = pytest.importorskip("mxnet")

RTOL, ATOL = 1e-4, 1e-5  # float32 recurrences of <= 20 steps: ONNX Runtime vs MXNet ~1e-6


# ----------------------------------------------------------------------------------------------
# the converter alone: ONNX Runtime on its ONNX vs mx.nd.RNN, random weights
# ----------------------------------------------------------------------------------------------
def _rnn_symbol(mode: str, layers: int, bidirectional: bool, hidden: int, begin: str,
                state_outputs: bool) -> Any:
    """RNN(data, parameters, state[, state_cell]); ``begin``: 'input' (model inputs h0/c0),
    'zeros' (Gluon's ``_zeros(shape=(L*D, 0, H))``) or 'const' (non-zero weights h0/c0)."""
    states = ["h0", "c0"] if mode == "lstm" else ["h0"]
    rows = layers * (2 if bidirectional else 1)
    if begin == "zeros":
        args = [mx.sym.zeros((rows, 0, hidden), name=f"{s}_zeros") for s in states]
    else:
        args = [mx.sym.var(s) for s in states]
    return mx.sym.RNN(mx.sym.var("data"), mx.sym.var("rnn_parameters"), *args, mode=mode,
                      state_size=hidden, num_layers=layers, bidirectional=bidirectional,
                      state_outputs=state_outputs, name="rnn")


def _onnx_outputs(tmp_path: Path, symbol: Any, weights: Dict[str, np.ndarray],
                  feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
    """Export ``symbol`` with trtc's converters (trtc.export's export context) and run it in
    ONNX Runtime; outputs in the symbol's order (mx2onnx names them rnn, rnn1, rnn2)."""
    import mxnet.onnx as mx_onnx

    from trtc.export import _provenance

    path = tmp_path / "rnn.onnx"
    with _provenance() as state:
        mx_onnx.export_model(symbol, {k: mx.nd.array(v) for k, v in weights.items()},
                             in_shapes=[feeds[n].shape for n in feeds],
                             in_types=[np.float32] * len(feeds), onnx_file_path=str(path))
    assert state["failed"] is None and not state["unfaithful"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = {n.op_type for n in _onnx_nodes(path) if n.doc_string == "mxnet:rnn"}
    assert {symbol.attr("mode").split("_")[0].upper()} <= ours <= ONNX_OPS_USED
    names = ["rnn", "rnn1", "rnn2"][:len(symbol.list_outputs())]
    return session.run(names, feeds)


def _onnx_nodes(path: Path) -> List[Any]:
    import onnx

    return list(onnx.load(str(path)).graph.node)


CONVERTER_CASES = [
    # mode, layers, bidirectional, begin state, state_outputs
    ("lstm", 1, False, "input", True),
    ("lstm", 2, True, "input", True),
    ("lstm", 3, False, "zeros", True),
    ("lstm", 2, True, "const", False),
    ("gru", 1, False, "input", True),
    ("gru", 2, True, "input", True),
    ("gru", 3, True, "zeros", False),
    ("rnn_tanh", 2, False, "input", True),
    ("rnn_tanh", 1, True, "const", True),
    ("rnn_relu", 1, False, "zeros", True),
    ("rnn_relu", 3, True, "input", True),
]


@pytest.mark.parametrize("mode,layers,bidirectional,begin,state_outputs", CONVERTER_CASES)
def test_rnn_converter_matches_mxnet(tmp_path: Path, mode: str, layers: int,
                                     bidirectional: bool, begin: str,
                                     state_outputs: bool) -> None:
    """Random weights (every gate different), random begin states: a wrong gate order, weight
    block, bias half, direction or layer wiring would not match."""
    seq, batch, features, hidden = 7, 3, 5, 6
    rng = np.random.default_rng(sum(map(ord, f"{mode}{layers}{bidirectional}{begin}")))
    symbol = _rnn_symbol(mode, layers, bidirectional, hidden, begin, state_outputs)
    shapes = dict(zip(symbol.list_arguments(),
                      symbol.infer_shape_partial(data=(seq, batch, features))[0]))
    values = {name: (rng.standard_normal(shape) * 0.4).astype(np.float32)
              for name, shape in shapes.items()}
    feeds = {n: values[n] for n in symbol.list_arguments()
             if n == "data" or (begin == "input" and n in ("h0", "c0"))}
    weights = {n: v for n, v in values.items() if n not in feeds}
    got = _onnx_outputs(tmp_path, symbol, weights, feeds)

    rows = layers * (2 if bidirectional else 1)
    states = [np.zeros((rows, batch, hidden), np.float32) if begin == "zeros" else values[s]
              for s in (["h0", "c0"] if mode == "lstm" else ["h0"])]
    want = mx.nd.RNN(mx.nd.array(values["data"]), mx.nd.array(values["rnn_parameters"]),
                     *[mx.nd.array(s) for s in states], mode=mode, state_size=hidden,
                     num_layers=layers, bidirectional=bidirectional, state_outputs=state_outputs)
    want = [w.asnumpy() for w in (want if isinstance(want, list) else [want])]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("attrs,reason", [
    (dict(use_sequence_length=True), "use_sequence_length"),
    (dict(projection_size=4), "projection_size"),
    (dict(lstm_state_clip_min=-1.0, lstm_state_clip_max=1.0), "lstm_state_clip"),
])
def test_rnn_converter_refuses_what_onnx_cannot_express(tmp_path: Path, attrs: Dict[str, Any],
                                                        reason: str) -> None:
    import mxnet.onnx as mx_onnx

    from trtc.export import _provenance

    inputs = [mx.sym.var(n) for n in ("data", "rnn_parameters", "h0", "c0")]
    if attrs.get("use_sequence_length"):
        inputs.append(mx.sym.var("lengths"))
    symbol = mx.sym.RNN(*inputs, mode="lstm", state_size=6, num_layers=1, state_outputs=True,
                        name="rnn", **attrs)
    shapes = dict(zip(symbol.list_arguments(), symbol.infer_shape_partial(
        data=(7, 3, 5), h0=(1, 3, attrs.get("projection_size", 6)), c0=(1, 3, 6))[0]))
    params = {"rnn_parameters": mx.nd.zeros(shapes["rnn_parameters"])}
    feeds = [n for n in symbol.list_arguments() if n not in params]
    with _provenance() as state, pytest.raises(NotImplementedError, match=reason):
        mx_onnx.export_model(symbol, params, in_shapes=[shapes.get(n, (3,)) for n in feeds],
                             in_types=[np.float32] * len(feeds),
                             onnx_file_path=str(tmp_path / "rnn.onnx"))
    assert state["failed"] == "rnn"


# ----------------------------------------------------------------------------------------------
# whole Gluon models: compiled with the default command, no MXNet stage, bundle vs MXNet
# ----------------------------------------------------------------------------------------------
def _layer(kind: str, hidden: int, layers: int, bidirectional: bool, layout: str) -> Any:
    from mxnet import gluon

    common = dict(num_layers=layers, bidirectional=bidirectional, layout=layout)
    if kind == "lstm":
        return gluon.rnn.LSTM(hidden, **common)
    if kind == "gru":
        return gluon.rnn.GRU(hidden, **common)
    return gluon.rnn.RNN(hidden, activation=kind.split("_")[1], **common)


def _sequential(layer: Any) -> Any:
    """layer -> Dense -> tanh: with TNC (no swapaxes) still 3 ops, trtc's minimum engine size."""
    from mxnet import gluon

    net = gluon.nn.HybridSequential()
    net.add(layer, gluon.nn.Dense(10, flatten=False), gluon.nn.Activation("tanh"))
    return net


def _with_states(layer: Any) -> Any:
    """A block taking ``(data, *begin_states)`` and returning ``(tanh(dense(out)), *end_states)``:
    the begin states are model inputs and the RNN's state outputs model outputs."""
    from mxnet import gluon

    class WithStates(gluon.HybridBlock):
        def __init__(self) -> None:
            super().__init__()
            with self.name_scope():
                self.rnn = layer
                self.out = gluon.nn.Dense(10, flatten=False)

        def hybrid_forward(self, F: Any, x: Any, *begin: Any) -> Any:
            y, end = self.rnn(x, list(begin))
            return (F.tanh(self.out(y)), *end)

    return WithStates()


def _compile_and_compare(params: Path, inputs: Dict[str, Any], tmp_path: Path,
                         samples: Optional[List[Dict[str, Tuple[int, ...]]]] = None,
                         feeds: Optional[Callable[..., Dict[str, np.ndarray]]] = None,
                         rnn_stage: str = "engine", **settings: Any) -> Any:
    """Compile with the default command (plus ``settings``); assert that the RNN(s) run in
    ``rnn_stage`` stages and, unless that is 'residual', that nothing runs in MXNet; compare the
    bundle's CPU path (ONNX Runtime on the engines' ONNX, MXNet stages) with MXNet."""
    result = compile(CompileSettings(params=params, inputs=inputs,
                                     output=tmp_path / "model.trtb", **settings))
    report, manifest = result.report, result.manifest
    if rnn_stage != "residual":
        assert report.mxnet_ops == 0 and not manifest["requires"]["mxnet"], report.to_text()
    assert all(c.ok or not c.blocking for c in result.checks)
    rnn_stages = [s["kind"] for s in manifest["stages"] if "RNN" in s["op_types"]]
    assert rnn_stages and set(rnn_stages) == {rnn_stage}, report.to_text()

    rng = np.random.default_rng(3)
    model = load(result.output, device="cpu")
    for shapes in samples or [{n: s for n, s in inputs.items()}]:
        graph = load_graph(*resolve_model_files(params), shapes)
        data = (feeds(rng, shapes) if feeds else
                {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()})
        reference = mxnet_forward(graph, data, graph.outputs)
        out = model(**data)
        for name in graph.outputs:
            np.testing.assert_allclose(out[name], reference[name], rtol=RTOL, atol=ATOL)
    return result


GLUON_CASES = [
    # kind, layers, bidirectional, layout
    ("lstm", 2, False, "NTC"),
    ("lstm", 3, True, "TNC"),
    ("gru", 1, False, "NTC"),
    ("gru", 2, True, "NTC"),
    ("rnn_tanh", 1, False, "NTC"),
    ("rnn_relu", 2, True, "TNC"),
]


@pytest.mark.parametrize("kind,layers,bidirectional,layout", GLUON_CASES)
def test_gluon_rnn_with_its_default_begin_state_runs_in_an_engine(
        kind: str, layers: int, bidirectional: bool, layout: str, tmp_path: Path) -> None:
    net = _sequential(_layer(kind, 24, layers, bidirectional, layout))
    shape = (2, 12, 16) if layout == "NTC" else (12, 2, 16)
    params = export_block(net, tmp_path, kind, shape)
    _compile_and_compare(params, {"data": shape}, tmp_path)


@pytest.mark.parametrize("kind,layers,bidirectional,layout", [
    ("lstm", 2, True, "NTC"),
    ("gru", 1, False, "TNC"),
    ("rnn_relu", 3, False, "NTC"),
])
def test_gluon_rnn_with_explicit_begin_states_runs_in_an_engine(
        kind: str, layers: int, bidirectional: bool, layout: str, tmp_path: Path) -> None:
    """Begin states as model inputs (wired to ONNX initial_h/initial_c, sliced per layer) and
    end states as model outputs (ONNX Y_h/Y_c, concatenated over layers)."""
    states = 2 if kind == "lstm" else 1
    net = _with_states(_layer(kind, 16, layers, bidirectional, layout))
    data = (2, 8, 12) if layout == "NTC" else (8, 2, 12)
    state = (layers * (2 if bidirectional else 1), 2, 16)
    params = export_block(net, tmp_path, kind, data, *[state] * states)
    inputs = {"data0": data, **{f"data{i + 1}": state for i in range(states)}}
    result = _compile_and_compare(params, inputs, tmp_path)
    assert len(result.manifest["outputs"]) == 1 + states


def test_gluon_lstm_with_a_dynamic_batch_runs_in_an_engine(tmp_path: Path) -> None:
    """A batch range: Gluon's begin state stays ``_zeros(shape=(L, 0, H))`` (not folded); the
    converter leaves it out, so no batch-dependent shape is computed. The NTC layout's two
    SwapAxis are plain Transposes (trtc knows their rank; mxnet.onnx's rank-8 shape arithmetic
    kept them out of the engine): the whole model is one engine."""
    net = _sequential(_layer("lstm", 24, 2, True, "NTC"))
    params = export_block(net, tmp_path, "lstm", (2, 12, 16))
    result = _compile_and_compare(params, {"data": ((1, 4), 12, 16)}, tmp_path,
                                  samples=[{"data": (b, 12, 16)} for b in (1, 3, 4)])
    assert [s["kind"] for s in result.manifest["stages"]] == ["engine"], result.report.to_text()


def test_rnn_state_outputs_of_a_segment_exported_alone(tmp_path: Path) -> None:
    """trtc's fallback export of one segment (onnx_from_segment) finds the RNN's state outputs
    under mx2onnx's names (``<node>1``, ``<node>2``), not ``<node>_state``."""
    from trtc.export import onnx_from_segment
    from trtc.partition import describe_nodes

    zero = mx.sym.var("w", shape=(1,))
    data, h0, c0 = (mx.sym.broadcast_add(mx.sym.var(n), zero, name=n + "_plus_w")
                    for n in ("data", "h0", "c0"))
    symbol = mx.sym.RNN(data, mx.sym.var("p"), h0, c0, mode="lstm", state_size=6,
                        num_layers=2, state_outputs=True, name="rnn")
    symbol.save(str(tmp_path / "m-symbol.json"))
    rng = np.random.default_rng(0)
    flat = (rng.standard_normal(4 * 6 * (5 + 6 + 2) + 4 * 6 * (6 + 6 + 2)) * 0.4).astype(np.float32)
    mx.nd.save(str(tmp_path / "m-0000.params"), {"arg:w": mx.nd.zeros((1,)),
                                                 "arg:p": mx.nd.array(flat)})
    shapes = {"data": (7, 3, 5), "h0": (2, 3, 6), "c0": (2, 3, 6)}
    graph = load_graph(tmp_path / "m-symbol.json", tmp_path / "m-0000.params", shapes)
    segment = describe_nodes(graph, [n.index for n in graph.op_nodes if n.op == "RNN"], "engine")
    assert len(segment.outputs) == 3
    exported = onnx_from_segment(graph, segment)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    session = ort.InferenceSession(exported.onnx_bytes, providers=["CPUExecutionProvider"])
    got = session.run(segment.outputs, {f"{n}_plus_w_output": a for n, a in feeds.items()})
    want = mx.nd.RNN(*(mx.nd.array(a) for a in (feeds["data"], flat, feeds["h0"], feeds["c0"])),
                     mode="lstm", state_size=6, num_layers=2, state_outputs=True)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.asnumpy(), rtol=RTOL, atol=ATOL)


def test_an_rnn_kept_out_of_engines_runs_in_onnx_runtime(tmp_path: Path) -> None:
    """Where TensorRT does not take it (here: --exclude-op RNN), the RNN's exact ONNX runs in an
    ONNX Runtime stage, not in MXNet."""
    net = _sequential(_layer("gru", 24, 2, True, "NTC"))
    params = export_block(net, tmp_path, "gru", (2, 12, 16))
    _compile_and_compare(params, {"data": (2, 12, 16)}, tmp_path, rnn_stage="onnx",
                         exclude_ops=("RNN",))


def test_lstm_with_projection_stays_in_mxnet_with_its_reason(tmp_path: Path) -> None:
    """LSTMP (projection_size) has no ONNX form: the converter refuses it, the op runs in MXNet
    and the report says why."""
    from mxnet import gluon

    net = _sequential(gluon.rnn.LSTM(24, projection_size=8, layout="NTC"))
    params = export_block(net, tmp_path, "lstmp", (2, 12, 16))
    result = _compile_and_compare(params, {"data": (2, 12, 16)}, tmp_path, rnn_stage="residual")
    (decision,) = [d for d in result.report.decisions if d.op == "RNN"]
    assert "projection_size" in decision.message, result.report.to_text()


# ----------------------------------------------------------------------------------------------
# application models written with Gluon blocks (GluonNLP style)
# ----------------------------------------------------------------------------------------------
def test_lstm_language_model_runs_in_an_engine(tmp_path: Path, runtime_python,
                                               run_in_runtime_venv) -> None:
    """GluonNLP's StandardRNN language model, by hand: Embedding -> dropout -> 2-layer LSTM (TNC)
    -> dropout -> Dense over the vocabulary; the begin state is an input and the end state an
    output, as a language model is stepped through a text. The bundle runs the same in a
    runtime-only venv on Python 3.12 with numpy 2 (no MXNet there)."""
    from mxnet import gluon

    vocab, embed, hidden, layers = 50, 32, 48, 2

    class LanguageModel(gluon.HybridBlock):
        def __init__(self) -> None:
            super().__init__()
            with self.name_scope():
                self.embedding = gluon.nn.Embedding(vocab, embed)
                self.drop = gluon.nn.Dropout(0.2)
                self.encoder = gluon.rnn.LSTM(hidden, num_layers=layers, dropout=0.2,
                                              input_size=embed, layout="TNC")
                self.decoder = gluon.nn.Dense(vocab, flatten=False, in_units=hidden)

        def hybrid_forward(self, F: Any, tokens: Any, h: Any, c: Any) -> Any:
            out, (h, c) = self.encoder(self.drop(self.embedding(tokens)), [h, c])
            return self.decoder(self.drop(out)), h, c

    seq, batch = 16, 2
    state = (layers, batch, hidden)
    params = export_block(LanguageModel(), tmp_path, "lm", (seq, batch), state, state)
    result = _compile_and_compare(
        params, {"data0": (seq, batch), "data1": state, "data2": state}, tmp_path,
        feeds=lambda rng, shapes: {
            "data0": rng.integers(0, vocab, shapes["data0"]).astype(np.float32),
            "data1": rng.standard_normal(state).astype(np.float32),
            "data2": rng.standard_normal(state).astype(np.float32)})
    rng = np.random.default_rng(5)
    feeds = {"data0": rng.integers(0, vocab, (seq, batch)).astype(np.float32),
             "data1": rng.standard_normal(state).astype(np.float32),
             "data2": rng.standard_normal(state).astype(np.float32)}
    here = load(result.output, device="cpu")(**feeds)
    there = run_in_runtime_venv(runtime_python("3.12"), result.output, feeds)
    assert list(there) == list(here)
    for key, value in here.items():
        np.testing.assert_allclose(there[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_bidirectional_gru_text_classifier_runs_in_an_engine(tmp_path: Path) -> None:
    """Embedding -> bidirectional GRU (NTC, default begin state) -> mean over time -> Dense."""
    from mxnet import gluon

    vocab, seq, batch = 60, 20, 2

    class Classifier(gluon.HybridBlock):
        def __init__(self) -> None:
            super().__init__()
            with self.name_scope():
                self.embedding = gluon.nn.Embedding(vocab, 24)
                self.encoder = gluon.rnn.GRU(32, bidirectional=True, layout="NTC")
                self.output = gluon.nn.Dense(3)

        def hybrid_forward(self, F: Any, tokens: Any) -> Any:
            return self.output(F.mean(self.encoder(self.embedding(tokens)), axis=1))

    params = export_block(Classifier(), tmp_path, "cls", (batch, seq))
    _compile_and_compare(params, {"data": (batch, seq)}, tmp_path, feeds=lambda rng, shapes: {
        "data": rng.integers(0, vocab, shapes["data"]).astype(np.float32)})
