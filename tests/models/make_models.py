"""Tiny test models exported with seeded random weights (real MXNet, like `trtc example`)."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import mxnet as mx
from mxnet.gluon import HybridBlock, nn

from trtc.zoo import randomize, record_input_shapes, save_block

from . import custom_ops  # noqa: F401  registers trtc_scale_shift


class CustomOpNet(HybridBlock):
    """conv-bn-relu-conv -> Python CustomOp -> conv-relu-conv -> dense: engine, MXNet, engine."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.head = nn.HybridSequential()
            self.head.add(nn.Conv2D(8, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"),
                          nn.Conv2D(8, 3, padding=1))
            self.tail = nn.HybridSequential()
            self.tail.add(nn.Conv2D(16, 3, padding=1), nn.Activation("relu"),
                          nn.Conv2D(16, 3, strides=2), nn.Activation("relu"), nn.Dense(10))

    def hybrid_forward(self, F, x):
        y = self.head(x)
        y = F.Custom(y, op_type="trtc_scale_shift")
        return self.tail(y)


class RandomOpNet(HybridBlock):
    """conv -> + 0 * uniform noise (``_random_uniform_like``) -> conv: a random op whose draws do
    not reach the output, so MXNet and trtc agree; it must run in MXNet."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.head = nn.HybridSequential()
            self.head.add(nn.Conv2D(8, 3, padding=1), nn.Activation("relu"), nn.Conv2D(8, 1))
            self.tail = nn.HybridSequential()
            self.tail.add(nn.Conv2D(8, 3, padding=1), nn.Activation("relu"), nn.Conv2D(4, 1))

    def hybrid_forward(self, F, x):
        y = self.head(x)
        return self.tail(y + 0 * F.random.uniform_like(y))


class TinyNet(HybridBlock):
    """A few convolutions: small and fast, for fuzzing and concurrency tests."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.body = nn.HybridSequential()
            self.body.add(nn.Conv2D(4, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"),
                          nn.Conv2D(4, 3, padding=1), nn.Activation("relu"),
                          nn.GlobalAvgPool2D(), nn.Flatten(), nn.Dense(5))

    def hybrid_forward(self, F, x):
        return self.body(x)


def export(net: HybridBlock, name: str, out_dir: Path, shape: Tuple[int, ...],
           seed: int = 0) -> Path:
    """Initialize with seeded random weights, export, record the input shape; return params."""
    mx.random.seed(seed)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros(shape))
    randomize(net, seed)
    symbol_path, params_path = save_block(net, Path(out_dir) / name)
    record_input_shapes(symbol_path, {"data": shape})
    return params_path


def make_custom_op_net(out_dir: Path) -> Path:
    return export(CustomOpNet(), "customop_net", out_dir, (1, 3, 16, 16))


def make_random_op_net(out_dir: Path) -> Path:
    return export(RandomOpNet(), "random_net", out_dir, (1, 3, 16, 16))


def make_tiny_net(out_dir: Path) -> Path:
    return export(TinyNet(), "tiny_net", out_dir, (1, 3, 8, 8))
