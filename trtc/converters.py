"""trtc's own mx2onnx converters: exact ONNX for ops whose mxnet.onnx converter is not.

``register()`` installs them in mxnet.onnx's converter table (``MXNetGraph.registry_``) at the
opset trtc exports at, over mxnet.onnx's own. trtc/export.py calls it before every export.

* ``_contrib_box_nms`` (and its aliases): a new, exact converter (below);
* ``_contrib_ROIAlign``: mxnet.onnx's, with a negative ``sample_ratio`` passed as 0 (both mean
  adaptive; ONNX Runtime refuses a negative one);
* ``topk``: mxnet.onnx's, refusing ``k < 1`` (MXNet: the whole axis; mxnet.onnx: nothing);
* ``RNN`` (gluon.rnn's fused LSTM / GRU / vanilla RNN): a new, exact converter (below);
* ``Reshape``: mxnet.onnx's for ONNX's own codes (positive, 0, -1); MXNet's -2, -3, -4 and
  ``reverse=True`` by MXNet's shape inference on the symbolic input shape (``_reshape_wrapper``);
* ``_contrib_AdaptiveAvgPooling2D``: mxnet.onnx's for a 1x1 output; larger ones (PSPNet's
  pyramid) as two MatMuls with MXNet's bins (``_adaptive_avg_pool_wrapper``);
* ``_contrib_BilinearResize2D``: a new converter honouring ``align_corners`` (mxnet.onnx's
  ignored it) and every mode ('like': HRNet), ``convert_bilinear_resize``;
* ``Convolution`` / ``Pooling`` with ``layout='NCW'`` (Gluon's Conv1D, MaxPool1D, AvgPool1D,
  GlobalAvgPool1D, GlobalMaxPool1D): mxnet.onnx's, which refuses any layout but NCHW/NCDHW,
  called without the layout (ONNX Conv and pools take 1-D spatial dims); ``Pooling`` with
  ``global_pool`` and ``pool_type='sum'`` as a ReduceSum (a windowed sum pool stays refused);
* ``GroupNorm`` (no mxnet.onnx converter): InstanceNormalization on the (N, G, -1) view with
  MXNet 1.x's per-group gamma and beta, plus the mean and std outputs (``convert_group_norm``);
* element-wise ops without an mxnet.onnx converter (``_build_*``): ``broadcast_maximum`` (Max),
  ``broadcast_hypot`` (sqrt(x*x + y*y), float32), ``erf`` (Erf), ``sign`` (two compares: MXNet's
  sign(NaN) is 0), ``softsign`` (x / (1 + |x|)), ``softmin`` (Softmax of -x / temperature),
  ``smooth_l1`` (MXNet's three branches, bit-exact);
* ``pick`` (GatherElements, indices truncated then clipped or wrapped as MXNet's),
  ``_np_cumsum`` (CumSum), ``sort`` (TopK over the whole axis), ``moments`` (two ReduceMeans),
  ``L2Normalization`` (every mode, MXNet's eps inside the square root; mxnet.onnx wrote
  'channel' as LpNormalization, without eps), ``BatchNorm`` with ``axis != 1`` (between two
  Transposes): ``_build_pick`` ... ``_batchnorm_wrapper`` below;
* ``round`` (halves away from zero), ``fix``, ``trunc``, ``rint`` (MXNet's: halves down) from
  Floor/Ceil/compares: exact values, NaN and inf included, but a zero result may be +0.0 where
  MXNet gives -0.0 (ONNX Runtime's Ceil and Where drop a zero's sign; they compare equal).

``RNN``. mxnet.onnx's converter multiplies each begin state by ones of shape (D, batch, H) taken
from the data's shape; Gluon's default begin state is ``_zeros(shape=(L, 0, H))`` (MXNet fills
in the 0 from the batch), which mxnet.onnx exports as an empty tensor: ONNX Runtime and
TensorRT then fail on a "reshape of an empty tensor" and the op ran in MXNet. It also handles
1-2 layers only, and bidirectional only for a 1-layer LSTM. This one writes one ONNX LSTM/GRU/RNN node per
layer (both directions in one node; MXNet's layout is ONNX's: time-major, forward then backward
features), with weights unpacked from MXNet's flat ``parameters`` constant (every layer's and
direction's ``W_x, W_h``, then every ``b_x, b_h``: src/operator/rnn-inl.h, rnn_impl.h) and gates
reordered: MXNet LSTM i, f, g, o -> ONNX i, o, f, c; MXNet GRU r, z, n -> ONNX z, r, h, with
``linear_before_reset=1`` (MXNet's n = tanh(W_n x + b_xn + r * (R_n h + b_hn))); vanilla RNN
``activations`` Tanh or Relu. A begin state that is all zeros (``_zeros``, or its folded
constant) is left out (ONNX's default is zeros: no batch-dependent shape arithmetic); a real one
is sliced per layer into ``initial_h``/``initial_c``. State outputs: the layers' Y_h / Y_c
concatenated. ``p`` (dropout between layers) applies in training only. Refused (kept in
MXNet): ``use_sequence_length``, ``projection_size`` (LSTMP: no ONNX projection),
``lstm_state_clip_min/max`` (ONNX's ``clip`` bounds the gates' inputs, not the cell state;
MXNet 1.9.1 applies it with cuDNN only),
``parameters`` that are not a weight, data other than float32.

``_contrib_box_nms`` (GluonCV's detection post-processing: SSD, YOLOv3, Faster R-CNN, CenterNet).
mxnet.onnx's converter ignores ``id_index``/``force_suppress=False`` (it suppresses across
classes, and warns that this differs), refuses ``background_id`` and ``in_format != out_format``,
and applies ``topk`` after NMS instead of before. This one computes what MXNet 1.9.1's CPU kernel
(src/operator/contrib/bounding_box-inl.h, bounding_box-common.h) computes, element for element:

* rows are flattened to (B, N, K); a row is *valid* when ``score > valid_thresh`` (strictly; NaN
  is not) and, when ``id_index >= 0``, ``id != background_id`` (a float compare);
* valid rows are ordered by score, descending, ties by row index (MXNet sorts with a stable
  sort; ONNX TopK breaks ties by the lower index: the same order, ties included);
* only the first ``topk`` of them (per batch item) take part: MXNet's ``topk`` is applied
  *before* NMS;
* greedy NMS over that order: a row is suppressed when its IoU with an earlier kept row is
  ``> overlap_thresh``; with ``id_index >= 0`` and not ``force_suppress`` only rows whose ids
  truncate to the same int suppress each other (MXNet compares ``static_cast<int>(id)``; on
  x86 NaN, infinite and out-of-int32 ids all become INT_MIN: one class, reproduced);
* kept rows, whole and in that order, fill the output from its first row; every other row is -1;
  ``topk = 0`` returns the input unchanged (MXNet's early return);
* ``out_format`` conversion of the 4 coordinates of every output row whose first coordinate is
  not negative (MXNet skips rows with ``x < 0``: the -1 rows, but also real boxes with a
  negative first coordinate, which therefore stay in the input format).

The NMS itself is ONNX ``NonMaxSuppression``, fed so that its decisions are MXNet's:

* IoU: ONNX Runtime computes ``inter / (area1 + area2 - inter)`` with the same float32
  operations as MXNet's corner-format kernel (no +1 in widths). Boxes MXNet gives zero area and
  lets suppress nothing (``x2 < x1`` or ``y2 < y1``, NaN extents) would be *normalized* by ONNX
  Runtime (corners swapped): they are replaced by an all-zero box, which overlaps nothing;
* scores: NonMaxSuppression re-sorts by score (its tie order is its own), so it gets synthetic
  scores ``T, T-1, ..., 1`` in MXNet's order (distinct, exact in float32 below 2**24) and 0 for
  rows that must not take part, with ``score_threshold`` 0.5;
* per-class suppression uses NonMaxSuppression's class axis: one class per integer id between
  the smallest and the largest id among the candidates (so memory grows with B x id range x
  topk: fine for class indices; ids spread over millions would make ONNX Runtime fail, loudly);
* ``max_output_boxes_per_class`` is unbounded (MXNet's ``topk`` is applied before).

Not exported (the converter raises, and trtc keeps the op in MXNet):

* ``in_format='center'`` with ``overlap_thresh < 1``: MXNet's IoU then takes areas as
  ``width * height``, ONNX NonMaxSuppression (either box encoding) as
  ``(x2 - x1) * (y2 - y1)`` of the corners it computes, which can differ in the last bit and
  flip a decision at the threshold; an exact greedy NMS needs a Loop, which trtc's runtime
  refuses (runtime/onnx_check.py: no subgraphs);
* ``overlap_thresh < 0`` (ONNX Runtime refuses thresholds outside [0, 1]; for thresholds >= 1
  nothing is suppressed, as in MXNet, whose float32 IoU never exceeds 1);
* inputs other than float32 (NonMaxSuppression takes float32 only; MXNet computes fp16/fp64
  in that type).

Every op used is in trtc's runtime ONNX allowlist (runtime/bundle.py ``ONNX_OPS``); the graph is
shape-generic (Shape ops, no size baked in), so batch and N may be dynamic. Candidate positions
are float32 (synthetic scores, output order): exact up to 2**24 candidates per batch item
(min(N, topk); SSD-512 on COCO has 80 x 24564 = 2M rows).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import _defaults

__all__ = ["register", "canonical_attrs", "BOX_NMS_OPS", "ONNX_OPS_USED"]

# Every name MXNet 1.9.1 knows box_nms by. A symbol JSON written by MXNet (Gluon's export,
# sym.tojson) always holds the canonical '_contrib_box_nms'; the aliases are registered too in
# case a hand-written JSON uses one (mxnet.onnx looks the op up by the JSON's name).
BOX_NMS_OPS = ("_contrib_box_nms", "box_nms", "_contrib_box_non_maximum_suppression",
               "box_non_maximum_suppression")

# The ONNX ops the converters here emit (kept in step with runtime/bundle.py's allowlist; a test
# checks it).
ONNX_OPS_USED = frozenset("""
    Add And Cast Concat ConstantOfShape Div Equal Gather GatherND Greater GreaterOrEqual Identity
    Less Min NonMaxSuppression Not Pad Range ReduceMax ReduceMin ReduceSum Reshape ScatterND Shape
    Slice Squeeze Sub TopK Unsqueeze Where
    GRU LSTM RNN Transpose
    Mul MatMul
    Floor Mod Resize


    InstanceNormalization ReduceMean Sqrt
    Abs Erf Max Neg Softmax
    BatchNormalization CumSum GatherElements Mod
    Ceil Floor LessOrEqual
