"""Model families from issue 10, exported with seeded ordinary initialization (no downloads).

Every ``export_<name>(out_dir)`` writes ``NAME-symbol.json`` + ``NAME-0000.params`` into
``out_dir`` and returns the params path. Each input's shape (``__shape__``) and dtype
(``__dtype__``, MXNet dtype codes: 0 float32, 4 int32, 6 int64) are recorded on its variable
node in the symbol, as ``trtc.zoo.record_input_shapes`` does for shapes.

Weights are what a user gets from ``net.initialize(mx.init.Xavier())`` (BERT: ``Normal(0.02)``,
BERT's own initializer range) after ``mx.random.seed(seed)`` / ``np.random.seed(seed)``: *not*
``trtc.zoo``'s randomize/normalize_activations rescaling. BatchNorm statistics keep their
initial values (mean 0, variance 1).

``bert``          GluonNLP ``bert_12_768_12`` (use_pooler, no decoder/classifier), seq 128.
``bert_small``    the same BERTModel with 2 layers, 128 units, 2 heads, vocab 1000: fast CI.
``bert_large``    GluonNLP ``bert_24_1024_16`` (24 layers, 1024 units, 16 heads), seq 128.
``mask_rcnn_r50`` GluonCV ``mask_rcnn_resnet50_v1b_coco``, 1x3x512x512 (``size`` picks another).
                  (These two are benchmarks/memory.py's, not in ``MODELS``: too big for the suite.)
``ssd_mobilenet`` GluonCV ``ssd_512_mobilenet1.0_voc``, 1x3x512x512.
``faster_rcnn``   GluonCV ``faster_rcnn_resnet50_v1b_voc``, 1x3x600x800.
``yolo3``         GluonCV ``yolo3_mobilenet1.0_voc``, 1x3x320x320.
``center_net``    GluonCV ``center_net_resnet18_v1b_voc``, 1x3x384x384.
``video``         GluonCV ``r2plus1d_resnet18_kinetics400``, 1x3x16x112x112 (segmental
                  consensus is a ``mean`` over axis 1, as in I3D).
``ops_block``     LayerNorm, ``mean``/``max`` over axes (keepdims both ways) and an Embedding over
                  int32 ids plus a float input.
``reused_block``  one child block called twice: the exported symbol has duplicate op node names.

``verify_inputs_<name>(seed)`` returns real-looking inputs (arrays by input name) where random
floats would not do: BERT's token ids, token types and valid lengths; the ops block's ids.

GluonNLP and GluonCV are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import numpy as np

__all__ = [
    "MODELS", "INPUTS", "DTYPE_CODES", "duplicate_node_names", "op_counts", "input_specs",
    "export_bert", "export_bert_small", "export_bert_large", "export_mask_rcnn_r50",
    "export_ssd_mobilenet", "export_faster_rcnn",
    "export_yolo3", "export_center_net",
    "export_video", "export_ops_block", "export_reused_block",
    "verify_inputs_bert", "verify_inputs_bert_small", "verify_inputs_ops_block",
    "random_inputs",
]

# MXNet's dtype codes, as written in a symbol's ``__dtype__`` attribute.
DTYPE_CODES = {"float32": 0, "float64": 1, "float16": 2, "uint8": 3, "int32": 4, "int8": 5,
               "int64": 6}

SEQ = 128
BERT_VOCAB = 30522  # bert_12_768_12's uncased vocabulary size
BERT_SMALL_VOCAB = 1000
BERT_SMALL_SEQ = 32

# name -> ordered input name -> (shape, dtype)
INPUTS: Dict[str, Dict[str, Tuple[Tuple[int, ...], str]]] = {
    "bert": {"inputs": ((1, SEQ), "int32"), "token_types": ((1, SEQ), "int32"),
             "valid_length": ((1,), "float32")},
    "bert_large": {"inputs": ((1, SEQ), "int32"), "token_types": ((1, SEQ), "int32"),
                   "valid_length": ((1,), "float32")},
    "mask_rcnn_r50": {"data": ((1, 3, 512, 512), "float32")},
    "bert_small": {"inputs": ((1, BERT_SMALL_SEQ), "int32"),
                   "token_types": ((1, BERT_SMALL_SEQ), "int32"),
                   "valid_length": ((1,), "float32")},
    "ssd_mobilenet": {"data": ((1, 3, 512, 512), "float32")},
    "faster_rcnn": {"data": ((1, 3, 600, 800), "float32")},
    "yolo3": {"data": ((1, 3, 320, 320), "float32")},
    "center_net": {"data": ((1, 3, 384, 384), "float32")},
    "video": {"data": ((1, 3, 16, 112, 112), "float32")},
    "ops_block": {"ids": ((1, 16), "int32"), "x": ((1, 16, 32), "float32")},
    "reused_block": {"data": ((1, 3, 32, 32), "float32")},
    "lm_standard": {"data": ((16, 1), "int32")},
    "lm_awd": {"data": ((16, 1), "int32")},
    "bigru_classifier": {"tokens": ((1, 24), "int32"), "valid_length": ((1,), "float32")},
    "gru_encoder": {"tokens": ((1, 20), "int32"), "valid_length": ((1,), "float32")},
    "transformer_encoder": {"x": ((1, 32, 64), "float32"), "valid_length": ((1,), "float32")},
    "self_attention": {"x": ((1, 16, 32), "float32"), "valid_length": ((1,), "float32")},
    "psp": {"data": ((1, 3, 128, 128), "float32")},
    "deeplab": {"data": ((1, 3, 128, 128), "float32")},
    "fastscnn": {"data": ((1, 3, 256, 256), "float32")},
    "mask_rcnn": {"data": ((1, 3, 256, 256), "float32")},
    "i3d": {"data": ((1, 3, 8, 112, 112), "float32")},
    "slowfast": {"data": ((1, 3, 36, 112, 112), "float32")},
    "c3d": {"data": ((1, 3, 16, 112, 112), "float32")},
    "tsn_vgg16": {"data": ((1, 3, 224, 224), "float32")},
    "hrnet_seg": {"data": ((1, 3, 128, 128), "float32")},
    "mobilenetv3": {"data": ((1, 3, 64, 64), "float32")},
}
OPS_BLOCK_VOCAB = 100


# ---------------------------------------------------------------------------------------------
# shared helpers

@contextmanager
def _fresh_names() -> Iterator[None]:
    """Fresh Gluon/MXNet name counters, so the same model gets the same names however many
    blocks this process built before."""
    import mxnet as mx

    with mx.name.NameManager():
        yield


def _seed(seed: int) -> None:
    import mxnet as mx

    mx.random.seed(seed)
    np.random.seed(seed)


# What Gluon's own layers declare for these parameters; a SymbolBlock's parameters built from
# raw mx.sym layers (GluonCV's SSD FeatureExpander) declare nothing, and MXNet then applies the
# global initializer by *value* (not by name), so Xavier raises on their 1-D gamma ("Xavier
# initializer cannot be applied to vector ssd0_expand_trans_bn0_gamma").
_SUFFIX_INITS = (("gamma", "ones"), ("beta", "zeros"), ("bias", "zeros"),
                 ("running_mean", "zeros"), ("moving_mean", "zeros"),
                 ("running_var", "ones"), ("moving_var", "ones"))


def _initialize(net: Any, init: Any, inputs: Dict[str, Tuple[Tuple[int, ...], str]]) -> None:
    """Ordinary Gluon initialization, then one forward pass so deferred shapes are known."""
    import warnings

    import mxnet as mx

    for name, param in net.collect_params().items():
        if param.init is None:
            for suffix, value in _SUFFIX_INITS:
                if name.endswith(suffix):
                    param.init = value
                    break
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "already initialized" for parameters shared by blocks
        net.initialize(init)
    net.hybridize()
    net(*[mx.nd.zeros(shape, dtype=dtype) for shape, dtype in inputs.values()])


def _save(net: Any, out_dir: Path, name: str,
          inputs: Dict[str, Tuple[Tuple[int, ...], str]]) -> Path:
    """Like trtc.zoo.save_block, with named, typed inputs; records ``__shape__`` and
    ``__dtype__`` on every input variable. Returns the params path."""
    import mxnet as mx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    variables = [mx.sym.var(n, dtype=dtype) for n, (_, dtype) in inputs.items()]
    symbol = net(*variables)
    if isinstance(symbol, (list, tuple)):
        symbol = mx.sym.Group(list(_flatten(symbol)))
    args, aux = set(symbol.list_arguments()), set(symbol.list_auxiliary_states())
    arrays = {}
    for pname, param in net.collect_params().items():
        if pname in args or pname in aux:
            kind = "arg" if pname in args else "aux"
            arrays[f"{kind}:{pname}"] = mx.nd.array(param.data().asnumpy(), dtype=param.dtype)
    missing = (args | aux) - set(inputs) - {k.split(":", 1)[1] for k in arrays}
    if missing:
        raise RuntimeError(f"{name}: symbol arguments without a value: {sorted(missing)}")
    symbol_path = out_dir / f"{name}-symbol.json"
    params_path = out_dir / f"{name}-0000.params"
    symbol.save(str(symbol_path))
    mx.nd.save(str(params_path), arrays)
    doc = json.loads(symbol_path.read_text())
    for node in doc["nodes"]:
        if node["op"] == "null" and node["name"] in inputs:
            shape, dtype = inputs[node["name"]]
            attrs = node.setdefault("attrs", {})
            attrs["__shape__"] = str(tuple(shape))
            attrs["__dtype__"] = str(DTYPE_CODES[dtype])
    symbol_path.write_text(json.dumps(doc, indent=2))
    return params_path


def _flatten(items: Any) -> List[Any]:
    out: List[Any] = []
    for item in items:
        if isinstance(item, (list, tuple)):
            out.extend(_flatten(item))
        else:
            out.append(item)
    return out


def op_counts(symbol_path: "str | Path") -> Dict[str, int]:
    """Op type -> number of nodes in a symbol JSON (variables excluded)."""
    from collections import Counter

    doc = json.loads(Path(symbol_path).read_text())
    return dict(Counter(n["op"] for n in doc["nodes"] if n["op"] != "null").most_common())


def duplicate_node_names(symbol_path: "str | Path") -> Dict[str, int]:
    """Op node names that occur more than once in a symbol JSON -> count."""
    from collections import Counter

    doc = json.loads(Path(symbol_path).read_text())
    counts = Counter(n["name"] for n in doc["nodes"] if n["op"] != "null")
    return {name: c for name, c in counts.items() if c > 1}


def input_specs(name: str) -> Dict[str, Tuple[Tuple[int, ...], str]]:
    """Input name -> (shape, dtype) of model ``name``."""
    return dict(INPUTS[name])


def random_inputs(name: str, seed: int = 0) -> Dict[str, np.ndarray]:
    """Real-looking inputs where the model has a ``verify_inputs_<name>``, else seeded float32
    uniform [0, 1) (what an image model would see after normalization, roughly)."""
    fn = globals().get(f"verify_inputs_{name}")
    if fn is not None:
        return fn(seed)
    rng = np.random.default_rng(seed)
    return {n: rng.random(shape).astype(dtype) for n, (shape, dtype) in INPUTS[name].items()}


# ---------------------------------------------------------------------------------------------
# BERT (GluonNLP 0.10)

def _bert_vocab(size: int) -> Any:
    """A BERTVocab of ``size`` tokens (its 5 special tokens included): no download."""
    from gluonnlp.data import count_tokens
    from gluonnlp.vocab import BERTVocab

    words = [f"tok{i}" for i in range(size - 5)]
    vocab = BERTVocab(count_tokens(words))
    assert len(vocab) == size, len(vocab)
    return vocab


def export_bert(out_dir: Path, seed: int = 0, zoo_name: str = "bert_12_768_12",
                name: str = "bert") -> Path:
    """GluonNLP ``bert_12_768_12`` (12 layers, 768 units, 12 heads, ~110M params), seq 128,
    batch 1. Inputs ``inputs`` (1,128) int32 token ids, ``token_types`` (1,128) int32,
    ``valid_length`` (1,) float32 (GluonNLP adds it to a float arange: it must be float).
    Outputs: sequence (1,128,768) and pooled (1,768)."""
    import mxnet as mx
    from gluonnlp.model import get_model

    _seed(seed)
    with _fresh_names():
        net, _ = get_model(zoo_name, dataset_name=None, vocab=_bert_vocab(BERT_VOCAB),
                           pretrained=False, use_pooler=True, use_decoder=False,
                           use_classifier=False)
    _initialize(net, mx.init.Normal(0.02), INPUTS[name])
    return _save(net, out_dir, name, INPUTS[name])


def export_bert_large(out_dir: Path, seed: int = 0) -> Path:
    """GluonNLP ``bert_24_1024_16`` (24 layers, 1024 units, 16 heads, 4096 FFN, ~335M params,
    1.34 GB), otherwise as ``bert``: the memory benchmark's large transformer."""
    return export_bert(out_dir, seed, "bert_24_1024_16", "bert_large")


