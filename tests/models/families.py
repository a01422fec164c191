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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import numpy as np

__all__ = [
    "MODELS", "INPUTS", "DTYPE_CODES", "duplicate_node_names", "op_counts", "input_specs",
    "export_bert", "export_bert_small", "export_ssd_mobilenet", "export_faster_rcnn",
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


def export_bert(out_dir: Path, seed: int = 0) -> Path:
    """GluonNLP ``bert_12_768_12`` (12 layers, 768 units, 12 heads, ~110M params), seq 128,
    batch 1. Inputs ``inputs`` (1,128) int32 token ids, ``token_types`` (1,128) int32,
    ``valid_length`` (1,) float32 (GluonNLP adds it to a float arange: it must be float).
    Outputs: sequence (1,128,768) and pooled (1,768)."""
    import mxnet as mx
    from gluonnlp.model import get_model

    _seed(seed)
    with _fresh_names():
        net, _ = get_model("bert_12_768_12", dataset_name=None, vocab=_bert_vocab(BERT_VOCAB),
                           pretrained=False, use_pooler=True, use_decoder=False,
                           use_classifier=False)
    _initialize(net, mx.init.Normal(0.02), INPUTS["bert"])
    return _save(net, out_dir, "bert", INPUTS["bert"])


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
}