""".split())

_REGISTERED = False
_INT64_MAX = np.iinfo(np.int64).max
_NO_CLASS = 1 << 40  # sentinel id range bound (ids are truncated to int; far from int64 limits)


def register() -> None:
    """Install trtc's converters in mxnet.onnx (idempotent; a flag check after the first call).

    mxnet.onnx picks a converter from ``MXNetGraph.registry_[opset][op]``, from the export's
    opset down to 12; registering at trtc's opset (13) overrides mxnet.onnx's opset-13 entry.
    """
    global _REGISTERED
    if _REGISTERED:
        return
    # mxnet.onnx registers its own converters when its translation modules are imported: import
    # them first, so that ours are the ones left in the table.
    import mxnet.onnx  # noqa: F401
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph

    opset = _defaults.ONNX_OPSET
    for op in BOX_NMS_OPS:
        MXNetGraph.register(op, opset_version=opset)(convert_box_nms)
    MXNetGraph.register("RNN", opset_version=opset)(convert_rnn)
    MXNetGraph.register("_contrib_BilinearResize2D", opset_version=opset)(convert_bilinear_resize)


    for op, converter in _NEW_CONVERTERS.items():
        MXNetGraph.register(op, opset_version=opset)(converter)
    # wrappers around mxnet.onnx's own converters (found as convert_layer would find them)
    for op, wrapper in (("_contrib_ROIAlign", _roi_align_wrapper), ("topk", _topk_wrapper),
                        ("SwapAxis", _swapaxis_wrapper), ("swapaxes", _swapaxis_wrapper),
                        ("Reshape", _reshape_wrapper), ("null", _weights_wrapper),
                        ("_contrib_AdaptiveAvgPooling2D", _adaptive_avg_pool_wrapper),
                        ("Convolution", _ncw_wrapper), ("Pooling", _pooling_wrapper),
                        ("BatchNorm", _batchnorm_wrapper)):
        original = _mxnet_converter(MXNetGraph.registry_, op, opset)
        if original is not None:
            MXNetGraph.register(op, opset_version=opset)(wrapper(original))
    _REGISTERED = True


def _mxnet_converter(registry: Dict[int, Dict[str, Any]], op: str, opset: int) -> Any:
    """The converter mx2onnx would use for ``op`` at ``opset`` (it falls back to older opsets)."""
    for version in range(opset, 11, -1):
        if op in registry.get(version, {}):
            return registry[version][op]
    return None


# ----------------------------------------------------------------------------------------------
# Fixes around mxnet.onnx's ROIAlign and topk converters
# ----------------------------------------------------------------------------------------------
def _roi_align_wrapper(original: Any) -> Any:
    """mxnet.onnx's ``_contrib_ROIAlign`` converter is exact (bit for bit against MXNet's CPU
    kernel, rois with batch index >= 0), except that it passes a negative ``sample_ratio``
    (MXNet's own default, -1: adaptive) to ONNX RoiAlign, which ONNX Runtime refuses (its
    adaptive value is 0). Clamp it to 0; the rest is mxnet.onnx's (it refuses ``aligned`` and
    ``position_sensitive``, which ONNX opset 13 cannot express).

    A roi with a negative batch index gets zeros from the ONNX. MXNet 1.9.1's CPU kernel means
    to do the same but writes ``top_data[n] = 0`` (one element of roi 0's output, not roi n's
    block, which it leaves unwritten): no ONNX can reproduce that, nor should."""

    def convert_roi_align(node: Dict[str, Any], **kwargs: Any) -> Any:
        attrs = node.get("attrs", {})
        if int(float(attrs.get("sample_ratio", 0))) < 0:
            node = dict(node, attrs=dict(attrs, sample_ratio="0"))
        return original(node, **kwargs)

    return convert_roi_align


def _topk_wrapper(original: Any) -> Any:
    """mxnet.onnx's ``topk`` converter is exact for distinct values (among equal values MXNet's
    CPU order is std::sort's, ONNX TopK's the lower index first: not reproducible), but for
    ``k < 1`` MXNet sorts the whole axis while the ONNX returns nothing: refuse that (the op
    stays in MXNet)."""

    def convert_topk(node: Dict[str, Any], **kwargs: Any) -> Any:
        k = int(float(node.get("attrs", {}).get("k", 1)))
        if k < 1:
            raise NotImplementedError(f"topk k={k}: MXNet sorts the whole axis, mxnet.onnx's "
                                      "TopK would return no element")
        return original(node, **kwargs)

    return convert_topk


# (MXNet node name, output index) -> rank of that tensor, for the export in progress: trtc knows
# every tensor's shape (trtc/export.py sets it around each mxnet.onnx call); mx2onnx's converters
# are given no shapes, so some of them compute ranks at run time with Shape ops.
STATIC_RANKS: "contextvars.ContextVar[Mapping[Tuple[str, int], int]]" = contextvars.ContextVar(
    "trtc_static_ranks", default={})


def _input_rank(node: Dict[str, Any], kwargs: Dict[str, Any], index: int = 0) -> Optional[int]:
    """The static rank of ``node``'s input ``index`` (None where trtc did not say)."""
    source, out = node["inputs"][index][0], node["inputs"][index][1]
    return STATIC_RANKS.get().get((kwargs["mx_graph"][source]["name"], out))


def _weights_wrapper(original: Any) -> Any:
    """mxnet.onnx writes every weight with ``make_tensor(vals=array.flatten().tolist())``: one
    Python float object per value (~32 bytes each, for a 4-byte float) before ONNX packs them;
    BERT-base's export peaked 2 GB above its 418 MB of params there. The same tensor made from
    the array's bytes (ONNX ``raw_data``: identical values, one copy). Graph inputs (``is_input``)
    stay mxnet.onnx's."""

    def convert_null(node: Dict[str, Any], **kwargs: Any) -> Any:
        if kwargs.get("is_input") is not False:
            return original(node, **kwargs)
        from onnx import helper, numpy_helper

        name = node["name"]
        array = np.ascontiguousarray(kwargs["weights"][name])
        kwargs["initializer"].append(numpy_helper.from_array(array, name))
        info = helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype),
                                             array.shape)
        return [info], (array.dtype,)

    return convert_null


def _swapaxis_wrapper(original: Any) -> Any:
    """mxnet.onnx's ``SwapAxis`` pads the input to rank 8 with Shape/ScatterND/Pad/Reshape
    arithmetic, because its converter does not know the rank; TensorRT's parser refuses that
    chain where the shape is dynamic (a dynamic-batch NTC RNN model kept its two SwapAxis out of
    the engine). With the rank known it is one exact ``Transpose``."""

    def convert_swapaxis(node: Dict[str, Any], **kwargs: Any) -> Any:
        from mxnet.onnx.mx2onnx._op_translations._op_translations_opset13 import get_inputs
        from onnx.helper import make_node

        rank = _input_rank(node, kwargs)
        attrs = node.get("attrs", {})
        dims = [int(attrs.get("dim1", 0)), int(attrs.get("dim2", 0))]
        if rank is None or not all(-rank <= d < rank for d in dims):
            return original(node, **kwargs)
        first, second = (d % rank for d in dims)
        perm = list(range(rank))
        perm[first], perm[second] = second, first
        name, inputs, _ = get_inputs(node, kwargs)
        return [make_node("Transpose", [inputs[0]], [name], perm=perm, name=name)]

    return convert_swapaxis


# ----------------------------------------------------------------------------------------------
# 1-D convolution and pooling (Gluon's Conv1D, MaxPool1D, AvgPool1D, Global*Pool1D: layout NCW)
# ----------------------------------------------------------------------------------------------
def _without_ncw(node: Dict[str, Any]) -> Dict[str, Any]:
    """``node`` without ``layout='NCW'`` (mxnet.onnx's converter then takes its NCHW path)."""
    attrs = node.get("attrs", {})
    if attrs.get("layout") != "NCW":
        return node
    return dict(node, attrs={k: v for k, v in attrs.items() if k != "layout"})


def _ncw_wrapper(original: Any) -> Any:
    """mxnet.onnx's ``Convolution`` and ``Pooling`` refuse every layout but NCHW/NCDHW, and
    Gluon's Conv1D and 1-D pools write ``layout='NCW'``: every 1-D audio/text CNN ran in MXNet.
    Its NCHW path writes the ONNX Conv/MaxPool/AveragePool/Global*Pool attributes from the
    kernel, stride, pad and dilate tuples, whatever their length, and ONNX takes 1-D spatial
    dims natively (N, C, W): the same converter without the layout attribute is exact. Channel-
    last layouts (NWC, NHWC, NDHWC: MXNet runs them on GPU only) stay refused."""

    def convert_ncw(node: Dict[str, Any], **kwargs: Any) -> Any:
        return original(_without_ncw(node), **kwargs)

    return convert_ncw


def _pooling_wrapper(original: Any) -> Any:
    """``Pooling``: layout NCW as ``_ncw_wrapper``; ``pool_type='sum'`` (which mxnet.onnx
    refuses) with ``global_pool`` as one ReduceSum over the spatial axes (keepdims: MXNet's
    (N, C, 1, ...)); a windowed sum pool stays refused (no ONNX sum pool: an AveragePool
    times the window size rounds differently)."""

    def convert_pooling(node: Dict[str, Any], **kwargs: Any) -> Any:
        node = _without_ncw(node)
        attrs = node.get("attrs", {})
        if attrs.get("pool_type", "max") != "sum":
            return original(node, **kwargs)
        if not _flag(attrs.get("global_pool", "False")):
            raise NotImplementedError("Pooling pool_type='sum' with a window: no ONNX sum pool")
        rank = _input_rank(node, kwargs)
        if rank is None or rank < 3:
            raise NotImplementedError(f"global sum Pooling of a tensor of rank {rank}")
        from mxnet.onnx.mx2onnx._op_translations._op_translations_opset13 import get_inputs

        name, inputs, _ = get_inputs(node, kwargs)
        b = _Builder(name, kwargs)
        b.op("ReduceSum", [inputs[0], b.ints(*range(2, rank))], out=name, keepdims=1)
        return b.nodes

    return convert_pooling


def _flag(value: Any) -> bool:
    """A boolean attribute as MXNet writes it in a symbol ('True', 'False', '1', '0')."""
    return str(value).strip().lower() in ("true", "1")


# ----------------------------------------------------------------------------------------------
# GroupNorm
# ----------------------------------------------------------------------------------------------
def convert_group_norm(node: Dict[str, Any], **kwargs: Any) -> List[Any]:
    """MXNet 1.9.1's ``GroupNorm`` (src/operator/nn/group_norm-inl.h): the data viewed as
    (N, G, -1), each row normalized by its mean and ``sqrt(var + eps)`` (var: the mean of the
    squared deviations), then multiplied by ``gamma`` and shifted by ``beta``, both of shape
    (G,) (per group, not per channel, in MXNet 1.x), and viewed back. That is ONNX
    InstanceNormalization on the (N, G, -1) view with gamma and beta as its scale and bias.
    ``output_mean_var``: the (N, G) mean and std as outputs 1 and 2 (also under MXNet's output
    names ``<node>_mean``, ``<node>_std``). Exact up to float summation order."""
    from mxnet.onnx.mx2onnx._op_translations._op_translations_opset13 import (
        get_input_dtypes, get_inputs)

    name, inputs, attrs = get_inputs(node, kwargs)
    groups = int(attrs.get("num_groups", 1))
    eps = float(attrs.get("eps", 1e-5))
    dtype = np.dtype(get_input_dtypes(node, kwargs)[0])
    if dtype.kind != "f":
        raise NotImplementedError(f"GroupNorm on {dtype} data")
    b = _Builder(name, kwargs)
    rows = b.op("Reshape", [inputs[0], b.ints(0, groups, -1)])
    normed = b.op("InstanceNormalization", [rows, inputs[1], inputs[2]], epsilon=eps)
    b.op("Reshape", [normed, b.op("Shape", [inputs[0]])], out=name)
    if _flag(attrs.get("output_mean_var", "False")):
        mean = b.op("ReduceMean", [rows], axes=[2], keepdims=1)
        deviation = b.op("Sub", [rows, mean])
        var = b.op("ReduceMean", [b.op("Mul", [deviation, deviation])], axes=[2], keepdims=0)
        b.op("Squeeze", [mean, b.ints(2)], out=f"{name}1")
        b.op("Sqrt", [b.op("Add", [var, b.const(eps, dtype, "eps")])], out=f"{name}2")
        b.op("Identity", [f"{name}1"], out=f"{name}_mean")
        b.op("Identity", [f"{name}2"], out=f"{name}_std")
    return b.nodes


