"""Tiny real models for the hardening tests: a few Gluon layers exported with seeded weights and
compiled by the real compiler, so loading and running one takes milliseconds.

``tiny``   one input ``data`` 1x3x16x16: conv-relu-conv-relu-conv, one engine.
``pair``   two inputs ``a`` and ``b`` 1x3x8x8: conv(a)+conv(b), relu, conv, relu, BatchNorm, conv,
           relu, conv. Compiled with ``exclude_ops=("BatchNorm",)`` it has every kind of bundle
           member: two engines (plan + ONNX each), a residual MXNet stage and its params (.npz).

The test files share one cache per process (``bundle()``), so each model is compiled once per run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

__all__ = ["MODELS", "export", "export_block", "bundle", "random_feeds"]

# name -> input name -> shape
MODELS: Dict[str, Dict[str, Tuple[int, ...]]] = {
    "tiny": {"data": (1, 3, 16, 16)},
    "pair": {"a": (1, 3, 8, 8), "b": (1, 3, 8, 8)},
    "wide": {"data": (1, 256)},  # 1 MB of weights: the plan of a weight-stripped engine shows it
}

_EXPORTED: Dict[Tuple[str, str], Path] = {}
_COMPILED: Dict[Tuple[str, Tuple[str, ...]], Path] = {}
_DIRS: Dict[str, Path] = {}


def _net(name: str) -> Any:
    import mxnet as mx
    from mxnet.gluon import HybridBlock, nn

    if name == "tiny":
        net = nn.HybridSequential(prefix="tiny_")
        with net.name_scope():
            net.add(nn.Conv2D(8, 3, padding=1), nn.Activation("relu"),
                    nn.Conv2D(8, 3, padding=1), nn.Activation("relu"), nn.Conv2D(4, 1))
        return net
    if name == "wide":
        net = nn.HybridSequential(prefix="wide_")
        with net.name_scope():
            net.add(nn.Dense(512, activation="relu"), nn.Dense(256))
        return net

    class Pair(HybridBlock):
        def __init__(self) -> None:
            super().__init__(prefix="pair_")
            with self.name_scope():
                self.conv_a = nn.Conv2D(8, 3, padding=1)
                self.conv_b = nn.Conv2D(8, 3, padding=1)
                self.conv1 = nn.Conv2D(8, 3, padding=1)
                self.norm = nn.BatchNorm()
                self.conv2 = nn.Conv2D(8, 1)
                self.conv3 = nn.Conv2D(4, 1)

        def hybrid_forward(self, F: Any, a: Any, b: Any) -> Any:
            x = F.relu(self.conv_a(a) + self.conv_b(b))
            # BatchNorm after the relu, not right after a conv: MXNet's oneDNN backend would fuse
            # conv+BatchNorm and hide the conv's own output, a tensor the accuracy gate compares.
            x = self.norm(F.relu(self.conv1(x)))
            return self.conv3(F.relu(self.conv2(x)))

    assert name == "pair", name
    mx.random.seed(0)
    return Pair()


def export_block(block: Any, out_dir: Path, name: str, *shapes: Tuple[int, ...]) -> Path:
    """A hand-written Gluon block as a user exports it: ``mx.random.seed(0)``, Xavier weights,
    hybridized, one forward on zeros of ``shapes`` (one per input), ``HybridBlock.export`` (its
    inputs named ``data`` or ``data0``, ``data1``, ...). Returns ``NAME-0000.params``."""
    import mxnet as mx

    mx.random.seed(0)
    block.initialize(mx.init.Xavier())
    block.hybridize()
    block(*[mx.nd.zeros(s) for s in shapes])
    block.export(str(Path(out_dir) / name))
    return Path(out_dir) / f"{name}-0000.params"


def export(name: str, out_dir: Path) -> Path:
    """Export model ``name`` into ``out_dir``; returns the ``NAME-0000.params`` path."""
    key = (name, str(out_dir))
    if key in _EXPORTED:
        return _EXPORTED[key]
    import pytest  # a machine without MXNet (the GPU machine) skips what needs these models

    mx = pytest.importorskip("mxnet", reason="making the test models needs MXNet")

    from trtc.zoo import randomize, record_input_shapes

    shapes = MODELS[name]
    mx.random.seed(0)
    net = _net(name)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    zeros = [mx.nd.zeros(s) for s in shapes.values()]
    net(*zeros)
    randomize(net, seed=0)
    net(*zeros)
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / name
    net.export(str(prefix), epoch=0)
    symbol = Path(f"{prefix}-symbol.json")
    if name == "pair":  # Gluon names the inputs data0, data1; give them real names
        text = symbol.read_text().replace('"data0"', '"a"').replace('"data1"', '"b"')
        symbol.write_text(text)
    record_input_shapes(symbol, shapes)
    _EXPORTED[key] = Path(f"{prefix}-0000.params")
    return _EXPORTED[key]


def bundle(name: str, tmp_path_factory: Any, exclude_ops: Tuple[str, ...] = (),
           residual: str = "mxnet") -> Path:
    """Compile model ``name`` once per process (real compiler, TensorRT-RTX builder).

    Args:
        name: a key of MODELS.
        tmp_path_factory: pytest's session fixture; the first call makes the directory.
        exclude_ops: MXNet ops kept out of engines.
        residual: where they run: 'mxnet' (MXNet stages: what the residual-stage tests need)
            or 'onnxruntime' (ONNX Runtime stages, the compiler's default).
    """
    key = (name, tuple(exclude_ops), residual)
    if key not in _COMPILED:
        from trtc import CompileSettings, compile

        if "dir" not in _DIRS:
            _DIRS["dir"] = Path(tmp_path_factory.mktemp("tiny"))
        out_dir = _DIRS["dir"]
        params = export(name, out_dir)
        suffix = "-" + "-".join(exclude_ops).lower() + f"-{residual}" if exclude_ops else ""
        out = out_dir / f"{name}{suffix}.trtb"
        compile(CompileSettings(params=params, output=out, exclude_ops=tuple(exclude_ops),
                                residual=residual))
        _COMPILED[key] = out
    return _COMPILED[key]


def random_feeds(name: str, seed: int = 0) -> Dict[str, np.ndarray]:
    """Seeded float32 inputs for model ``name``."""
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in MODELS[name].items()}
