"""`trtc example`: model zoo architectures with deterministic seeded random weights, exported as
``NAME-symbol.json`` + ``NAME-0000.params`` with each input's shape recorded in the symbol."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .runtime.errors import UsageError

__all__ = ["GLUON_MODELS", "EXTRA_MODELS", "GLUONCV_MODELS", "available_models", "export_example",
           "WaveNet"]

GLUON_MODELS = [
    "resnet18_v1", "resnet34_v1", "resnet50_v1", "resnet101_v1", "resnet152_v1",
    "resnet18_v2", "resnet34_v2", "resnet50_v2", "resnet101_v2", "resnet152_v2",
    "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
    "alexnet", "densenet121", "densenet161", "densenet169", "densenet201",
    "squeezenet1.0", "squeezenet1.1", "inceptionv3",
    "mobilenet1.0", "mobilenet0.75", "mobilenet0.5", "mobilenet0.25",
    "mobilenetv2_1.0", "mobilenetv2_0.75", "mobilenetv2_0.5", "mobilenetv2_0.25",
]
EXTRA_MODELS = ["wavenet"]
# GluonCV architectures known to build with random weights (needs `pip install gluoncv`).
GLUONCV_MODELS = {
    "yolo3_darknet53_voc": (1, 3, 512, 512),
    "yolo3_mobilenet1.0_voc": (1, 3, 416, 416),
    "ssd_512_resnet50_v1_voc": (1, 3, 512, 512),
    "ssd_300_vgg16_atrous_voc": (1, 3, 300, 300),
    "fcn_resnet50_voc": (1, 3, 480, 480),
    "deeplab_resnet50_ade": (1, 3, 480, 480),
    "simple_pose_resnet18_v1b": (1, 3, 256, 192),
    "center_net_resnet18_v1b_voc": (1, 3, 512, 512),
}


def available_models() -> List[str]:
    return GLUON_MODELS + EXTRA_MODELS + sorted(GLUONCV_MODELS)


def default_shape(name: str, batch: int = 1) -> Tuple[int, ...]:
    if name in GLUONCV_MODELS:
        shape = GLUONCV_MODELS[name]
    elif name == "inceptionv3":
        shape = (1, 3, 299, 299)
    elif name == "wavenet":
        shape = (1, 1, 1, 1024)
    else:
        shape = (1, 3, 224, 224)
    return (batch,) + tuple(shape[1:])


def _wavenet_class() -> Any:
    from mxnet.gluon import HybridBlock, nn

    class WaveNet(HybridBlock):
        """A compact WaveNet: causal dilated convolutions over time, gated tanh*sigmoid units,
        residual and skip connections (van den Oord et al., 2016). Audio is laid out as
        (batch, 1, 1, time) and convolved with (1, k) kernels: mxnet.onnx exports only 2-D/3-D
        convolution layouts."""

        def __init__(self, channels: int = 32, layers: int = 8, classes: int = 64,
                     length: int = 1024, **kwargs: Any):
            super().__init__(**kwargs)
            self.length = length
            self.dilations = [2 ** (i % 4) for i in range(layers)]
            with self.name_scope():
                self.stem = nn.Conv2D(channels, 1, in_channels=1)
                self.filters = nn.HybridSequential()
                self.gates = nn.HybridSequential()
                self.residuals = nn.HybridSequential()
                self.skips = nn.HybridSequential()
                for i, d in enumerate(self.dilations):
                    self.filters.add(nn.Conv2D(channels, (1, 2), dilation=(1, d), padding=(0, d), in_channels=channels))
                    self.gates.add(nn.Conv2D(channels, (1, 2), dilation=(1, d), padding=(0, d), in_channels=channels))
                    self.skips.add(nn.Conv2D(channels, 1, in_channels=channels))
                    if i + 1 < layers:  # the last layer's residual output would be unused
                        self.residuals.add(nn.Conv2D(channels, 1, in_channels=channels))
                self.post1 = nn.Conv2D(channels, 1, in_channels=channels)
                self.post2 = nn.Conv2D(classes, 1, in_channels=channels)

        def hybrid_forward(self, F: Any, x: Any) -> Any:
            x = self.stem(x)
            skip = None
            for i, d in enumerate(self.dilations):
                # causal: pad both sides by d, keep the first T outputs (drop the last d: the
                # same graph for any length T, so a bundle can take a range of lengths)
                f = F.slice_axis(self.filters[i](x), axis=3, begin=0, end=-d)
                g = F.slice_axis(self.gates[i](x), axis=3, begin=0, end=-d)
                z = F.tanh(f) * F.sigmoid(g)
                s = self.skips[i](z)
                skip = s if skip is None else skip + s
                if i + 1 < len(self.dilations):
                    x = x + self.residuals[i](z)
            y = self.post2(F.relu(self.post1(F.relu(skip))))
            return F.softmax(y, axis=1)

    return WaveNet


def WaveNet(**kwargs: Any) -> Any:  # noqa: N802 (a constructor)
    return _wavenet_class()(**kwargs)


def _build(name: str) -> Any:
    if name in GLUON_MODELS:
        from mxnet.gluon.model_zoo import vision

        return vision.get_model(name)
    if name == "wavenet":
        return WaveNet()
    if name in GLUONCV_MODELS:
        try:
            from gluoncv import model_zoo
        except ImportError:
            raise UsageError(f"model '{name}' needs GluonCV: pip install 'trtc[gluoncv]' "
                             "(with numpy pinned below 1.24)") from None
        kwargs = {"pretrained": False}
        if not name.startswith("simple_pose"):
            kwargs["pretrained_base"] = False
        return model_zoo.get_model(name, **kwargs)
    raise UsageError(f"unknown model '{name}'; choose one of: {', '.join(available_models())}")


def randomize(net: Any, seed: int) -> None:
    """Deterministic random weights, BatchNorm statistics included (so BN folding is exercised);
    constants (anchors, grid offsets) keep their values."""
    import mxnet as mx

    params = net.collect_params()
    rng = np.random.default_rng(seed)
    for name in sorted(params.keys()):
        p = params[name]
        if isinstance(p, mx.gluon.parameter.Constant):
            continue  # part of the architecture (e.g. YOLO's anchors and grid offsets)
        shape = p.shape
        if name.endswith(("running_var", "moving_var")):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("running_mean", "moving_mean", "beta", "bias")):
            value = rng.normal(0.0, 0.1, shape)
        elif name.endswith("gamma"):
            value = rng.uniform(0.8, 1.2, shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else max(int(shape[0]), 1)
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)  # He init keeps activations O(1)
        p.set_data(mx.nd.array(value.astype(np.float32)))


def normalize_activations(net: Any, shape: Tuple[int, ...], seed: int) -> None:
    """Rescale every convolution, dense and BatchNorm layer so its output has an RMS of 1 on a
    seeded random input (one imperative pass, LSUV-style).

    Random weights alone let activations grow with depth (residual adds double the variance; a
    random DarkNet-53 ends near 1e6), where fp32 rounding of MXNet itself swamps any comparison
    and exp() overflows. Trained models keep activations O(1); so do these."""
    import mxnet as mx
    from mxnet.gluon import nn
    from mxnet.gluon.nn.conv_layers import _Conv

    scaled: set = set()
    handles = []

    def hook(block: Any, _inputs: Any, output: Any) -> None:
        if not isinstance(output, mx.nd.NDArray) or id(block) in scaled:
            return
        names = ("gamma", "beta") if isinstance(block, nn.BatchNorm) else ("weight", "bias")
        if isinstance(block, nn.BatchNorm) and block._kwargs.get("fix_gamma", True):
            return  # gamma is ignored: the output cannot be rescaled through it
        params = [p for key, p in block.params.items() if key.rsplit("_", 1)[-1] in names]
        if any(p.name in scaled for p in params):
            return  # shared weights are scaled once
        rms = float(mx.nd.sqrt(mx.nd.mean(mx.nd.square(output))).asscalar())
        if not np.isfinite(rms) or rms < 1e-6:
            return
        for p in params:
            p.set_data(p.data() / rms)
            scaled.add(p.name)
        scaled.add(id(block))
        output[:] = output / rms  # later layers see the rescaled output in this same pass

    def attach(block: Any) -> None:
        if isinstance(block, (_Conv, nn.Dense, nn.BatchNorm)):
            handles.append(block.register_forward_hook(hook))

    net.apply(attach)
    net.hybridize(active=False)
    try:
        data = np.random.default_rng(seed).random(shape).astype(np.float32)
        net(mx.nd.array(data))
    finally:
        for handle in handles:
            handle.detach()
        net.hybridize()


def export_example(name: str, out_dir: "str | Path", batch: int = 1, seed: int = 0,
                   shape: Optional[Tuple[int, ...]] = None) -> Tuple[Path, Path]:
    """Write ``NAME-symbol.json`` + ``NAME-0000.params`` into ``out_dir``.

    Returns:
        (symbol path, params path).
    """
    import mxnet as mx

    if name not in available_models():
        raise UsageError(f"unknown model '{name}'; choose one of: {', '.join(available_models())}")
    if batch < 1:
        raise UsageError("--batch must be at least 1")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {out}: {exc.strerror}") from None
    shape = tuple(shape) if shape else default_shape(name, batch)
    mx.random.seed(seed)
    net = _build(name)
    # Any shape (Xavier refuses 1-D params without their own initializer, e.g. SSD-512's gamma);
    # randomize() overwrites every value afterwards.
    net.initialize(mx.init.Uniform(0.07), force_reinit=True)
    net.hybridize()
    try:
        for param in net.collect_params().values():
            param.data()
    except Exception:  # deferred initialization: one forward pass materializes the shapes
        net(mx.nd.zeros(shape))
    randomize(net, seed)
    normalize_activations(net, shape, seed)
    symbol_path, params_path = save_block(net, out / name)
    record_input_shapes(symbol_path, {"data": shape})
    return symbol_path, params_path


def save_block(net: Any, prefix: Path) -> Tuple[Path, Path]:
    """What HybridBlock.export writes (PREFIX-symbol.json, PREFIX-0000.params with arg:/aux:
    keys), from numpy copies: export() can fail on oneDNN-laid-out weights after a forward."""
    import mxnet as mx

    symbol = net(mx.sym.var("data"))
    if isinstance(symbol, (list, tuple)):
        symbol = mx.sym.Group(list(symbol))
    args, aux = set(symbol.list_arguments()), set(symbol.list_auxiliary_states())
    arrays = {}
    for name, param in net.collect_params().items():
        if name in args or name in aux:
            kind = "arg" if name in args else "aux"
            arrays[f"{kind}:{name}"] = mx.nd.array(param.data().asnumpy(), dtype=param.dtype)
    symbol_path, params_path = Path(f"{prefix}-symbol.json"), Path(f"{prefix}-0000.params")
    symbol.save(str(symbol_path))
    mx.nd.save(str(params_path), arrays)
    return symbol_path, params_path


def record_input_shapes(symbol_path: Path, shapes: Dict[str, Tuple[int, ...]]) -> None:
    """Record input shapes in the symbol as MXNet's ``__shape__`` variable attribute."""
    doc = json.loads(symbol_path.read_text(encoding="utf-8"))
    for node in doc["nodes"]:
        if node["op"] == "null" and node["name"] in shapes:
            node.setdefault("attrs", {})["__shape__"] = str(tuple(shapes[node["name"]]))
    symbol_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