# ----------------------------------------------------------------------------------------------
# Element-wise ops mxnet.onnx has no converter for
# ----------------------------------------------------------------------------------------------
def _elementwise(build: Any, floats_only: Sequence[str] = ("float16", "float32", "float64")
                 ) -> Any:
    """An mx2onnx converter from ``build(b, inputs, attrs, dtype, out)``, which appends the ONNX
    nodes computing the op's one output ``out``; data types outside ``floats_only`` are
    refused (the op stays in MXNet)."""

    def convert(node: Dict[str, Any], **kwargs: Any) -> List[Any]:
        from mxnet.onnx.mx2onnx._op_translations._op_translations_opset13 import (
            get_input_dtypes, get_inputs)

        name, inputs, attrs = get_inputs(node, kwargs)
        dtype = np.dtype(get_input_dtypes(node, kwargs)[0])
        if floats_only and dtype.name not in floats_only:
            raise NotImplementedError(f"{node['op']} on {dtype} data: exported for "
                                      f"{', '.join(floats_only)} only")
        b = _Builder(name, kwargs)
        build(b, inputs, attrs, dtype, name)
        return b.nodes

    convert.__doc__ = build.__doc__
    return convert


def _onnx_type(dtype: np.dtype) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _build_maximum(b: _Builder, inputs: List[str], attrs: Dict[str, str], dtype: np.dtype,
                   out: str) -> None:
    """``broadcast_maximum``: ONNX Max (multidirectional broadcast, as MXNet's); NaN from either
    side propagates in both. Between 0.0 and -0.0 MXNet returns the second operand."""
    b.op("Max", inputs[:2], out=out)


def _build_hypot(b: _Builder, inputs: List[str], attrs: Dict[str, str], dtype: np.dtype,
                 out: str) -> None:
    """``broadcast_hypot``: ``sqrt(x*x + y*y)``. MXNet's hypotf is correctly rounded and does
    not overflow; this is within an ulp of it, and gives inf where x*x + y*y overflows
    (|x| or |y| above ~1.8e19)."""
    x, y = inputs[:2]
    b.op("Sqrt", [b.op("Add", [b.op("Mul", [x, x]), b.op("Mul", [y, y])])], out=out)


def _build_erf(b: _Builder, inputs: List[str], attrs: Dict[str, str], dtype: np.dtype,
               out: str) -> None:
    """``erf``: ONNX Erf (ONNX Runtime's approximation is within an ulp of MXNet's erff)."""
    b.op("Erf", inputs[:1], out=out)


def _build_sign(b: _Builder, inputs: List[str], attrs: Dict[str, str], dtype: np.dtype,
                out: str) -> None:
    """``sign``: MXNet's ``a < 0 ? -1 : a > 0 ? 1 : 0``, i.e. sign(NaN) = 0 and sign(-0.0) =
    +0.0, where ONNX Sign gives NaN: built from two compares, bit-exact."""
    zero = b.const(0, dtype, "zero")
    positive = b.op("Cast", [b.op("Greater", [inputs[0], zero])], to=_onnx_type(dtype))
    negative = b.op("Cast", [b.op("Less", [inputs[0], zero])], to=_onnx_type(dtype))
    b.op("Sub", [positive, negative], out=out)


def _build_softsign(b: _Builder, inputs: List[str], attrs: Dict[str, str], dtype: np.dtype,
                    out: str) -> None:
    """``softsign``: MXNet's ``a / (1 + |a|)`` spelled out, bit-exact (ONNX Runtime's Softsign
    rounds differently)."""
    x = inputs[0]
    b.op("Div", [x, b.op("Add", [b.const(1, dtype, "one"), b.op("Abs", [x])])], out=out)


def _build_softmin(b: _Builder, inputs: List[str], attrs: Dict[str, str], dtype: np.dtype,
                   out: str) -> None:
    """``softmin``: ONNX Softmax of ``-x`` (of ``-x / temperature``) along ``axis``; MXNet
    divides after subtracting the maximum: equal up to rounding. Refused: ``use_length``,
    a ``dtype`` other than the data's."""
    if _flag(attrs.get("use_length", "False")):
        raise NotImplementedError("softmin use_length=True")
    if attrs.get("dtype", "None") not in ("None", dtype.name):
        raise NotImplementedError(f"softmin dtype={attrs['dtype']} on {dtype} data")
    x = b.op("Neg", inputs[:1])
    temperature = attrs.get("temperature", "None")
    if temperature not in ("None", "") and float(temperature) != 1.0:
        x = b.op("Div", [x, b.const(float(temperature), dtype, "temperature")])
    b.op("Softmax", [x], out=out, axis=int(attrs.get("axis", -1)))


def _build_smooth_l1(b: _Builder, inputs: List[str], attrs: Dict[str, str], dtype: np.dtype,
                     out: str) -> None:
    """``smooth_l1`` with sigma = ``scalar`` (default 1): MXNet's kernel (mshadow_op.h
    smooth_l1_loss), step for step in the data's type: ``a > 1/s^2 ? a - 0.5/s^2 : a < -1/s^2
    ? -a - 0.5/s^2 : 0.5*a*a*s^2``; NaN takes the last branch in both. Bit-exact."""
    sigma = dtype.type(float(attrs.get("scalar", 1.0)))
    bsq = sigma * sigma
    ibsq = dtype.type(1.0) / bsq
    half_ibsq = dtype.type(0.5) * ibsq
    x = inputs[0]
    above = b.op("Sub", [x, b.const(half_ibsq, dtype, "h")])
    below = b.op("Sub", [b.op("Neg", [x]), b.const(half_ibsq, dtype, "h")])
    square = b.op("Mul", [b.op("Mul", [b.op("Mul", [b.const(0.5, dtype, "half"), x]), x]),
                          b.const(bsq, dtype, "bsq")])
    inner = b.op("Where", [b.op("Less", [x, b.const(-ibsq, dtype, "t")]), below, square])
    b.op("Where", [b.op("Greater", [x, b.const(ibsq, dtype, "t")]), above, inner], out=out)


def _trunc(b: _Builder, x: str, dtype: np.dtype) -> str:
    """Round toward zero: ``x < 0 ? ceil(x) : floor(x)`` (NaN and inf kept)."""
    return b.op("Where", [b.op("Less", [x, b.const(0, dtype, "zero")]), b.op("Ceil", [x]),
                          b.op("Floor", [x])])


def _build_round(b: _Builder, inputs: List[str], attrs: Dict[str, str], dtype: np.dtype,
                 out: str) -> None:
    """``round``: C's roundf, halves away from zero. Not ``floor(|x| + 0.5)``, which rounds
    0.49999997 and 8388609 wrong: the truncation plus one step away from zero where the
    (exact) fractional part is at least 0.5. Exact (NaN, inf included; a zero's sign aside)."""
    x = inputs[0]
    whole = _trunc(b, x, dtype)
    away = b.op("GreaterOrEqual", [b.op("Abs", [b.op("Sub", [x, whole])]),
                                   b.const(0.5, dtype, "half")])
    step = b.op("Where", [b.op("Less", [x, b.const(0, dtype, "zero")]),
                          b.const(-1, dtype, "down"), b.const(1, dtype, "up")])
    b.op("Where", [away, b.op("Add", [whole, step]), whole], out=out)


def _build_fix(b: _Builder, inputs: List[str], attrs: Dict[str, str], dtype: np.dtype,
               out: str) -> None:
    """``fix``: MXNet's own formula (mshadow_op.h), ``|floor(x)| < |ceil(x)| ? floor : ceil``.
    Exact (a zero's sign aside)."""
    floor, ceil = b.op("Floor", inputs[:1]), b.op("Ceil", inputs[:1])
    b.op("Where", [b.op("Less", [b.op("Abs", [floor]), b.op("Abs", [ceil])]), floor, ceil],
         out=out)


def _build_trunc(b: _Builder, inputs: List[str], attrs: Dict[str, str], dtype: np.dtype,
                 out: str) -> None:
    """``trunc``: C's truncf. Exact (a zero's sign aside)."""
    b.op("Identity", [_trunc(b, inputs[0], dtype)], out=out)


def _build_rint(b: _Builder, inputs: List[str], attrs: Dict[str, str], dtype: np.dtype,
                out: str) -> None:
    """``rint``: MXNet's own (mshadow_op.h), ``x - floor(x) <= ceil(x) - x ? floor : ceil``:
    halves go *down* (2.5 -> 2, -2.5 -> -3), neither C's rint nor numpy's. Exact (a zero's
    sign aside)."""
    x = inputs[0]
    floor, ceil = b.op("Floor", [x]), b.op("Ceil", [x])
    down = b.op("LessOrEqual", [b.op("Sub", [x, floor]), b.op("Sub", [ceil, x])])
    b.op("Where", [down, floor, ceil], out=out)


# ----------------------------------------------------------------------------------------------
# Indexing, scans, sorting and reductions mxnet.onnx has no (exact) converter for
# ----------------------------------------------------------------------------------------------
def _axis_size(b: _Builder, data: str, axis: int) -> str:
    """The size of ``data``'s ``axis`` as a 1-element int64 tensor (from its shape at run
    time)."""
    stop = axis + 1 if axis != -1 else _INT64_MAX
    return b.op("Slice", [b.op("Shape", [data]), b.ints(axis), b.ints(stop)])


