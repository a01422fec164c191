"""Gluon recurrent layers (issue 22 part 1): with their default begin state Gluon writes
``_zeros(shape=(L, 0, H))``, whose 0 MXNet fills in from the rest of the model; constant folding
evaluated that node alone and the compile died with exit 70. Every Gluon RNN layer now compiles
with the default command and matches MXNet. Real MXNet, TensorRT-RTX and ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trtc import CompileSettings, compile
from trtc.frontend import load_graph, resolve_model_files
from trtc.runtime import load
from trtc.verify import mxnet_forward

mx = pytest.importorskip("mxnet")


def _export(layer: Any, directory: Path, name: str, shape=(1, 12, 16)) -> Path:
    from mxnet import gluon

    mx.random.seed(0)
    net = gluon.nn.HybridSequential()
    net.add(layer, gluon.nn.Dense(10, flatten=False))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros(shape))
    net.export(str(directory / name))
    return directory / f"{name}-0000.params"


@pytest.mark.parametrize("kind", ["lstm", "gru", "bilstm", "rnn_tanh"])
def test_gluon_rnn_with_its_default_begin_state_compiles(kind: str, tmp_path: Path) -> None:
    from mxnet import gluon

    layer = {"lstm": lambda: gluon.rnn.LSTM(24, num_layers=2, layout="NTC"),
             "gru": lambda: gluon.rnn.GRU(24, layout="NTC"),
             "bilstm": lambda: gluon.rnn.LSTM(24, layout="NTC", bidirectional=True),
             "rnn_tanh": lambda: gluon.rnn.RNN(24, activation="tanh", layout="NTC")}[kind]()
    params = _export(layer, tmp_path, kind)
    result = compile(CompileSettings(params=params, inputs={"data": (1, 12, 16)},
                                     output=tmp_path / f"{kind}.trtb"))
    assert all(c.ok or not c.blocking for c in result.checks)
    graph = load_graph(*resolve_model_files(params), {"data": (1, 12, 16)})
    feeds = {"data": np.random.default_rng(3).random((1, 12, 16)).astype(np.float32)}
    reference = mxnet_forward(graph, feeds, graph.outputs)
    out = load(result.output, device="cpu")(**feeds)
    for name in graph.outputs:
        np.testing.assert_allclose(out[name], reference[name], rtol=1e-4, atol=1e-5)