def export_bert_small(out_dir: Path, seed: int = 0) -> Path:
    """BERTModel + BERTEncoder with 2 layers, 128 units, 512 hidden, 2 heads, vocab 1000, seq 32.
    Same inputs and outputs as ``bert`` (sizes aside)."""
    import mxnet as mx
    from gluonnlp.model.bert import BERTEncoder, BERTModel

    _seed(seed)
    with _fresh_names():
        encoder = BERTEncoder(num_layers=2, units=128, hidden_size=512, max_length=512,
                              num_heads=2, dropout=0.1, activation="gelu")
        net = BERTModel(encoder, BERT_SMALL_VOCAB, token_type_vocab_size=2, units=128,
                        embed_size=128, use_pooler=True, use_decoder=False,
                        use_classifier=False, prefix="bert_")
    _initialize(net, mx.init.Normal(0.02), INPUTS["bert_small"])
    return _save(net, out_dir, "bert_small", INPUTS["bert_small"])


def _bert_inputs(seed: int, vocab: int, seq: int, batch: int = 1) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(batch, seq)).astype(np.int32)  # 0..4: special tokens
    length = rng.integers(max(2, seq // 4), seq + 1, size=(batch,))  # in [1, seq]
    types = np.zeros((batch, seq), np.int32)
    for b in range(batch):
        split = int(rng.integers(1, length[b])) if length[b] > 1 else 1
        types[b, split:length[b]] = 1  # sentence B after the split, padding stays 0
        ids[b, 0] = 2  # [CLS]
        ids[b, length[b]:] = 1  # [PAD]
    return {"inputs": ids, "token_types": types, "valid_length": length.astype(np.float32)}


def verify_inputs_bert(seed: int = 0) -> Dict[str, np.ndarray]:
    """Token ids in [0, 30522), token types 0/1 (sentence A then B), valid_length in [1, 128]."""
    return _bert_inputs(seed, BERT_VOCAB, SEQ)


def verify_inputs_bert_large(seed: int = 0) -> Dict[str, np.ndarray]:
    """As ``verify_inputs_bert`` (the same vocabulary and sequence length)."""
    return _bert_inputs(seed, BERT_VOCAB, SEQ)


def verify_inputs_bert_small(seed: int = 0) -> Dict[str, np.ndarray]:
    """Token ids in [0, 1000), token types 0/1, valid_length in [1, 32]."""
    return _bert_inputs(seed, BERT_SMALL_VOCAB, BERT_SMALL_SEQ)


# ---------------------------------------------------------------------------------------------
# GluonCV

def _gluoncv_model(name: str, **kwargs: Any) -> Any:
    from gluoncv import model_zoo

    with _fresh_names():
        return model_zoo.get_model(name, pretrained=False, pretrained_base=False, **kwargs)


def export_ssd_mobilenet(out_dir: Path, seed: int = 0) -> Path:
    """GluonCV ``ssd_512_mobilenet1.0_voc`` with Xavier weights; ``data`` 1x3x512x512 float32.
    Outputs ids (1,100,1), scores (1,100,1), boxes (1,100,4) after box_nms."""
    import mxnet as mx

    _seed(seed)
    net = _gluoncv_model("ssd_512_mobilenet1.0_voc")
    _initialize(net, mx.init.Xavier(), INPUTS["ssd_mobilenet"])
    return _save(net, out_dir, "ssd_mobilenet", INPUTS["ssd_mobilenet"])


def export_faster_rcnn(out_dir: Path, seed: int = 0) -> Path:
    """GluonCV ``faster_rcnn_resnet50_v1b_voc`` with Xavier weights; ``data`` 1x3x600x800
    float32. Outputs ids, scores, boxes (inference mode, which hybridizes and exports as is)."""
    import mxnet as mx

    _seed(seed)
    net = _gluoncv_model("faster_rcnn_resnet50_v1b_voc")
    _initialize(net, mx.init.Xavier(), INPUTS["faster_rcnn"])
    return _save(net, out_dir, "faster_rcnn", INPUTS["faster_rcnn"])


def _export_gluoncv(name: str, zoo_name: str, out_dir: Path, seed: int) -> Path:
    import mxnet as mx

    _seed(seed)
    net = _gluoncv_model(zoo_name)
    _initialize(net, mx.init.Xavier(), INPUTS[name])
    return _save(net, out_dir, name, INPUTS[name])


def export_mask_rcnn_r50(out_dir: Path, seed: int = 0, size: int = 512) -> Path:
    """GluonCV ``mask_rcnn_resnet50_v1b_coco`` with Xavier weights; ``data`` 1x3xSIZExSIZE
    float32 (512 by default). Outputs ids, scores, boxes and masks (inference mode)."""
    import mxnet as mx

    inputs = {"data": ((1, 3, size, size), "float32")}
    _seed(seed)
    net = _gluoncv_model("mask_rcnn_resnet50_v1b_coco")
    _initialize(net, mx.init.Xavier(), inputs)
    return _save(net, out_dir, "mask_rcnn_r50", inputs)


def export_yolo3(out_dir: Path, seed: int = 0) -> Path:
    """GluonCV ``yolo3_mobilenet1.0_voc`` with Xavier weights; ``data`` 1x3x320x320 float32.
    Outputs ids, scores, boxes after box_nms (its tile ops: ONNX Runtime stages)."""
    return _export_gluoncv("yolo3", "yolo3_mobilenet1.0_voc", out_dir, seed)


def export_center_net(out_dir: Path, seed: int = 0) -> Path:
    """GluonCV ``center_net_resnet18_v1b_voc`` with Xavier weights; ``data`` 1x3x384x384
    float32. Outputs ids, scores, boxes from top-k over the heatmap (gather_nd decoding)."""
    return _export_gluoncv("center_net", "center_net_resnet18_v1b_voc", out_dir, seed)


def export_video(out_dir: Path, seed: int = 0) -> Path:
    """GluonCV ``r2plus1d_resnet18_kinetics400`` (the smallest GluonCV video net: 3-D
    convolutions, BatchNorm, GlobalAvgPool3D, a ``mean`` over axis 1 as segmental consensus,
    as in I3D) with Xavier weights; ``data`` 1x3x16x112x112 float32 (N, C, T, H, W)."""
    import mxnet as mx

    _seed(seed)
    net = _gluoncv_model("r2plus1d_resnet18_kinetics400")
    _initialize(net, mx.init.Xavier(), INPUTS["video"])
    return _save(net, out_dir, "video", INPUTS["video"])


# ---------------------------------------------------------------------------------------------
# hand-written blocks

def _ops_block_class() -> Any:
    from mxnet.gluon import HybridBlock, nn

    class OpsBlock(HybridBlock):
        """Embedding(int32 ids) + float input -> LayerNorm -> Dense, then means and maxes over
        axes with and without keepdims, and a second LayerNorm."""

        def __init__(self, vocab: int = OPS_BLOCK_VOCAB, units: int = 32, **kwargs: Any):
            super().__init__(**kwargs)
            with self.name_scope():
                self.embed = nn.Embedding(vocab, units)
                self.norm1 = nn.LayerNorm(in_channels=units)
                self.proj = nn.Dense(units, flatten=False, in_units=units)
                self.norm2 = nn.LayerNorm(in_channels=2 * units)
                self.head = nn.Dense(8, in_units=2 * units)

        def hybrid_forward(self, F: Any, ids: Any, x: Any) -> Any:
            h = self.norm1(self.embed(ids) + x)                       # (B, T, C)
            h = F.relu(self.proj(h))
            centered = F.broadcast_sub(h, F.mean(h, axis=1, keepdims=True))
            peak = F.max(centered, axis=(1, 2), keepdims=True)        # (B, 1, 1)
            scaled = F.broadcast_div(centered, F.abs(peak) + 1.0)
            pooled = F.concat(F.mean(scaled, axis=1),                 # (B, C), keepdims False
                              F.max(h, axis=1), dim=-1)               # (B, 2C)
            out = self.head(self.norm2(pooled))                       # (B, 8)
            gate = F.max(scaled, axis=-1, keepdims=False)             # (B, T)
            return out, F.mean(gate, axis=-1, keepdims=True)          # (B, 8), (B, 1)

    return OpsBlock


def export_ops_block(out_dir: Path, seed: int = 0) -> Path:
    """``ids`` (1,16) int32 in [0, 100) and ``x`` (1,16,32) float32 -> (1,8), (1,1). Ops:
    Embedding, LayerNorm x2, FullyConnected x2, mean (axis 1 keepdims, axis 1, axis -1
    keepdims), max (axes (1,2) keepdims, axis 1, axis -1)."""
    import mxnet as mx

    _seed(seed)
    with _fresh_names():
        net = _ops_block_class()(prefix="ops_")
    _initialize(net, mx.init.Xavier(), INPUTS["ops_block"])
    return _save(net, out_dir, "ops_block", INPUTS["ops_block"])


def verify_inputs_ops_block(seed: int = 0) -> Dict[str, np.ndarray]:
    """``ids`` in [0, 100), ``x`` standard normal."""
    rng = np.random.default_rng(seed)
    shape_ids, _ = INPUTS["ops_block"]["ids"]
    shape_x, _ = INPUTS["ops_block"]["x"]
    return {"ids": rng.integers(0, OPS_BLOCK_VOCAB, size=shape_ids).astype(np.int32),
            "x": rng.standard_normal(shape_x).astype(np.float32)}


def _reused_class() -> Any:
    from mxnet.gluon import HybridBlock, nn

    class Reused(HybridBlock):
        """stem conv -> ``body`` (conv-BN-relu, one set of weights) -> ``body`` again ->
        pool -> dense. Gluon names both calls' ops alike (the child's name scope restarts its
        op counter on every call), so the symbol has duplicate op node names."""

        def __init__(self, **kwargs: Any):
            super().__init__(**kwargs)
            with self.name_scope():
                self.stem = nn.Conv2D(16, 3, padding=1, in_channels=3)
                self.body = nn.HybridSequential()
                self.body.add(nn.Conv2D(16, 3, padding=1, in_channels=16),
                              nn.BatchNorm(in_channels=16), nn.Activation("relu"))
                self.head = nn.Dense(10, in_units=16)

        def hybrid_forward(self, F: Any, x: Any) -> Any:
            x = F.relu(self.stem(x))
            x = self.body(x)
            x = self.body(x) + x
            return self.head(F.mean(x, axis=(2, 3)))

    return Reused


def export_reused_block(out_dir: Path, seed: int = 0) -> Path:
    """``data`` 1x3x32x32 float32 -> (1,10); ``body`` (Convolution, BatchNorm, Activation) runs
    twice with one set of weights, so its three op nodes appear twice by name."""
    import mxnet as mx

    _seed(seed)
    with _fresh_names():
        net = _reused_class()(prefix="reused_")
    _initialize(net, mx.init.Xavier(), INPUTS["reused_block"])
    params = _save(net, out_dir, "reused_block", INPUTS["reused_block"])
    dups = duplicate_node_names(Path(out_dir) / "reused_block-symbol.json")
    if not dups:
        raise RuntimeError("reused_block: expected duplicate op node names in the symbol")
    return params


# ---------------------------------------------------------------------------------------------
# issue 22: families no earlier test named (recurrent, attention, segmentation, instance
# segmentation, action recognition), at small sizes

LM_VOCAB = 200
TEXT_VOCAB = 100


def _lm_inputs(seed: int, name: str, vocab: int) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for n, (shape, dtype) in INPUTS[name].items():
        out[n] = rng.integers(0, vocab, size=shape).astype(dtype)
    return out


def _wrap_first(net: Any) -> Any:
    """A HybridBlock returning ``net``'s outputs flattened (lists of states included)."""
    from mxnet.gluon import HybridBlock

    class Flat(HybridBlock):
        def __init__(self, inner: Any, **kwargs: Any):
            super().__init__(**kwargs)
            self.inner = inner

        def hybrid_forward(self, F: Any, *args: Any) -> Any:
            return tuple(_flatten(self.inner(*args)))

    return Flat(net, prefix="")


def export_lm_standard(out_dir: Path, seed: int = 0) -> Path:
    """GluonNLP ``model.StandardRNN`` (Embedding -> 2-layer LSTM, TNC -> Dense over the
    vocabulary; no dropout: its inference path calls ``nd.Dropout`` on a symbol otherwise),
    vocab 200, embed 32, hidden 32, tied weights. ``data`` (16, 1) int32 token ids (time major);
    default begin state (``sym.zeros`` of batch 0). Outputs: logits (16, 1, 200), h, c."""
    import mxnet as mx
    from gluonnlp.model import StandardRNN

    _seed(seed)
    with _fresh_names():
        net = _wrap_first(StandardRNN("lstm", LM_VOCAB, 32, 32, 2, dropout=0.0,
                                      tie_weights=True, prefix="lm_"))
    _initialize(net, mx.init.Xavier(), INPUTS["lm_standard"])
    return _save(net, out_dir, "lm_standard", INPUTS["lm_standard"])


def verify_inputs_lm_standard(seed: int = 0) -> Dict[str, np.ndarray]:
    """Token ids in [0, 200)."""
    return _lm_inputs(seed, "lm_standard", LM_VOCAB)


def export_lm_awd(out_dir: Path, seed: int = 0) -> Path:
    """GluonNLP ``model.AWDRNN`` (AWD-LSTM: Embedding -> three 1-layer LSTMs -> Dense, tied
    weights), vocab 200, embed 32, hidden 48, dropouts 0 (inference). ``data`` (16, 1) int32.
    Outputs: logits and the three layers' (h, c)."""
    import mxnet as mx
    from gluonnlp.model import AWDRNN

    _seed(seed)
    with _fresh_names():
        net = _wrap_first(AWDRNN("lstm", LM_VOCAB, 32, 48, 3, tie_weights=True, dropout=0.0,
                                 weight_drop=0.0, drop_h=0.0, drop_i=0.0, drop_e=0.0,
                                 prefix="awd_"))
    _initialize(net, mx.init.Xavier(), INPUTS["lm_awd"])
    return _save(net, out_dir, "lm_awd", INPUTS["lm_awd"])


def verify_inputs_lm_awd(seed: int = 0) -> Dict[str, np.ndarray]:
    """Token ids in [0, 200)."""
    return _lm_inputs(seed, "lm_awd", LM_VOCAB)


def _text_inputs(seed: int, name: str) -> Dict[str, np.ndarray]:
    """Token ids in [1, 100) (0: padding after the valid length), valid_length in [1, T]."""
    rng = np.random.default_rng(seed)
    (batch, seq), ids_dtype = INPUTS[name]["tokens"]
    length = rng.integers(max(1, seq // 4), seq + 1, size=(batch,))
    ids = rng.integers(1, TEXT_VOCAB, size=(batch, seq))
    for b in range(batch):
        ids[b, length[b]:] = 0
    return {"tokens": ids.astype(ids_dtype), "valid_length": length.astype(np.float32)}


def _bigru_classifier_class() -> Any:
    from mxnet.gluon import HybridBlock, nn, rnn

    class BiGRUClassifier(HybridBlock):
        """Embedding -> bidirectional GRU (NTC) -> SequenceMask by ``valid_length`` -> mean over
        the valid steps -> Dense (3 classes)."""

        def __init__(self, **kwargs: Any):
            super().__init__(**kwargs)
            with self.name_scope():
                self.embedding = nn.Embedding(TEXT_VOCAB, 32)
                self.encoder = rnn.GRU(32, bidirectional=True, layout="NTC", input_size=32)
                self.output = nn.Dense(3, in_units=64)

        def hybrid_forward(self, F: Any, tokens: Any, valid_length: Any) -> Any:
            h = self.encoder(self.embedding(tokens))                        # (B, T, 64)
            h = F.SequenceMask(h, sequence_length=valid_length, use_sequence_length=True,
                               axis=1)
            pooled = F.broadcast_div(F.sum(h, axis=1), F.expand_dims(valid_length, axis=1))
            return self.output(pooled)

    return BiGRUClassifier


def export_bigru_classifier(out_dir: Path, seed: int = 0) -> Path:
    """``tokens`` (1, 24) int32 and ``valid_length`` (1,) float32 -> (1, 3)."""
    import mxnet as mx

    _seed(seed)
    with _fresh_names():
        net = _bigru_classifier_class()(prefix="cls_")
    _initialize(net, mx.init.Xavier(), INPUTS["bigru_classifier"])
    return _save(net, out_dir, "bigru_classifier", INPUTS["bigru_classifier"])


def verify_inputs_bigru_classifier(seed: int = 0) -> Dict[str, np.ndarray]:
    return _text_inputs(seed, "bigru_classifier")


def _gru_encoder_class() -> Any:
    from mxnet.gluon import HybridBlock, nn, rnn

    class GRUEncoder(HybridBlock):
        """A GNMT-style seq2seq encoder: Embedding -> bidirectional GRU layer -> 2-layer GRU
        with a residual connection (TNC, as GluonNLP's GNMT encoder) -> outputs masked by
        ``valid_length``, and the last layer's final state."""

        def __init__(self, **kwargs: Any):
            super().__init__(**kwargs)
            with self.name_scope():
                self.embedding = nn.Embedding(TEXT_VOCAB, 32)
                self.birnn = rnn.GRU(16, bidirectional=True, layout="TNC", input_size=32)
                self.rnn = rnn.GRU(32, num_layers=2, layout="TNC", input_size=32)

        def hybrid_forward(self, F: Any, tokens: Any, valid_length: Any) -> Any:
            x = F.transpose(self.embedding(tokens), axes=(1, 0, 2))        # (T, B, 32)
            x = self.birnn(x)                                               # (T, B, 32)
            begin = self.rnn.begin_state(batch_size=0, func=F.zeros)
            y, state = self.rnn(x, begin)
            y = F.SequenceMask(y + x, sequence_length=valid_length, use_sequence_length=True)
            return F.transpose(y, axes=(1, 0, 2)), state[0]

    return GRUEncoder


def export_gru_encoder(out_dir: Path, seed: int = 0) -> Path:
    """``tokens`` (1, 20) int32 and ``valid_length`` (1,) float32 -> outputs (1, 20, 32) and
    the final state (2, 1, 32)."""
    import mxnet as mx

    _seed(seed)
    with _fresh_names():
        net = _gru_encoder_class()(prefix="enc_")
    _initialize(net, mx.init.Xavier(), INPUTS["gru_encoder"])
    return _save(net, out_dir, "gru_encoder", INPUTS["gru_encoder"])


def verify_inputs_gru_encoder(seed: int = 0) -> Dict[str, np.ndarray]:
    return _text_inputs(seed, "gru_encoder")


def _transformer_encoder_class() -> Any:
    from mxnet.gluon import HybridBlock

    class Encoder(HybridBlock):
        """GluonNLP ``model.transformer.TransformerEncoder`` (2 layers, 64 units, 4 heads,
        sinusoidal positions) on embedded inputs, with a ``valid_length`` mask."""

        def __init__(self, **kwargs: Any):
            super().__init__(**kwargs)
            from gluonnlp.model.transformer import TransformerEncoder

            with self.name_scope():
                self.encoder = TransformerEncoder(num_layers=2, units=64, hidden_size=128,
                                                  num_heads=4, max_length=64, dropout=0.0,
                                                  scaled=True, prefix="enc_")

        def hybrid_forward(self, F: Any, x: Any, valid_length: Any) -> Any:
            out, _ = self.encoder(x, None, valid_length)
            return out

    return Encoder


def export_transformer_encoder(out_dir: Path, seed: int = 0) -> Path:
    """``x`` (1, 32, 64) float32 embeddings and ``valid_length`` (1,) float32 -> (1, 32, 64)."""
    import mxnet as mx

    _seed(seed)
    with _fresh_names():
        net = _transformer_encoder_class()(prefix="tf_")
    _initialize(net, mx.init.Xavier(), INPUTS["transformer_encoder"])
    return _save(net, out_dir, "transformer_encoder", INPUTS["transformer_encoder"])


def verify_inputs_transformer_encoder(seed: int = 0) -> Dict[str, np.ndarray]:
    """``x`` standard normal, ``valid_length`` in [8, 32]."""
    rng = np.random.default_rng(seed)
    (batch, seq, units), _ = INPUTS["transformer_encoder"]["x"]
    return {"x": rng.standard_normal((batch, seq, units)).astype(np.float32),
            "valid_length": rng.integers(8, seq + 1, size=(batch,)).astype(np.float32)}


ATTN_HEADS = 4


def _self_attention_class() -> Any:
    from mxnet.gluon import HybridBlock, nn

    class SelfAttention(HybridBlock):
        """Multi-head self-attention by hand: Dense -> split heads (reshape/transpose) ->
        ``batch_dot(q, k, transpose_b=True)`` -> ``softmax(use_length=True)`` over the keys ->
        ``batch_dot`` with v -> merge heads -> Dense -> residual -> LayerNorm -> SequenceMask."""

        def __init__(self, units: int = 32, heads: int = ATTN_HEADS, **kwargs: Any):
            super().__init__(**kwargs)
            self._units, self._heads = units, heads
            with self.name_scope():
                self.qkv = nn.Dense(3 * units, flatten=False, in_units=units)
                self.proj = nn.Dense(units, flatten=False, in_units=units)
                self.norm = nn.LayerNorm(in_channels=units)

        def hybrid_forward(self, F: Any, x: Any, valid_length: Any) -> Any:
            heads, depth = self._heads, self._units // self._heads
            qkv = self.qkv(x)                                               # (B, T, 3C)
            qkv = F.reshape(qkv, shape=(0, 0, 3 * heads, depth))
            qkv = F.transpose(qkv, axes=(0, 2, 1, 3))                       # (B, 3H, T, d)
            q, k, v = F.split(qkv, num_outputs=3, axis=1)                   # (B, H, T, d)
            q = F.reshape(q, shape=(-3, 0, 0)) / math.sqrt(depth)           # (BH, T, d)
            k, v = F.reshape(k, shape=(-3, 0, 0)), F.reshape(v, shape=(-3, 0, 0))
            scores = F.batch_dot(q, k, transpose_b=True)                    # (BH, T, T)
            length = F.broadcast_like(F.reshape(valid_length, shape=(-1, 1, 1)),
                                      F.reshape(scores, shape=(-4, -1, heads, 0, 0)),
                                      lhs_axes=(1, 2), rhs_axes=(1, 2))     # (B, H, T)
            length = F.cast(F.reshape(F.slice_axis(length, axis=-1, begin=0, end=None),
                                      shape=(-3, 0)), dtype="int32")        # (BH, T)
            attn = F.softmax(scores, length=length, use_length=True, axis=-1)
            out = F.batch_dot(attn, v)                                      # (BH, T, d)
            out = F.reshape(out, shape=(-4, -1, heads, 0, 0))
            out = F.reshape(F.transpose(out, axes=(0, 2, 1, 3)), shape=(0, 0, -3))
            out = self.norm(self.proj(out) + x)
            return F.SequenceMask(out, sequence_length=valid_length, use_sequence_length=True,
                                  axis=1)

    return SelfAttention


def export_self_attention(out_dir: Path, seed: int = 0) -> Path:
    """``x`` (1, 16, 32) float32 and ``valid_length`` (1,) float32 -> (1, 16, 32)."""
    import mxnet as mx

    _seed(seed)
    with _fresh_names():
        net = _self_attention_class()(prefix="attn_")
    _initialize(net, mx.init.Xavier(), INPUTS["self_attention"])
    return _save(net, out_dir, "self_attention", INPUTS["self_attention"])


def verify_inputs_self_attention(seed: int = 0) -> Dict[str, np.ndarray]:
    """``x`` standard normal, ``valid_length`` in [4, 16]."""
    rng = np.random.default_rng(seed)
    (batch, seq, units), _ = INPUTS["self_attention"]["x"]
    return {"x": rng.standard_normal((batch, seq, units)).astype(np.float32),
            "valid_length": rng.integers(4, seq + 1, size=(batch,)).astype(np.float32)}


def _export_segmentation(name: str, zoo_name: str, out_dir: Path, seed: int) -> Path:
    """A GluonCV segmentation net at the input's size (``crop_size``: its upsampling sizes are
    fixed at construction); ``aux`` off (inference)."""
    import mxnet as mx

    _seed(seed)
    size = INPUTS[name]["data"][0][-1]
    net = _gluoncv_model(zoo_name, crop_size=size, base_size=size, aux=False)
    _initialize(net, mx.init.Xavier(), INPUTS[name])
    return _save(net, out_dir, name, INPUTS[name])


def export_psp(out_dir: Path, seed: int = 0) -> Path:
    """GluonCV ``psp_resnet50_ade`` (PSPNet: dilated ResNet-50, pyramid pooling) at 1x3x128x128."""
    return _export_segmentation("psp", "psp_resnet50_ade", out_dir, seed)


def export_deeplab(out_dir: Path, seed: int = 0) -> Path:
    """GluonCV ``deeplab_resnet50_ade`` (DeepLabV3: ASPP) at 1x3x128x128."""
    return _export_segmentation("deeplab", "deeplab_resnet50_ade", out_dir, seed)


def export_hrnet_seg(out_dir: Path, seed: int = 0) -> Path:
    """GluonCV ``hrnet_w18_small_v1_s`` (HRNet segmentation) at 1x3x128x128: 13
    BilinearResize2D(mode='like') between its branches (mxnet.onnx: 'size' only, 4 MXNet stages)."""
    import mxnet as mx

    _seed(seed)
    with _fresh_names():
        from gluoncv import model_zoo

        net = model_zoo.get_model("hrnet_w18_small_v1_s", pretrained=False)
    _initialize(net, mx.init.Xavier(), INPUTS["hrnet_seg"])
    return _save(net, out_dir, "hrnet_seg", INPUTS["hrnet_seg"])


def export_mobilenetv3(out_dir: Path, seed: int = 0) -> Path:
    """GluonCV ``mobilenetv3_small`` (hard-swish, squeeze-excitation) at 1x3x64x64, its
    activations normalized as a trained net's (``trtc.zoo.normalize_activations``): with plain
    Xavier weights its outputs are ~1e-10 and fp16 says nothing."""
    import mxnet as mx

    from trtc.zoo import normalize_activations

    _seed(seed)
    shape = INPUTS["mobilenetv3"]["data"][0]
    with _fresh_names():
        from gluoncv import model_zoo

        net = model_zoo.get_model("mobilenetv3_small", pretrained=False)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros(shape))
    normalize_activations(net, shape, seed)
    net.hybridize()
    return _save(net, out_dir, "mobilenetv3", INPUTS["mobilenetv3"])


def export_fastscnn(out_dir: Path, seed: int = 0) -> Path:
    """GluonCV ``fastscnn_citys`` (Fast-SCNN) at 1x3x256x256."""
    import mxnet as mx

    _seed(seed)
    size = INPUTS["fastscnn"]["data"][0][-1]
    with _fresh_names():
        from gluoncv import model_zoo

        net = model_zoo.get_model("fastscnn_citys", pretrained=False, crop_size=size,
                                  base_size=size, aux=False)
    _initialize(net, mx.init.Xavier(), INPUTS["fastscnn"])
    return _save(net, out_dir, "fastscnn", INPUTS["fastscnn"])


def export_mask_rcnn(out_dir: Path, seed: int = 0) -> Path:
    """GluonCV ``mask_rcnn_resnet18_v1b_coco`` at 1x3x256x256, RPN 1000 boxes before NMS and 100
    after (the zoo's 6000/1000 are sized for 800-pixel images). Outputs ids, scores, boxes,
    masks."""
    import mxnet as mx

    _seed(seed)
    net = _gluoncv_model("mask_rcnn_resnet18_v1b_coco", rpn_test_pre_nms=1000,
                         rpn_test_post_nms=100)
    _initialize(net, mx.init.Xavier(), INPUTS["mask_rcnn"])
    return _save(net, out_dir, "mask_rcnn", INPUTS["mask_rcnn"])


def export_i3d(out_dir: Path, seed: int = 0) -> Path:
    """GluonCV ``i3d_resnet50_v1_kinetics400`` (inflated 3-D ResNet-50) at 1x3x8x112x112."""
    return _export_gluoncv("i3d", "i3d_resnet50_v1_kinetics400", out_dir, seed)


def export_slowfast(out_dir: Path, seed: int = 0) -> Path:
    """GluonCV ``slowfast_4x16_resnet50_kinetics400`` at 1x3x36x112x112 (32 fast frames, then 4
    slow ones, along time)."""
    return _export_gluoncv("slowfast", "slowfast_4x16_resnet50_kinetics400", out_dir, seed)


def export_c3d(out_dir: Path, seed: int = 0) -> Path:
    """GluonCV ``c3d_kinetics400`` at 1x3x16x112x112 (its fc6 fixes the clip size)."""
    import mxnet as mx
    from gluoncv import model_zoo

    _seed(seed)
    with _fresh_names():
        net = model_zoo.get_model("c3d_kinetics400", pretrained=False)
    _initialize(net, mx.init.Xavier(), INPUTS["c3d"])
    return _save(net, out_dir, "c3d", INPUTS["c3d"])


def export_tsn_vgg16(out_dir: Path, seed: int = 0) -> Path:
    """GluonCV's ``vgg16_ucf101`` (TSN with a VGG-16, 2-D, one segment) at 1x3x224x224. Built
    as ``ActionRecVGG16`` directly: ``vgg16_ucf101(pretrained_base=False)`` calls
    ``reset_ctx`` on its parameters before anything initialized them, and raises."""
    import mxnet as mx
    from gluoncv.model_zoo.action_recognition.actionrec_vgg16 import ActionRecVGG16

    _seed(seed)
    with _fresh_names():
        net = ActionRecVGG16(nclass=101, pretrained_base=False, num_segments=1, num_crop=1,
                             dropout_ratio=0.9, init_std=0.001)
    _initialize(net, mx.init.Xavier(), INPUTS["tsn_vgg16"])
    return _save(net, out_dir, "tsn_vgg16", INPUTS["tsn_vgg16"])


MODELS: Dict[str, Callable[..., Path]] = {
    "bert": export_bert,
    "bert_small": export_bert_small,
    "ssd_mobilenet": export_ssd_mobilenet,
    "faster_rcnn": export_faster_rcnn,
    "yolo3": export_yolo3,
    "center_net": export_center_net,
    "video": export_video,
    "ops_block": export_ops_block,
    "reused_block": export_reused_block,
    "lm_standard": export_lm_standard,
    "lm_awd": export_lm_awd,
    "bigru_classifier": export_bigru_classifier,
    "gru_encoder": export_gru_encoder,
    "transformer_encoder": export_transformer_encoder,
    "self_attention": export_self_attention,
    "psp": export_psp,
    "deeplab": export_deeplab,
    "fastscnn": export_fastscnn,
    "mask_rcnn": export_mask_rcnn,
    "i3d": export_i3d,
    "slowfast": export_slowfast,
    "c3d": export_c3d,
    "tsn_vgg16": export_tsn_vgg16,
    "hrnet_seg": export_hrnet_seg,
    "mobilenetv3": export_mobilenetv3,
}