def _build_pick(b: _Builder, inputs: List[str], attrs: Dict[str, str], dtype: np.dtype,
                out: str) -> None:
    """``pick``: GatherElements along ``axis``. MXNet truncates the (usually float) index to an
    int, then ``mode='clip'`` (the default) clips it to [0, n-1] and ``'wrap'`` takes it modulo
    n (non-negative: ONNX Mod with fmod=0 takes the divisor's sign). The index, with or without
    the axis (MXNet takes either), is reshaped to have it (size 1); without ``keepdims`` the
    output is squeezed there. Refused:
    ``axis=None`` (pick from the flattened input)."""
    if attrs.get("axis", "-1") in ("None", ""):
        raise NotImplementedError("pick axis=None (from the flattened input)")
    axis = int(attrs.get("axis", "-1"))
    mode = attrs.get("mode", "clip")
    if mode not in ("clip", "wrap"):
        raise NotImplementedError(f"pick mode={mode}")
    keepdims = _flag(attrs.get("keepdims", "False"))
    data = inputs[0]
    index = b.op("Cast", [inputs[1]], to=_ONNX_INT64)
    size = _axis_size(b, data, axis)
    if mode == "clip":
        last = b.op("Sub", [size, b.ints(1)])
        index = b.op("Max", [b.op("Min", [index, last]), b.ints(0)])
    else:
        index = b.op("Mod", [index, size], fmod=0)
    # MXNet reads the index as flat (its shape: the data's without the axis, or with it of size
    # 1, either way): reshape it to the data's shape with the axis of size 1
    shape = b.op("Shape", [data])
    parts = [b.op("Slice", [shape, b.ints(0), b.ints(axis)]), b.ints(1)]
    if axis != -1:
        parts.append(b.op("Slice", [shape, b.ints(axis + 1), b.ints(_INT64_MAX)]))
    index = b.op("Reshape", [index, b.op("Concat", parts, axis=0)])
    if keepdims:
        b.op("GatherElements", [data, index], out=out, axis=axis)
    else:
        picked = b.op("GatherElements", [data, index], axis=axis)
        b.op("Squeeze", [picked, b.ints(axis)], out=out)


_CUMSUM_TYPES = ("float32", "float64", "int32", "int64")


def _build_cumsum(b: _Builder, inputs: List[str], attrs: Dict[str, str], dtype: np.dtype,
                  out: str) -> None:
    """``_np_cumsum``: ONNX CumSum (a running sum in order, as MXNet's) along ``axis``; ``axis
    None``: of the flattened data. ``dtype``: the data cast to it first (MXNet sums in the
    output type). Refused: types ONNX CumSum (opset 13) lacks (float16, int8, bool, ...)."""
    out_type = np.dtype(attrs["dtype"]) if attrs.get("dtype", "None") != "None" else dtype
    if dtype.name not in _CUMSUM_TYPES or out_type.name not in _CUMSUM_TYPES:
        raise NotImplementedError(f"cumsum of {dtype} to {out_type}: ONNX CumSum (opset 13) "
                                  f"takes {', '.join(_CUMSUM_TYPES)}")
    data = inputs[0]
    if out_type != dtype:
        data = b.op("Cast", [data], to=_onnx_type(out_type))
    axis = attrs.get("axis", "None")
    if axis in ("None", ""):
        data, axis = b.op("Reshape", [data, b.ints(-1)]), "0"
    b.op("CumSum", [data, b.const(int(axis), np.int64, "axis")], out=out)


def _build_sort(b: _Builder, inputs: List[str], attrs: Dict[str, str], dtype: np.dtype,
                out: str) -> None:
    """``sort``: the values of ONNX TopK with k = the axis' size, ``largest = not is_ascend``
    (values only: the order among equal values cannot show). MXNet names its one visible
    output ``<node>_output0`` (sort has a hidden second), so mx2onnx wants ``<node>0``.
    Refused: ``axis=None``."""
    if attrs.get("axis", "-1") in ("None", ""):
        raise NotImplementedError("sort axis=None (of the flattened input)")
    axis = int(attrs.get("axis", "-1"))
    ascending = _flag(attrs.get("is_ascend", "True"))
    data = inputs[0]
    values, _ = b.op("TopK", [data, _axis_size(b, data, axis)], outputs=2, axis=axis,
                     largest=0 if ascending else 1, sorted=1)
    b.op("Identity", [values], out=f"{out}0")


def convert_moments(node: Dict[str, Any], **kwargs: Any) -> List[Any]:
    """``moments``: mean = ReduceMean over ``axes``, variance = the ReduceMean of the squared
    deviations from it (MXNet's moments-inl.h: the same two passes), both with or without
    ``keepdims``. Outputs ``<node>0``, ``<node>1``. Exact up to float summation order."""
    from mxnet.onnx.mx2onnx._op_translations._op_translations_opset13 import (
        get_input_dtypes, get_inputs)

    name, inputs, attrs = get_inputs(node, kwargs)
    dtype = np.dtype(get_input_dtypes(node, kwargs)[0])
    axes = _int_tuple(attrs.get("axes", "()")) if attrs.get("axes", "None") != "None" else []
    if dtype.kind != "f" or not axes:
        raise NotImplementedError(f"moments on {dtype} data, axes={axes}")
    keepdims = int(_flag(attrs.get("keepdims", "False")))
    b = _Builder(name, kwargs)
    mean = b.op("ReduceMean", [inputs[0]], axes=axes, keepdims=1)
    deviation = b.op("Sub", [inputs[0], mean])
    b.op("ReduceMean", [b.op("Mul", [deviation, deviation])], out=f"{name}1", axes=axes,
         keepdims=keepdims)
    if keepdims:
        b.op("Identity", [mean], out=f"{name}0")
    else:
        b.op("Squeeze", [mean, b.ints(*axes)], out=f"{name}0")
    return b.nodes


def convert_l2_normalization(node: Dict[str, Any], **kwargs: Any) -> List[Any]:
    """``L2Normalization``: MXNet's ``x / sqrt(sum(x^2) + eps)`` over the axes of ``mode``:
    'instance' (all but the first), 'channel' (1), 'spatial' (2 and after). mxnet.onnx refused
    'instance' and 'spatial' and wrote 'channel' as ONNX LpNormalization, which has no eps
    (x / ||x||: NaN for an all-zero vector where MXNet gives 0). Exact up to summation order.
    Needs the data's rank (trtc gives it) for 'instance' and 'spatial'."""
    from mxnet.onnx.mx2onnx._op_translations._op_translations_opset13 import (
        get_input_dtypes, get_inputs)

    name, inputs, attrs = get_inputs(node, kwargs)
    dtype = np.dtype(get_input_dtypes(node, kwargs)[0])
    mode = attrs.get("mode", "instance")
    rank = _input_rank(node, kwargs)
    if mode == "channel":
        axes = [1]
    elif rank is None or mode not in ("instance", "spatial"):
        raise NotImplementedError(f"L2Normalization mode={mode} on data of rank {rank}")
    else:
        axes = list(range(1 if mode == "instance" else 2, rank))
    if dtype.kind != "f":
        raise NotImplementedError(f"L2Normalization on {dtype} data")
    b = _Builder(name, kwargs)
    x = inputs[0]
    squares = b.op("ReduceSum", [b.op("Mul", [x, x]), b.ints(*axes)], keepdims=1)
    eps = b.const(float(attrs.get("eps", 1e-10)), dtype, "eps")
    b.op("Div", [x, b.op("Sqrt", [b.op("Add", [squares, eps])])], out=name)
    return b.nodes


def _batchnorm_wrapper(original: Any) -> Any:
    """mxnet.onnx's ``BatchNorm`` refuses ``axis != 1`` (a channel-last BatchNorm, Gluon's
    ``BatchNorm(axis=-1)`` after a Dense on (N, T, C)). The same ONNX BatchNormalization between
    two Transposes that move the axis to 1 and back (the rank is trtc's)."""

    def convert_batchnorm(node: Dict[str, Any], **kwargs: Any) -> Any:
        axis = int(node.get("attrs", {}).get("axis", 1))
        rank = _input_rank(node, kwargs)
        if axis == 1 or rank is None or not -rank <= axis < rank or axis % rank == 1:
            return original(node, **kwargs)
        from mxnet.onnx.mx2onnx._op_translations._op_translations_opset13 import get_inputs

        name, inputs, attrs = get_inputs(node, kwargs)
        axis %= rank
        perm = list(range(rank))
        perm[1], perm[axis] = axis, 1  # a swap: its own inverse
        b = _Builder(name, kwargs)
        moved = b.op("Transpose", [inputs[0]], perm=perm)
        normed = b.op("BatchNormalization", [moved, *inputs[1:5]],
                      epsilon=float(attrs.get("eps", 0.001)),
                      momentum=float(attrs.get("momentum", 0.9)))
        b.op("Transpose", [normed], out=name, perm=perm)
        return b.nodes

    return convert_batchnorm


# ----------------------------------------------------------------------------------------------
# A tiny graph builder over mx2onnx's converter kwargs
# ----------------------------------------------------------------------------------------------
class _Builder:
    """Collects the ONNX nodes of one converted MXNet node; tensor names ``<node>__<n>``.

    Constants go to mx2onnx's initializer list (``kwargs['initializer']``), as its own
    converters do."""

    def __init__(self, name: str, kwargs: Dict[str, Any]):
        self.name = name
        self.initializer = kwargs["initializer"]
        self.nodes: List[Any] = []
        self._count = 0

    def _fresh(self, hint: str) -> str:
        self._count += 1
        return f"{self.name}__{hint}{self._count}"

    def const(self, value: Any, dtype: Any, hint: str = "c") -> str:
        """An initializer holding ``value`` (a scalar stays rank 0); returns its name."""
        from onnx import numpy_helper

        name = self._fresh(hint)
        self.initializer.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))
        return name

    def ints(self, *values: int) -> str:
        """A 1-D int64 initializer."""
        return self.const(list(values), np.int64, "i")

    def op(self, op_type: str, inputs: Sequence[str], outputs: int = 1,
           out: Optional[str] = None, **attrs: Any) -> Any:
        """Append one node; returns its output name (or the list of them, ``outputs > 1``)."""
        from onnx import helper

        names = [out] if out else [self._fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names


# ----------------------------------------------------------------------------------------------
# box_nms
# ----------------------------------------------------------------------------------------------
def _box_nms_params(attrs: Dict[str, str]) -> Dict[str, Any]:
    """box_nms's attributes with MXNet's defaults (symbol JSON stores them as strings)."""

    def flag(value: str) -> bool:
        return str(value).strip().lower() in ("true", "1")

    return {
        "overlap_thresh": float(attrs.get("overlap_thresh", 0.5)),
        "valid_thresh": float(attrs.get("valid_thresh", 0)),
        "topk": int(attrs.get("topk", -1)),
        "coord_start": int(attrs.get("coord_start", 2)),
        "score_index": int(attrs.get("score_index", 1)),
        "id_index": int(attrs.get("id_index", -1)),
        "background_id": int(attrs.get("background_id", -1)),
        "force_suppress": flag(attrs.get("force_suppress", "False")),
        "in_format": str(attrs.get("in_format", "corner")),
        "out_format": str(attrs.get("out_format", "corner")),
    }


def convert_box_nms(node: Dict[str, Any], **kwargs: Any) -> List[Any]:
    """mx2onnx converter for ``_contrib_box_nms``: MXNet's exact output 0 (see module doc).

    The output is named ``<node>0``: the op has two outputs (the second, a backward record, is
    hidden), so MXNet names the visible one ``<node>_output0`` and mx2onnx looks for ``<node>0``.

    Raises:
        NotImplementedError: parameters or dtypes ONNX cannot reproduce exactly (module doc).
    """
    from mxnet.onnx.mx2onnx._op_translations._op_translations_opset13 import (
        get_input_dtypes, get_inputs)

    name, inputs, attrs = get_inputs(node, kwargs)
    p = _box_nms_params(attrs)
    dtype = np.dtype(get_input_dtypes(node, kwargs)[0])
    if dtype != np.float32:
        raise NotImplementedError(f"box_nms on {dtype} data: ONNX NonMaxSuppression takes "
                                  "float32 only, MXNet computes in the data's type")
    for key in ("in_format", "out_format"):
        if p[key] not in ("corner", "center"):
            raise NotImplementedError(f"box_nms {key}={p[key]!r}")
    if p["overlap_thresh"] < 0:
        raise NotImplementedError("box_nms overlap_thresh < 0: ONNX Runtime's "
                                  "NonMaxSuppression takes thresholds in [0, 1] only")
    suppresses = p["overlap_thresh"] < 1  # MXNet's float32 IoU is never above 1
    if suppresses and p["in_format"] == "center":
        raise NotImplementedError(
            "box_nms in_format='center': MXNet's IoU takes areas as width*height, ONNX "
            "NonMaxSuppression from the corners it computes (the last bit can differ and flip "
            "a decision at the threshold); kept in MXNet")

    b = _Builder(name, kwargs)
    out = f"{name}0"
    if p["topk"] == 0:  # MXNet returns its input unchanged
        b.op("Identity", [inputs[0]], out=out)
        return b.nodes
    _box_nms_graph(b, inputs[0], p, suppresses, out)
    return b.nodes


def _box_nms_graph(b: _Builder, data: str, p: Dict[str, Any], suppresses: bool,
                   out: str) -> None:
    """The ONNX graph of box_nms from input ``data`` to output ``out`` (module doc)."""
    f32 = np.float32
    shape = b.op("Shape", [data])
    n_k = b.op("Slice", [shape, b.ints(-2), b.ints(_INT64_MAX)])
    x = b.op("Reshape", [data, b.op("Concat", [b.ints(-1), n_k], axis=0)])  # (B, N, K)
    n = b.op("Slice", [shape, b.ints(-2), b.ints(-1)])  # (1,)

    # valid rows: score > valid_thresh [and id != background_id]
    score = b.op("Gather", [x, b.const(p["score_index"], np.int64)], axis=2)  # (B, N)
    valid = b.op("Greater", [score, b.const(p["valid_thresh"], f32)])
    if p["id_index"] >= 0:
        ids = b.op("Gather", [x, b.const(p["id_index"], np.int64)], axis=2)
        background = b.op("Equal", [ids, b.const(p["background_id"], f32)])
        valid = b.op("And", [valid, b.op("Not", [background])])
    neg_inf = b.const(-np.inf, f32)
    masked = b.op("Where", [valid, score, neg_inf])

    # the first topk valid rows in MXNet's order (score descending, ties by index)
    t = n if p["topk"] < 0 else b.op("Min", [n, b.ints(p["topk"])])  # (1,)
    top_score, top_index = b.op("TopK", [masked, t], outputs=2, axis=1, largest=1, sorted=1)
    cand = b.op("GatherND", [x, b.op("Unsqueeze", [top_index, b.ints(2)])], batch_dims=1)
    cand_valid = b.op("Greater", [top_score, neg_inf])  # (B, T); valid scores are > -inf
    position = b.op("Range", [b.const(0, np.int64), b.op("Squeeze", [t, b.ints(0)]),
                              b.const(1, np.int64)])  # (T,)

    if suppresses:
        keep = _nms_keep(b, cand, cand_valid, t, position, p)
    else:
        keep = cand_valid
    rows = _compact_rows(b, cand, keep, position)  # (B, T, K)
    if p["in_format"] != p["out_format"]:
        rows = _convert_format(b, rows, p["coord_start"], p["out_format"])
    if p["topk"] >= 0:  # T may be < N: -1 rows after
        pads = b.op("Concat", [b.ints(0, 0, 0, 0), b.op("Sub", [n, t]), b.ints(0)], axis=0)
        rows = b.op("Pad", [rows, pads, b.const(-1, f32)], mode="constant")
    b.op("Reshape", [rows, shape], out=out)


def _nms_keep(b: _Builder, cand: str, cand_valid: str, t: str, position: str,
              p: Dict[str, Any]) -> str:
    """(B, T) bool: which candidates MXNet's greedy NMS keeps (ONNX NonMaxSuppression)."""
    f32 = np.float32
    cs = p["coord_start"]
    boxes = b.op("Slice", [cand, b.ints(cs), b.ints(cs + 4), b.ints(2)])  # (B, T, 4)
    # MXNet: area 0 when x2 - x1 < 0 or y2 - y1 < 0, and such a box (or one with a NaN extent)
    # overlaps nothing. ONNX Runtime would swap its corners: give it an all-zero box instead.
    low = b.op("Slice", [boxes, b.ints(0), b.ints(2), b.ints(2)])
    high = b.op("Slice", [boxes, b.ints(2), b.ints(4), b.ints(2)])
    extent = b.op("Sub", [high, low])  # (B, T, 2)
    proper = b.op("Not", [b.op("Less", [extent, b.const(0, f32)])])
    proper = b.op("And", [proper, b.op("Equal", [extent, extent])])  # and not NaN
    proper = b.op("And", [b.op("Slice", [proper, b.ints(0), b.ints(1), b.ints(2)]),
                          b.op("Slice", [proper, b.ints(1), b.ints(2), b.ints(2)])])  # (B, T, 1)
    boxes = b.op("Where", [proper, boxes, b.const(0, f32)])

    # synthetic scores T, T-1, ..., 1 in MXNet's order; 0 (below the threshold) for invalid rows
    rank = b.op("Sub", [b.op("Cast", [t], to=_ONNX_FLOAT),
                        b.op("Cast", [position], to=_ONNX_FLOAT)])  # (T,)
    synthetic = b.op("Where", [cand_valid, rank, b.const(0, f32)])  # (B, T)
    if p["id_index"] >= 0 and not p["force_suppress"]:
        scores = _per_class_scores(b, cand, cand_valid, synthetic, p["id_index"])
    else:
        scores = b.op("Unsqueeze", [synthetic, b.ints(1)])  # (B, 1, T)
    selected = b.op("NonMaxSuppression", [
        boxes, scores, b.ints(_INT64_MAX), b.const([p["overlap_thresh"]], f32),
        b.const([0.5], f32)], center_point_box=0)  # (M, 3): batch, class, candidate
    where = b.op("Gather", [selected, b.ints(0, 2)], axis=1)  # (M, 2)
    zeros = b.op("ConstantOfShape", [b.op("Shape", [synthetic])],
                 value=_tensor(np.zeros(1, f32)))
    ones = b.op("ConstantOfShape", [b.op("Slice", [b.op("Shape", [selected]), b.ints(0),
                                                   b.ints(1)])],
                value=_tensor(np.ones(1, f32)))
    marked = b.op("ScatterND", [zeros, where, ones])  # (B, T): 1 where kept
    return b.op("Greater", [marked, b.const(0, f32)])


def _per_class_scores(b: _Builder, cand: str, cand_valid: str, synthetic: str,
                      id_index: int) -> str:
    """(B, C, T) scores for NonMaxSuppression's class axis: candidate j's synthetic score under
    class c = (smallest class) + c when candidate j is of that class, else 0."""
    ids = _class_ids(b, b.op("Gather", [cand, b.const(id_index, np.int64)], axis=2), cand_valid)
    lowest = b.op("ReduceMin", [b.op("Where", [cand_valid, ids, b.const(_NO_CLASS, np.int64)])],
                  keepdims=0)
    highest = b.op("ReduceMax", [b.op("Where", [cand_valid, ids,
                                                b.const(-_NO_CLASS, np.int64)])], keepdims=0)
    # no valid candidate: Range(2**40, -2**40 + 1) is empty, so is the class axis
    classes = b.op("Range", [lowest, b.op("Add", [highest, b.const(1, np.int64)]),
                             b.const(1, np.int64)])  # (C,)
    member = b.op("Equal", [b.op("Unsqueeze", [ids, b.ints(1)]),
                            b.op("Unsqueeze", [classes, b.ints(1)])])  # (B, C, T)
    return b.op("Where", [member, b.op("Unsqueeze", [synthetic, b.ints(1)]),
                          b.const(0, np.float32)])


def _class_ids(b: _Builder, ids: str, valid: str) -> str:
    """(B, T) int64 class of each candidate, as MXNet's x86 CPU kernel compares them:
    ``static_cast<int>(id)`` truncates, and turns NaN, infinities and ids outside int32 into
    INT_MIN (cvttss2si). Those odd ids (one class) are renumbered just below the smallest other
    valid class, so that the class axis spans the ids actually used, not 2**31 of them."""
    f32, i64 = np.float32, np.int64
    in_range = b.op("And", [b.op("GreaterOrEqual", [ids, b.const(-2.0 ** 31, f32)]),
                            b.op("Less", [ids, b.const(2.0 ** 31, f32)])])  # NaN: False
    int_min = b.const(-(2 ** 31), i64)
    ids = b.op("Where", [in_range, b.op("Cast", [ids], to=_ONNX_INT64), int_min])
    odd = b.op("Equal", [ids, int_min])
    ordinary = b.op("And", [valid, b.op("Not", [odd])])
    lowest = b.op("ReduceMin", [b.op("Where", [ordinary, ids, b.const(_NO_CLASS, i64)])],
                  keepdims=0)
    return b.op("Where", [odd, b.op("Sub", [lowest, b.const(1, i64)]), ids])


def _compact_rows(b: _Builder, cand: str, keep: str, position: str) -> str:
    """(B, T, K): the kept candidate rows first, in order, then -1 rows (MXNet's nms_assign)."""
    f32 = np.float32
    pos = b.op("Cast", [position], to=_ONNX_FLOAT)  # (T,), exact below 2**24
    t = b.op("Cast", [b.op("Shape", [position])], to=_ONNX_FLOAT)
    key = b.op("Where", [keep, pos, b.op("Add", [pos, t])])  # kept first, each group in order
    _, order = b.op("TopK", [key, b.op("Shape", [position])], outputs=2, axis=1, largest=0,
                    sorted=1)
    rows = b.op("GatherND", [cand, b.op("Unsqueeze", [order, b.ints(2)])], batch_dims=1)
    count = b.op("ReduceSum", [b.op("Cast", [keep], to=_ONNX_FLOAT), b.ints(1)],
                 keepdims=1)  # (B, 1)
    live = b.op("Unsqueeze", [b.op("Less", [pos, count]), b.ints(2)])  # (B, T, 1)
    return b.op("Where", [live, rows, b.const(-1, f32)])


def _convert_format(b: _Builder, rows: str, cs: int, out_format: str) -> str:
    """MXNet's corner_to_center / center_to_corner on the 4 coordinates at ``cs``, skipped for
    rows whose first coordinate is < 0 (as MXNet does: meant for the -1 rows)."""
    f32 = np.float32

    def column(i: int) -> str:
        return b.op("Slice", [rows, b.ints(cs + i), b.ints(cs + i + 1), b.ints(2)])

    c0, c1, c2, c3 = (column(i) for i in range(4))
    two = b.const(2, f32)
    if out_format == "center":  # from corners: ((l + r) / 2, (t + b) / 2, r - l, b - t)
        new = [b.op("Div", [b.op("Add", [c0, c2]), two]),
               b.op("Div", [b.op("Add", [c1, c3]), two]),
               b.op("Sub", [c2, c0]), b.op("Sub", [c3, c1])]
    else:  # from centers: w = width / 2, h = height / 2: (x - w, y - h, x + w, y + h)
        half_w, half_h = b.op("Div", [c2, two]), b.op("Div", [c3, two])
        new = [b.op("Sub", [c0, half_w]), b.op("Sub", [c1, half_h]),
               b.op("Add", [c0, half_w]), b.op("Add", [c1, half_h])]
    skip = b.op("Less", [c0, b.const(0, f32)])  # (B, T, 1)
    coords = b.op("Concat", [b.op("Where", [skip, old, new_])
                             for old, new_ in zip((c0, c1, c2, c3), new)], axis=2)
    before = b.op("Slice", [rows, b.ints(0), b.ints(cs), b.ints(2)])
    after = b.op("Slice", [rows, b.ints(cs + 4), b.ints(_INT64_MAX), b.ints(2)])
    return b.op("Concat", [before, coords, after], axis=2)


# ----------------------------------------------------------------------------------------------
# RNN (the fused LSTM / GRU / vanilla RNN of gluon.rnn)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _RnnMode:
    """How one MXNet RNN ``mode`` maps onto ONNX."""

    onnx_op: str
    order: Tuple[int, ...]  # ONNX gate k is MXNet gate order[k]
    activation: Optional[str] = None  # vanilla RNN: ONNX 'activations', one per direction
    linear_before_reset: bool = False  # GRU

    @property
    def gates(self) -> int:
        return len(self.order)


# MXNet 1.9.1's gates (src/operator/rnn_impl.h): LSTM i, f, g, o; GRU r, z, n with
# n = tanh(W_n x + b_in + r * (R_n h + b_hn)). ONNX: LSTM i, o, f, c; GRU z, r, h, and
# linear_before_reset=1 is that n.
_RNN_MODES: Dict[str, _RnnMode] = {
    "lstm": _RnnMode("LSTM", (0, 3, 1, 2)),
    "gru": _RnnMode("GRU", (1, 0, 2), linear_before_reset=True),
    "rnn_tanh": _RnnMode("RNN", (0,), activation="Tanh"),
    "rnn_relu": _RnnMode("RNN", (0,), activation="Relu"),
}


@dataclass(frozen=True)
class _RnnSpec:
    """The attributes of one MXNet ``RNN`` node that shape its ONNX."""

    mode: _RnnMode
    hidden: int
    layers: int
    directions: int
    state_outputs: bool

    @property
    def lstm(self) -> bool:
        return self.mode.onnx_op == "LSTM"


def _rnn_spec(attrs: Dict[str, str]) -> _RnnSpec:
    """The node's attributes (MXNet's defaults where absent).

    Raises:
        NotImplementedError: what no ONNX LSTM/GRU/RNN computes as MXNet does.
    """
    def flag(key: str) -> bool:
        return str(attrs.get(key, "False")).strip().lower() in ("true", "1")

    def given(key: str) -> bool:
        return str(attrs.get(key, "None")).strip() not in ("None", "")

    mode = str(attrs.get("mode", ""))
    if mode not in _RNN_MODES:
        raise NotImplementedError(f"RNN mode={mode!r}")
    if flag("use_sequence_length"):
        raise NotImplementedError("RNN use_sequence_length=True: MXNet computes it with cuDNN "
                                  "only; not exported (kept in MXNet)")
    if given("projection_size"):
        raise NotImplementedError("RNN projection_size (LSTMP): ONNX LSTM has no projection")
    if given("lstm_state_clip_min") or given("lstm_state_clip_max"):
        raise NotImplementedError("RNN lstm_state_clip_min/max: ONNX LSTM's clip bounds the "
                                  "gates' inputs, not the cell state")
    # 'p' (dropout between layers) applies in training only
    return _RnnSpec(mode=_RNN_MODES[mode], hidden=int(attrs["state_size"]),
                    layers=int(attrs.get("num_layers", 1)),
                    directions=2 if flag("bidirectional") else 1,
                    state_outputs=flag("state_outputs"))


def _rnn_input_size(spec: _RnnSpec, count: int) -> int:
    """The data's feature size, from the length of MXNet's flat ``parameters`` (GetRnnParamSize:
    (I + H + 2) * G*H*D for layer 0, (D*H + H + 2) * G*H*D for each other layer)."""
    h, d = spec.hidden, spec.directions
    per_row = spec.mode.gates * h * d
    first = count - (spec.layers - 1) * (d * h + h + 2) * per_row
    if first <= 0 or first % per_row or first // per_row - h - 2 < 1:
        raise NotImplementedError(f"RNN parameters of {count} values do not fit "
                                  f"{spec.layers} layer(s) of {h} (directions {d})")
    return first // per_row - h - 2


def _rnn_weights(spec: _RnnSpec, flat: np.ndarray
                 ) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """ONNX (W, R, B) of each layer from MXNet's flat ``parameters``, gates in ONNX's order.

    MXNet's layout (rnn-inl.h, rnn_impl.h): first every weight, per layer and direction
    ``W_x (G*H, I_l)`` then ``W_h (G*H, H)``; then every bias, per layer and direction ``b_x``
    then ``b_h`` (G*H each). ONNX: W (D, G*H, I_l), R (D, G*H, H), B (D, 2*G*H) = [b_x, b_h]."""
    h, d, g = spec.hidden, spec.directions, spec.mode.gates
    inputs = _rnn_input_size(spec, flat.size)
    order = np.array(spec.mode.order)
    offset = 0

    def take(*shape: int) -> np.ndarray:
        nonlocal offset
        size = int(np.prod(shape))
        block = flat[offset:offset + size].reshape(shape)
        offset += size
        # rows are gates: (G, H, ...) -> ONNX's gate order
        return block.reshape(g, h, *shape[1:])[order].reshape(shape)

    matrices = []
    for layer in range(spec.layers):
        width = inputs if layer == 0 else d * h
        pairs = [(take(g * h, width), take(g * h, h)) for _ in range(d)]
        matrices.append((np.stack([w for w, _ in pairs]), np.stack([r for _, r in pairs])))
    layers = []
    for w, r in matrices:
        biases = [np.concatenate([take(g * h), take(g * h)]) for _ in range(d)]
        layers.append((w, r, np.stack(biases)))
    assert offset == flat.size
    return layers


def _rnn_source(node: Dict[str, Any], index: int, kwargs: Dict[str, Any]
                ) -> Tuple[Optional[Dict[str, Any]], Optional[np.ndarray]]:
    """The mx2onnx node feeding input ``index`` and, when it is a weight, its value."""
    if index >= len(node["inputs"]):
        return None, None
    source = kwargs["mx_graph"][node["inputs"][index][0]]
    value = kwargs["weights"].get(source["name"]) if source["op"] == "null" else None
    return source, value


def _rnn_begin_state(node: Dict[str, Any], index: int, name: Optional[str],
                     kwargs: Dict[str, Any], dtype: np.dtype) -> Optional[Any]:
    """A begin state: None when it is all zeros (ONNX's default; Gluon's ``_zeros(shape=(L, 0,
    H))`` or its folded constant), else a numpy constant or the ONNX tensor that holds it."""
    source, value = _rnn_source(node, index, kwargs)
    if source is None or source["op"] in ("_zeros", "_zeros_without_dtype"):
        return None
    if value is not None:
        return None if not np.any(value) else np.asarray(value, dtype)
    return name


def _rnn_layer_state(b: _Builder, state: Optional[Any], layer: int, directions: int) -> str:
    """The ONNX ``initial_h``/``initial_c`` input of one layer ('' for zeros): rows
    ``layer*D : (layer+1)*D`` of MXNet's (L*D, N, H) state."""
    if state is None:
        return ""
    rows = slice(layer * directions, (layer + 1) * directions)
    if isinstance(state, np.ndarray):
        return b.const(state[rows], state.dtype, "state")
    return b.op("Slice", [state, b.ints(rows.start), b.ints(rows.stop), b.ints(0)])


def convert_rnn(node: Dict[str, Any], **kwargs: Any) -> List[Any]:
    """mx2onnx converter for MXNet's fused ``RNN``: one ONNX LSTM/GRU/RNN node per layer (both
    directions in one node), weights unpacked from the flat ``parameters`` constant. Outputs
    (mx2onnx's names): ``<node>`` (T, N, D*H), ``<node>1`` hy and ``<node>2`` cy (L*D, N, H).

    Raises:
        NotImplementedError: attributes ONNX cannot express (``_rnn_spec``), a ``parameters``
            input that is not a weight, data other than float32.
    """
    from mxnet.onnx.mx2onnx._op_translations._op_translations_opset13 import (
        get_input_dtypes, get_inputs)

    name, inputs, attrs = get_inputs(node, kwargs)
    spec = _rnn_spec(attrs)
    dtype = np.dtype(get_input_dtypes(node, kwargs)[0])
    if dtype != np.float32:
        raise NotImplementedError(f"RNN on {dtype} data: exported for float32 only")
    _, flat = _rnn_source(node, 1, kwargs)
    if flat is None:
        raise NotImplementedError("RNN whose parameters are computed at run time (not a weight)")
    layers = _rnn_weights(spec, np.asarray(flat, dtype).ravel())

    b = _Builder(name, kwargs)
    h0 = _rnn_begin_state(node, 2, inputs[2] if len(inputs) > 2 else None, kwargs, dtype)
    c0 = (_rnn_begin_state(node, 3, inputs[3] if len(inputs) > 3 else None, kwargs, dtype)
          if spec.lstm else None)
    x, hy, cy = inputs[0], [], []
    for layer, (w, r, bias) in enumerate(layers):
        y, y_h, y_c = _rnn_layer(b, spec, x, (w, r, bias),
                                 _rnn_layer_state(b, h0, layer, spec.directions),
                                 _rnn_layer_state(b, c0, layer, spec.directions),
                                 out=name if layer == spec.layers - 1 else None)
        x = y
        hy.append(y_h)
        cy.append(y_c)
    if spec.state_outputs:
        b.op("Concat", hy, out=f"{name}1", axis=0)
        if spec.lstm:
            b.op("Concat", cy, out=f"{name}2", axis=0)
    return b.nodes


def _rnn_layer(b: _Builder, spec: _RnnSpec, x: str,
               weights: Tuple[np.ndarray, np.ndarray, np.ndarray], initial_h: str,
               initial_c: str, out: Optional[str]) -> Tuple[str, str, Optional[str]]:
    """One ONNX LSTM/GRU/RNN node (both directions) on ``x`` (T, N, I); returns its output
    as MXNet lays it out, (T, N, D*H), and its Y_h and Y_c (D, N, H)."""
    w, r, bias = (b.const(v, v.dtype, hint) for v, hint in zip(weights, "WRB"))
    inputs = [x, w, r, bias, "", initial_h]
    if spec.lstm:
        inputs.append(initial_c)
    while inputs[-1] == "":
        inputs.pop()
    attrs: Dict[str, Any] = {"hidden_size": spec.hidden,
                             "direction": "bidirectional" if spec.directions == 2 else "forward"}
    if spec.mode.activation:
        attrs["activations"] = [spec.mode.activation] * spec.directions
    if spec.mode.linear_before_reset:
        attrs["linear_before_reset"] = 1
    outputs = b.op(spec.mode.onnx_op, inputs, outputs=3 if spec.lstm else 2, **attrs)
    y = outputs[0]  # (T, D, N, H)
    if spec.directions == 1:
        y = b.op("Squeeze", [y, b.ints(1)], out=out)
    else:  # MXNet's (T, N, D*H): forward then backward features
        y = b.op("Reshape", [b.op("Transpose", [y], perm=[0, 2, 1, 3]), b.ints(0, 0, -1)],
                 out=out)
    return y, outputs[1], outputs[2] if spec.lstm else None


# ONNX TensorProto data types (onnx.TensorProto.FLOAT, ...), without importing onnx here
_ONNX_FLOAT, _ONNX_INT64 = 1, 7


def _tensor(array: np.ndarray) -> Any:
    """An ONNX TensorProto (for ConstantOfShape's ``value``)."""
    from onnx import numpy_helper

    return numpy_helper.from_array(array)


# ----------------------------------------------------------------------------------------------
# Reshape with MXNet's special codes (-2, -3, -4) or reverse=True
# ----------------------------------------------------------------------------------------------
def _reshape_wrapper(original: Any) -> Any:
    """mxnet.onnx's ``Reshape`` converter is exact for targets of positive values, 0 and -1
    (ONNX Reshape's own codes: a constant target), which it keeps converting. For MXNet's other
    codes it knows a handful of literal targets (``[0, 0, -3, -3]``, ``[-3, -1]``, ...) and raises
    "Shape value not supported in ONNX" for the rest (``(0, 0, -3)``, ``(-3, 0, 0)``,
    ``(-4, -1, H, 0, 0)``: the head split and merge of every hand-written multi-head attention);
    and with ``reverse=True`` it writes a Pad/Slice over the input's shape that TensorRT's parser
    refuses where the shape is not folded ("Only support constant zero padding for slicing a
    shape tensor"). Those go to ``_reshape_graph``: MXNet's own shape inference
    (InferReshapeShape, src/operator/tensor/matrix_op-inl.h) run on the symbolic input shape,
    one output dimension at a time (a constant, an input dimension, a product of two, a
    quotient), concatenated into ONNX Reshape's target. No input size is baked in: batch and
    sequence may be dynamic; with static shapes trtc's constant folding makes it a constant."""

    def convert_reshape(node: Dict[str, Any], **kwargs: Any) -> Any:
        attrs = node.get("attrs", {})
        if attrs.get("target_shape") not in (None, "", "()", "[]"):
            return original(node, **kwargs)  # the deprecated attribute: mxnet.onnx's
        target = [int(v) for v in _int_tuple(attrs.get("shape", "()"))]
        reverse = str(attrs.get("reverse", "False")).strip().lower() in ("true", "1")
        if not reverse and not any(v in (-2, -3, -4) for v in target):
            return original(node, **kwargs)
        from mxnet.onnx.mx2onnx._op_translations._op_translations_opset13 import get_inputs

        name, inputs, _ = get_inputs(node, kwargs)
        b = _Builder(name, kwargs)
        b.op("Reshape", [inputs[0], _reshape_target(b, inputs[0], target, reverse)], out=name)
        return b.nodes

    return convert_reshape


def _int_tuple(text: str) -> List[int]:
    """``'(0, 0, -3)'`` / ``'[2,-1]'`` / ``'(4,)'`` -> list of ints (MXNet writes tuples as
    strings in a symbol's attributes; 'None' entries are not valid Reshape codes)."""
    inner = str(text).strip().strip("()[]")
    return [int(float(v)) for v in inner.split(",") if v.strip()]


def _reshape_dims(target: Sequence[int], reverse: bool) -> List[Tuple[Any, ...]]:
    """MXNet's InferReshapeShape over a symbolic input shape. Each output dimension is
    ``("const", v)``, ``("dim", i)`` (input dimension i; negative: from the end),
    ``("mul", i, j)``, ``("div", i, v)`` (input dimension i / v) or ``("rest", start, stop)``
    (input dimensions start:stop, for -2; stop None: to the end). A plain -1 is ``("const",
    -1)``: ONNX Reshape infers it from the element count as MXNet does.

    Raises:
        NotImplementedError: a target MXNet itself refuses (two -1, a -4 without two values, both
            of a -4's values -1).
    """
    params = list(reversed(target)) if reverse else list(target)

    def src(k: int) -> int:  # the k-th source dimension as the (possibly reversed) walk sees it
        return -(k + 1) if reverse else k

    dims: List[Tuple[Any, ...]] = []
    k, i, inferred, rest = 0, 0, False, False
    while i < len(params):
        v = params[i]
        if rest and v in (0, -2, -3, -4):
            raise NotImplementedError(f"Reshape shape={tuple(target)}: code {v} after -2 (which "
                                      "consumed every input dimension)")
        if v == 0:
            dims.append(("dim", src(k)))
            k += 1
        elif v == -1:
            if inferred:
                raise NotImplementedError(f"Reshape shape={tuple(target)}: two dimensions to infer")
            inferred = True
            dims.append(("const", -1))
            k += 1
        elif v == -2:
            dims.append(("rest", k))
            rest = True
        elif v == -3:
            dims.append(("mul", src(k), src(k + 1)))
            k += 2
        elif v == -4:
            if i + 2 >= len(params):
                raise NotImplementedError(f"Reshape shape={tuple(target)}: -4 needs two values")
            d1, d2 = params[i + 1], params[i + 2]
            if (d1 == -1 and d2 == -1) or d1 == 0 or d2 == 0 or d1 < -1 or d2 < -1:
                raise NotImplementedError(f"Reshape shape={tuple(target)}: -4 split {d1}, {d2}")
            dims.append(("div", src(k), d2) if d1 == -1 else ("const", d1))
            dims.append(("div", src(k), d1) if d2 == -1 else ("const", d2))
            k += 1
            i += 2
        elif v > 0:
            dims.append(("const", v))
            k += 1
        else:
            raise NotImplementedError(f"Reshape shape={tuple(target)}: code {v}")
        i += 1
    if reverse:
        dims.reverse()
        # -2 in reverse copies the input's leading dimensions (all but the k read from the end)
        dims = [("rest_rev", d[1]) if d[0] == "rest" else d for d in dims]
    return dims


def _reshape_target(b: _Builder, data: str, target: Sequence[int], reverse: bool) -> str:
    """ONNX Reshape's target (1-D int64) for MXNet's ``shape``/``reverse`` on ``data``."""
    dims = _reshape_dims(target, reverse)
    if all(d[0] == "const" for d in dims):
        return b.ints(*[d[1] for d in dims])
    shape = b.op("Shape", [data])

    def one(i: int) -> str:  # input dimension i as a 1-element int64 tensor
        return b.op("Slice", [shape, b.ints(i), b.ints(i + 1 if i != -1 else _INT64_MAX)])

    parts: List[str] = []
    for d in dims:
        if d[0] == "const":
            parts.append(b.ints(d[1]))
        elif d[0] == "dim":
            parts.append(one(d[1]))
        elif d[0] == "mul":
            parts.append(b.op("Mul", [one(d[1]), one(d[2])]))
        elif d[0] == "div":
            parts.append(b.op("Div", [one(d[1]), b.ints(d[2])]))
        elif d[0] == "rest":  # forward -2: dimensions k: of the input
            parts.append(b.op("Slice", [shape, b.ints(d[1]), b.ints(_INT64_MAX)]))
        else:  # reverse -2: all but the last k dimensions
            stop = -d[1] if d[1] else _INT64_MAX
            parts.append(b.op("Slice", [shape, b.ints(0), b.ints(stop)]))
    return b.op("Concat", parts, axis=0)


# ----------------------------------------------------------------------------------------------
# _contrib_AdaptiveAvgPooling2D with an output larger than 1x1
# ----------------------------------------------------------------------------------------------
def _adaptive_avg_pool_wrapper(original: Any) -> Any:
    """mxnet.onnx converts ``_contrib_AdaptiveAvgPooling2D`` to GlobalAveragePool for a 1x1
    output only and raises for any other (PSPNet's and Fast-SCNN's pyramid pooling: 2x2, 3x3,
    6x6), so the op ran in MXNet. MXNet's bins (src/operator/contrib/adaptive_avg_pooling.cc)
    are ``[floor(i*H/o), ceil((i+1)*H/o))`` along each axis, overlapping where o does not divide
    H, each averaged over its own size: a separable mean, ``P_h @ x @ P_w^T`` with P holding
    1/size inside each bin. P is built from the input's shape at run time (Range, compares, no
    size baked in); with static shapes trtc's constant folding makes it a constant and the
    engine gets two MatMuls. Exact up to float summation order."""

    def convert_adaptive_avg_pool(node: Dict[str, Any], **kwargs: Any) -> Any:
        size = _int_tuple(node.get("attrs", {}).get("output_size", "()")) or [1]
        if len(size) == 1:
            size = size * 2
        if len(size) != 2 or min(size) < 1:
            raise NotImplementedError(f"_contrib_AdaptiveAvgPooling2D output_size={size}")
        if size == [1, 1]:
            return original(node, **kwargs)
        from mxnet.onnx.mx2onnx._op_translations._op_translations_opset13 import (
            get_input_dtypes, get_inputs)

        name, inputs, _ = get_inputs(node, kwargs)
        dtype = np.dtype(get_input_dtypes(node, kwargs)[0])
        if dtype != np.float32:
            raise NotImplementedError(f"_contrib_AdaptiveAvgPooling2D on {dtype} data: "
                                      "exported for float32 only")
        b = _Builder(name, kwargs)
        shape = b.op("Shape", [inputs[0]])
        p_h = _adaptive_bins(b, shape, 2, size[0], transpose=False)  # (oh, H)
        p_w = _adaptive_bins(b, shape, 3, size[1], transpose=True)   # (W, ow)
        rows = b.op("MatMul", [p_h, inputs[0]])                      # (N, C, oh, W)
        b.op("MatMul", [rows, p_w], out=name)                        # (N, C, oh, ow)
        return b.nodes

    return convert_adaptive_avg_pool


def _adaptive_bins(b: _Builder, shape: str, axis: int, out: int, transpose: bool) -> str:
    """The (out, n) averaging matrix of MXNet's adaptive pooling bins along ``axis`` (n its
    size), or its transpose: P[i, j] = 1 / (end_i - start_i) where start_i <= j < end_i."""
    n = b.op("Slice", [shape, b.ints(axis), b.ints(axis + 1)])            # (1,) int64
    i = b.const(np.arange(out, dtype=np.int64), np.int64, "bin")           # (out,)
    o = b.ints(out)
    start = b.op("Div", [b.op("Mul", [i, n]), o])                          # floor(i*n/out)
    stop = b.op("Div", [b.op("Add", [b.op("Mul", [b.op("Add", [i, b.ints(1)]), n]),
                                     b.ints(out - 1)]), o])               # ceil((i+1)*n/out)
    j = b.op("Range", [b.const(0, np.int64), b.op("Squeeze", [n, b.ints(0)]),
                       b.const(1, np.int64)])                              # (n,)
    bins, cols = (1, 0) if transpose else (0, 1)  # which axis of P holds the bins
    start_e = b.op("Unsqueeze", [start, b.ints(cols)])
    stop_e = b.op("Unsqueeze", [stop, b.ints(cols)])
    j_e = b.op("Unsqueeze", [j, b.ints(bins)])
    inside = b.op("And", [b.op("GreaterOrEqual", [j_e, start_e]), b.op("Less", [j_e, stop_e])])
    count = b.op("Cast", [b.op("Sub", [stop_e, start_e])], to=_ONNX_FLOAT)
    return b.op("Div", [b.op("Cast", [inside], to=_ONNX_FLOAT), count])


# ----------------------------------------------------------------------------------------------
# BilinearResize2D: every mode, both corner conventions
# ----------------------------------------------------------------------------------------------
_RESIZE_MODES = ("size", "odd_scale", "like", "to_even_down", "to_even_up", "to_odd_down",
                 "to_odd_up")


def _optional_float(attrs: Dict[str, str], key: str) -> Optional[float]:
    text = attrs.get(key)
    return None if text in (None, "None", "") else float(text)


def convert_bilinear_resize(node: Dict[str, Any], **kwargs: Any) -> List[Any]:
    """MXNet's ``_contrib_BilinearResize2D`` (src/operator/contrib/bilinear_resize-inl.h) as one
    ONNX ``Resize`` (linear). mxnet.onnx's converter always wrote
    ``coordinate_transformation_mode='align_corners'`` whatever ``align_corners`` said (MXNet's
    default is True; with False its output was silently another resize, 0.2 off) and refused
    every mode but 'size' (HRNet's segmentation head uses 'like': its 13 resizes ran in MXNet).

    * ``align_corners=True``: ONNX 'align_corners'; False: MXNet's source index
      ``in/out * (dst + 0.5) - 0.5`` clamped at 0, with ``out == 1`` sampling index 0: ONNX
      'pytorch_half_pixel' (equal to MXNet's kernel up to float rounding, checked per mode);
    * output size, as MXNet's shape inference: 'size' (``height``/``width``, or
      ``int(scale * dim)`` in float32 when ``scale_height``/``scale_width`` are given), 'like'
      (the second input's H, W), 'odd_scale' (even dims ``int(d * s)``, odd ``int((d-1) * s) +
      1``), 'to_even_down/up', 'to_odd_down/up'. Computed from the input's shape at run time
      (dynamic H, W work); trtc's static-shape folding makes it a constant.

    Raises:
        NotImplementedError: an unknown mode, a scale mode without both scales, data other than
            float32.
    """
    from mxnet.onnx.mx2onnx._op_translations._op_translations_opset13 import (
        get_input_dtypes, get_inputs)

    name, inputs, attrs = get_inputs(node, kwargs)
    mode = attrs.get("mode", "size")
    if mode not in _RESIZE_MODES:
        raise NotImplementedError(f"BilinearResize2D mode={mode!r}")
    dtype = np.dtype(get_input_dtypes(node, kwargs)[0])
    if dtype != np.float32:
        raise NotImplementedError(f"BilinearResize2D on {dtype} data: exported for float32 only")
    scales = (_optional_float(attrs, "scale_height"), _optional_float(attrs, "scale_width"))
    b = _Builder(name, kwargs)
    shape = b.op("Shape", [inputs[0]])
    batch_channels = b.op("Slice", [shape, b.ints(0), b.ints(2)])
    dims = b.op("Slice", [shape, b.ints(2), b.ints(4)])  # (H, W) int64

    def scaled(d: str) -> str:  # int(float32(scale) * d), as MXNet's static_cast<int>
        if None in scales:
            raise NotImplementedError(f"BilinearResize2D mode={mode!r} without both "
                                      "scale_height and scale_width")
        product = b.op("Mul", [b.op("Cast", [d], to=_ONNX_FLOAT),
                               b.const(list(scales), np.float32, "scale")])
        # Floor before the Cast (== truncation: sizes are not negative) also keeps
        # onnx-graphsurgeon's cast elision from turning the float scales into integers
        return b.op("Cast", [b.op("Floor", [product])], to=_ONNX_INT64)

    odd = lambda: b.op("Mod", [dims, b.ints(2, 2)])  # noqa: E731 - 1 where a dim is odd
    if mode == "size" and None in scales:
        height, width = int(attrs.get("height", 1)), int(attrs.get("width", 1))
        if height < 1 or width < 1:
            raise NotImplementedError(f"BilinearResize2D height={height} width={width}")
        out_dims = b.ints(height, width)
    elif mode == "size":
        out_dims = scaled(dims)
    elif mode == "like":
        if len(inputs) < 2:
            raise NotImplementedError("BilinearResize2D mode='like' without its second input")
        out_dims = b.op("Slice", [b.op("Shape", [inputs[1]]), b.ints(2), b.ints(4)])
    elif mode == "odd_scale":
        m = odd()
        out_dims = b.op("Add", [scaled(b.op("Sub", [dims, m])), m])
    else:
        m = odd()
        step = m if mode.startswith("to_even") else b.op("Sub", [b.ints(1, 1), m])
        out_dims = b.op("Add" if mode.endswith("_up") else "Sub", [dims, step])
    sizes = b.op("Concat", [batch_channels, out_dims], axis=0)
    empty = b.const(np.zeros((0,), np.float32), np.float32, "empty")
    b.op("Resize", [inputs[0], empty, empty, sizes], out=name, mode="linear",
         coordinate_transformation_mode=("align_corners"
                                          if _flag(attrs.get("align_corners", "True"))
                                          else "pytorch_half_pixel"))
    return b.nodes


# ----------------------------------------------------------------------------------------------
# Attributes as MXNet reads them
# ----------------------------------------------------------------------------------------------
# A symbol's JSON holds only the attributes its author set; MXNet fills in the rest from its op
# registry, mxnet.onnx's converters from their own ``attrs.get(name, default)``. Where the two
# defaults differ the ONNX computes something else, silently: LRN's ``knorm`` (MXNet 2,
# mxnet.onnx 1.0: the gate failed at 0.68 on AlexNet-style LRN), Deconvolution's ``no_bias``
# (MXNet True), ... These attributes get MXNet's own default (read from its registry) before the
# converter runs. tests/trtc/test_converters.py audits every mxnet.onnx converter's defaults
# against MXNet's registry, so a new mismatch fails the suite.
MXNET_DEFAULTS_FILLED = {
    "LRN": ("knorm",),
    "Deconvolution": ("no_bias",),
    "_split_v2": ("axis",),
    "_maximum_scalar": ("scalar",),
    "_minimum_scalar": ("scalar",),
}
_REGISTRY_CACHE: Dict[str, Dict[str, Tuple[str, str]]] = {}


def mxnet_op_arguments(op: str) -> Dict[str, Tuple[str, str]]:
    """MXNet's registry entry of ``op``: attribute name -> (type text, default or '')."""
    if op not in _REGISTRY_CACHE:
        import ctypes
        import re

        from mxnet.base import _LIB, c_str, check_call, mx_uint, py_str

        handle = ctypes.c_void_p()
        check_call(_LIB.NNGetOpHandle(c_str(op), ctypes.byref(handle)))
        texts = [ctypes.c_char_p() for _ in range(3)]
        count = mx_uint()
        names, types, docs = (ctypes.POINTER(ctypes.c_char_p)() for _ in range(3))
        check_call(_LIB.MXSymbolGetAtomicSymbolInfo(
            handle, ctypes.byref(texts[0]), ctypes.byref(texts[1]), ctypes.byref(count),
            ctypes.byref(names), ctypes.byref(types), ctypes.byref(docs),
            ctypes.byref(ctypes.c_char_p()), ctypes.byref(texts[2])))
        arguments = {}
        for i in range(count.value):
            kind = py_str(types[i])
            default = re.search(r"default=(.*)$", kind)
            arguments[py_str(names[i])] = (kind, default.group(1).strip("'") if default else "")
        _REGISTRY_CACHE[op] = arguments
    return _REGISTRY_CACHE[op]


def canonical_attrs(op: str, attrs: Dict[str, str]) -> Dict[str, str]:
    """``attrs`` as mxnet.onnx's converters expect them: boolean attributes spelled 'True' /
    'False' (MXNet also takes '1', 'true', ...; converters compare with 'True'), and MXNet's own
    default filled in where mxnet.onnx's differs (``MXNET_DEFAULTS_FILLED``)."""
    try:
        registry = mxnet_op_arguments(op)
    except Exception:  # noqa: BLE001 - not an op MXNet knows (a custom one): as it is
        return attrs
    out = dict(attrs)
    for name in MXNET_DEFAULTS_FILLED.get(op, ()):
        if name not in out and registry.get(name, ("", ""))[1] not in ("", "None"):
            out[name] = registry[name][1]
    for name, value in out.items():
        if registry.get(name, ("", ""))[0].startswith("boolean"):
            text = str(value).strip().lower()
            if text in ("1", "true"):
                out[name] = "True"
            elif text in ("0", "false"):
                out[name] = "False"
    return out


# MXNet op -> trtc's converter, for ops mxnet.onnx has no converter for (``register``)
_NEW_CONVERTERS: Dict[str, Any] = {
    "GroupNorm": convert_group_norm,
    "broadcast_maximum": _elementwise(_build_maximum, floats_only=()),
    "broadcast_hypot": _elementwise(_build_hypot, floats_only=("float32",)),
    "erf": _elementwise(_build_erf),
    "sign": _elementwise(_build_sign, floats_only=()),
    "softsign": _elementwise(_build_softsign),
    "softmin": _elementwise(_build_softmin),
    "smooth_l1": _elementwise(_build_smooth_l1, floats_only=("float32", "float64")),
    "pick": _elementwise(_build_pick, floats_only=()),
    "_np_cumsum": _elementwise(_build_cumsum, floats_only=()),
    "sort": _elementwise(_build_sort, floats_only=()),
    "moments": convert_moments,
    "L2Normalization": convert_l2_normalization,
    "round": _elementwise(_build_round, floats_only=("float32", "float64")),
    "fix": _elementwise(_build_fix, floats_only=("float32", "float64")),
    "trunc": _elementwise(_build_trunc, floats_only=("float32", "float64")),
    "rint": _elementwise(_build_rint, floats_only=("float32", "float64")),
}
