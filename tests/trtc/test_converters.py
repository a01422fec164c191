"""trtc's own converters (trtc/converters.py) against real MXNet and real ONNX Runtime.

Each test builds a tiny MXNet symbol, exports the op through trtc's export path
(``onnx_from_segment`` on a ``trtc.frontend`` Graph, which installs the converters), runs the
ONNX in ONNX Runtime and compares with MXNet's forward. box_nms is compared bit for bit, ties
included: MXNet sorts scores with a stable sort, the ONNX reproduces that order."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import onnxruntime as ort
import pytest

from trtc.export import ExportError, onnx_from_segment
from trtc.frontend import load_graph
from trtc.partition import describe_nodes

mx = pytest.importorskip("mxnet")


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _export(tmp_path: Path, build: Any, shapes: Dict[str, Any], op: str):
    """Export the node(s) of ``op`` in ``build(*inputs)`` alone; returns (ExportedSegment,
    segment). Each input first goes through ``+ w`` (w = 0, a param: trtc's loader wants a params
    file belonging to the symbol); the segment holds only ``op``, so its inputs are those sums
    and the ONNX is fed the test arrays directly."""
    w = mx.sym.var("w", shape=(1,))
    inputs = [mx.sym.broadcast_add(mx.sym.var(name), w, name=f"pre_{name}") for name in shapes]
    symbol = build(*inputs)
    symbol.save(str(tmp_path / "m-symbol.json"))
    mx.nd.save(str(tmp_path / "m-0000.params"), {"arg:w": mx.nd.zeros((1,))})
    graph = load_graph(tmp_path / "m-symbol.json", tmp_path / "m-0000.params", dict(shapes))
    segment = describe_nodes(graph, [n.index for n in graph.op_nodes if n.op == op], "engine")
    return onnx_from_segment(graph, segment), segment


def _run(exported: Any, *arrays: np.ndarray) -> List[np.ndarray]:
    session = ort.InferenceSession(exported.onnx_bytes, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, arrays)))


def _export_nms(tmp_path: Path, shape: Tuple[Any, ...], **attrs: Any):
    return _export(tmp_path, lambda d: mx.sym.contrib.box_nms(d, name="nms", **attrs),
                   {"data": shape}, "_contrib_box_nms")[0]


def _assert_nms_exact(tmp_path: Path, x: np.ndarray, **attrs: Any) -> np.ndarray:
    (got,) = _run(_export_nms(tmp_path, x.shape, **attrs), x)
    want = mx.nd.contrib.box_nms(mx.nd.array(x), **attrs).asnumpy()
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)  # bit for bit (NaN == NaN here)
    return want


def _boxes(rng: np.random.Generator, batch: int, n: int, width: int = 6, coord_start: int = 2,
           score_index: int = 1, id_index: int = 0, classes: int = 3, levels: int = 0,
           extent: float = 20.0) -> np.ndarray:
    """Random rows [.. id .. score .. x1 y1 x2 y2 ..]; ``levels`` > 0 quantizes the scores (ties);
    about a tenth of the boxes are inverted (x2 < x1 or y2 < y1)."""
    x = rng.random((batch, n, width)).astype(np.float32)
    corner = (rng.random((batch, n, 2)) * extent - extent / 4).astype(np.float32)
    size = (rng.random((batch, n, 2)) * extent / 3).astype(np.float32)
    size[rng.random((batch, n)) < 0.1] *= -1
    x[..., coord_start:coord_start + 2] = corner
    x[..., coord_start + 2:coord_start + 4] = corner + size
    scores = rng.random((batch, n)).astype(np.float32)
    x[..., score_index] = np.round(scores * levels) / levels if levels else scores
    if id_index >= 0:  # about a tenth with id -1 (GluonCV's "no class", MXNet's background_id)
        x[..., id_index] = np.where(rng.random((batch, n)) < 0.1, -1,
                                    rng.integers(0, classes, (batch, n)))
    return x


# ----------------------------------------------------------------------------------------------
# registration
# ----------------------------------------------------------------------------------------------
def test_register_overrides_mxnet_converters_idempotently():
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph

    from trtc import _defaults
    from trtc.converters import BOX_NMS_OPS, convert_box_nms, register

    register()
    table = MXNetGraph.registry_[_defaults.ONNX_OPSET]
    assert all(table[op] is convert_box_nms for op in BOX_NMS_OPS)
    wrapped = {op: table[op] for op in ("_contrib_ROIAlign", "topk")}
    register()
    assert {op: table[op] for op in wrapped} == wrapped  # not wrapped twice


def test_box_nms_is_no_longer_unfaithful(tmp_path):
    """Through `_provenance()`, as every trtc export: mxnet.onnx's converter warned (per-class
    NMS ignored) and trtc kept the op in MXNet; trtc's converter does not warn."""
    import mxnet.onnx as mx_onnx

    from trtc.export import _provenance

    symbol = mx.sym.contrib.box_nms(mx.sym.var("data"), id_index=0, force_suppress=False,
                                    background_id=0, topk=10, name="nms")
    with _provenance() as state:
        mx_onnx.export_model(symbol, {}, in_shapes=[(1, 20, 6)], in_types=[np.float32],
                             onnx_file_path=str(tmp_path / "nms.onnx"))
    assert state["unfaithful"] == {} and state["failed"] is None


def test_emitted_ops_are_in_the_runtime_allowlist(tmp_path):
    from trtc.converters import ONNX_OPS_USED
    from trtc.runtime.bundle import ONNX_OPS

    assert ONNX_OPS_USED <= ONNX_OPS
    exported = _export_nms(tmp_path, (2, 30, 6), id_index=0, topk=10, out_format="center")
    assert {n.op_type for n in exported.model.graph.node} <= ONNX_OPS_USED


# ----------------------------------------------------------------------------------------------
# box_nms: exact against MXNet
# ----------------------------------------------------------------------------------------------
NMS_CASES = {
    # GluonCV SSD / YOLOv3 / CenterNet: per-class NMS, topk before NMS, background -1 dropped
    "gluoncv_ssd": dict(overlap_thresh=0.45, valid_thresh=0.01, topk=40, id_index=0,
                        score_index=1, coord_start=2, force_suppress=False),
    # GluonCV Faster R-CNN RPN: [score, x1, y1, x2, y2], all classes together
    "rpn": dict(overlap_thresh=0.7, topk=-1, coord_start=1, score_index=0, id_index=-1,
                force_suppress=True),
    "defaults": dict(),
    "force_suppress_with_ids": dict(id_index=0, force_suppress=True, overlap_thresh=0.3),
    "background_class": dict(id_index=0, background_id=1, overlap_thresh=0.4),
    "topk_larger_than_n": dict(id_index=0, topk=1000),
    "topk_one": dict(topk=1),
    "topk_zero_is_identity": dict(topk=0, id_index=0),
    "out_center": dict(id_index=0, out_format="center"),
    "zero_threshold": dict(overlap_thresh=0.0, id_index=0),
    "threshold_one_suppresses_nothing": dict(overlap_thresh=1.0),
    "negative_valid_thresh": dict(valid_thresh=-1.0, id_index=0),
}


@pytest.mark.parametrize("case", sorted(NMS_CASES))
def test_box_nms_exact(tmp_path, case):
    attrs = NMS_CASES[case]
    rng = np.random.default_rng(sorted(NMS_CASES).index(case))
    layout = {k: attrs[k] for k in ("coord_start", "score_index") if k in attrs}
    width = 5 if attrs.get("coord_start") == 1 else 6
    # scores in 8 levels: many exact ties, decided by MXNet's stable sort (row index)
    x = _boxes(rng, 3, 60, width=width, id_index=attrs.get("id_index", -1), levels=8, **layout)
    _assert_nms_exact(tmp_path, x, **attrs)


def test_box_nms_other_layout_and_rank(tmp_path):
    """coord_start/score_index/id_index elsewhere in an 8-wide row; 4-D input (batch dims
    flattened by MXNet)."""
    rng = np.random.default_rng(1)
    x = _boxes(rng, 6, 40, width=8, coord_start=3, score_index=0, id_index=7, levels=4)
    _assert_nms_exact(tmp_path, x.reshape(2, 3, 40, 8), coord_start=3, score_index=0,
                      id_index=7, topk=25, overlap_thresh=0.35, background_id=2)


def test_box_nms_nothing_valid(tmp_path):
    rng = np.random.default_rng(2)
    x = _boxes(rng, 2, 30)
    x[..., 1] = np.minimum(x[..., 1], 0.5)
    want = _assert_nms_exact(tmp_path, x, valid_thresh=0.5, id_index=0)
    assert (want == -1).all()
    x[..., 0] = -1  # every row is background
    _assert_nms_exact(tmp_path, x, id_index=0)


def test_box_nms_single_class_and_mixed_batch(tmp_path):
    """One class; one batch item with no valid row, the other with several."""
    rng = np.random.default_rng(3)
    x = _boxes(rng, 2, 50, classes=1)
    x[0, :, 1] = 0
    want = _assert_nms_exact(tmp_path, x, id_index=0, valid_thresh=0.1)
    assert (want[0] == -1).all() and (want[1, 0] != -1).all()


def test_box_nms_iou_at_the_threshold_and_odd_boxes(tmp_path):
    """Integer boxes give IoUs of exactly 1/3, 1/2, ...: MXNet suppresses only above the
    threshold. Inverted and empty boxes, NaN coordinates and scores, ids that truncate to the
    same int (MXNet compares static_cast<int>(id)): all as MXNet."""
    rng = np.random.default_rng(4)
    x = np.zeros((2, 60, 6), np.float32)
    corner = rng.integers(0, 4, (2, 60, 2))
    x[..., 2:4] = corner
    x[..., 4:6] = corner + rng.integers(-1, 4, (2, 60, 2))
    x[..., 1] = rng.integers(1, 5, (2, 60)) / 4
    x[..., 0] = rng.choice([0.2, -0.5, 0.7, 1.5, 1.2, 2.0], (2, 60))
    x[0, :5, 2] = np.nan
    x[1, :3, 1] = np.nan
    for thresh in (0.5, 1 / 3, 0.25):
        _assert_nms_exact(tmp_path, x, overlap_thresh=thresh, id_index=0)
        _assert_nms_exact(tmp_path, x, overlap_thresh=thresh, id_index=0, force_suppress=True)


def test_box_nms_odd_class_ids(tmp_path):
    """MXNet (x86) compares static_cast<int>(id): NaN, infinite and out-of-int32 ids all become
    INT_MIN, one class with -2**31 itself. The ONNX must neither split them nor span 2**31
    classes (ONNX Runtime's Range would fail)."""
    ids = [0, np.nan, np.nan, 1e12, 2, -np.inf, -2.0 ** 31, -2.0 ** 31, -3e9, 2 ** 31]
    x = np.zeros((1, len(ids), 6), np.float32)
    x[0, :, 0] = ids
    x[0, :, 1] = np.linspace(0.9, 0.3, len(ids))
    x[0, :, 4:] = 1
    x[0, 4, 2:] += 5  # id 2, apart; every other row is the same box
    want = _assert_nms_exact(tmp_path, x, id_index=0)
    assert (want[0, :, 1] > 0).sum() == 3  # one row each of class 0, 2 and INT_MIN
    x[0, :, 0] = np.nan
    _assert_nms_exact(tmp_path, x, id_index=0)


def test_box_nms_out_center_skips_negative_x(tmp_path):
    """MXNet converts a row to center format only when its first coordinate is not negative."""
    x = np.array([[[0, 0.9, -2, 0, 2, 2], [1, 0.8, 5, 5, 9, 7], [0, 0.7, 10, 10, 12, 11]]],
                 np.float32)
    want = _assert_nms_exact(tmp_path, x, id_index=0, out_format="center")
    np.testing.assert_array_equal(want[0, 0], x[0, 0])  # left in corner format by MXNet


def test_box_nms_many_boxes_is_fast(tmp_path):
    """N=5000 per item, 4 score levels (heavy ties), every row taking part (topk=-1)."""
    rng = np.random.default_rng(5)
    x = _boxes(rng, 2, 5000, levels=4, classes=5, extent=500.0)
    exported = _export_nms(tmp_path, x.shape, id_index=0, overlap_thresh=0.5)
    session = ort.InferenceSession(exported.onnx_bytes, providers=["CPUExecutionProvider"])
    session.run(None, {session.get_inputs()[0].name: x})
    start = time.perf_counter()
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    elapsed = time.perf_counter() - start
    want = mx.nd.contrib.box_nms(mx.nd.array(x), id_index=0, overlap_thresh=0.5).asnumpy()
    np.testing.assert_array_equal(got, want)
    assert elapsed < 2.0, f"ONNX Runtime took {elapsed:.2f}s"


def test_box_nms_dynamic_batch_and_boxes(tmp_path):
    """Batch and N symbolic in the ONNX (trtc's dynamic export): one model, several shapes."""
    attrs = dict(id_index=0, topk=20, valid_thresh=0.1, overlap_thresh=0.45)
    exported = _export_nms(tmp_path, ((1, 4), (10, 200), 6), **attrs)
    dims = exported.model.graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value") and not dims[1].HasField("dim_value")
    rng = np.random.default_rng(6)
    session = ort.InferenceSession(exported.onnx_bytes, providers=["CPUExecutionProvider"])
    for batch, n in ((1, 10), (4, 200), (3, 57)):
        x = _boxes(rng, batch, n, levels=8)
        (got,) = session.run(None, {session.get_inputs()[0].name: x})
        np.testing.assert_array_equal(got, mx.nd.contrib.box_nms(mx.nd.array(x), **attrs).asnumpy())


def test_box_nms_center_input_without_suppression_is_exported(tmp_path):
    """in_format='center' with overlap_thresh >= 1: no IoU is computed, so it is exact."""
    rng = np.random.default_rng(7)
    x = _boxes(rng, 2, 30)
    _assert_nms_exact(tmp_path, x, in_format="center", out_format="corner", overlap_thresh=1.0,
                      topk=12)


@pytest.mark.parametrize("attrs, shape, dtype", [
    (dict(in_format="center", out_format="center"), (1, 20, 6), "float32"),
    (dict(in_format="center", out_format="corner"), (1, 20, 6), "float32"),
    (dict(overlap_thresh=-0.1), (1, 20, 6), "float32"),
    (dict(), (1, 20, 6), "float16"),
])
def test_box_nms_inexact_cases_stay_in_mxnet(tmp_path, attrs, shape, dtype):
    """What ONNX cannot compute exactly raises in the converter: trtc keeps the op in MXNet."""
    data = mx.sym.var("data", dtype=dtype)
    symbol = mx.sym.contrib.box_nms(mx.sym.broadcast_add(data, mx.sym.var("w", dtype=dtype),
                                                         name="pre"), name="nms", **attrs)
    symbol.save(str(tmp_path / "m-symbol.json"))
    mx.nd.save(str(tmp_path / "m-0000.params"), {"arg:w": mx.nd.zeros((1,), dtype=dtype)})
    graph = load_graph(tmp_path / "m-symbol.json", tmp_path / "m-0000.params", {"data": shape},
                       {"data": dtype})
    segment = describe_nodes(graph, [n.index for n in graph.op_nodes if n.name == "nms"],
                             "engine")
    with pytest.raises(ExportError) as err:
        onnx_from_segment(graph, segment)
    assert err.value.node == "nms" and "NotImplementedError" in str(err.value)


# ----------------------------------------------------------------------------------------------
# ROIAlign, topk, argsort: mxnet.onnx's converters (with trtc's fixes) against MXNet
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sample_ratio", [2, 0, -1])
def test_roi_align_exact(tmp_path, sample_ratio):
    """GluonCV's R-CNNs use sample_ratio=2; -1 is MXNet's default (adaptive, as 0), which ONNX
    Runtime refused as mxnet.onnx wrote it. Rois partly or wholly outside the map, tiny and
    inverted ones; batch indices >= 0 (MXNet 1.9.1's CPU kernel mishandles negative ones)."""
    rng = np.random.default_rng(8)
    feat = rng.standard_normal((2, 4, 20, 24)).astype(np.float32)
    rois = np.zeros((30, 5), np.float32)
    rois[:, 0] = rng.integers(0, 2, 30)
    corner = rng.random((30, 2)) * 200 - 20
    rois[:, 1:3] = corner
    rois[:, 3:5] = corner + rng.random((30, 2)) * 120
    rois[:4, 3:5] = rois[:4, 1:3] + 0.3
    rois[4:8, 3:5] = rois[4:8, 1:3] - 5
    attrs = dict(pooled_size=(7, 7), spatial_scale=1 / 8, sample_ratio=sample_ratio)
    exported, _ = _export(tmp_path, lambda f, r: mx.sym.contrib.ROIAlign(f, r, name="roi", **attrs),
                          {"f": feat.shape, "r": rois.shape}, "_contrib_ROIAlign")
    (got,) = _run(exported, feat, rois)
    want = mx.nd.contrib.ROIAlign(mx.nd.array(feat), mx.nd.array(rois), **attrs).asnumpy()
    np.testing.assert_array_equal(got, want)


def _ties_agree(x: np.ndarray, got: np.ndarray, want: np.ndarray, axis: int = -1) -> None:
    """Index outputs may differ among equal values (MXNet's CPU order is std::sort's): they
    must select equal values, position by position."""
    np.testing.assert_array_equal(np.take_along_axis(x, got.astype(np.int64), axis),
                                  np.take_along_axis(x, want.astype(np.int64), axis))


@pytest.mark.parametrize("attrs", [
    dict(k=5, ret_typ="both"),  # CenterNet: topk over the flattened heatmap, 'both'
    dict(k=5, ret_typ="value", is_ascend=True),
    dict(k=400, ret_typ="indices", dtype="int32"),
    dict(k=2, ret_typ="both", axis=0, dtype="int64"),
])
def test_topk(tmp_path, attrs):
    rng = np.random.default_rng(9)
    distinct = rng.permutation(3 * 1000).reshape(3, 1000).astype(np.float32) / 7
    ties = np.round(rng.random((3, 1000)) * 8).astype(np.float32)
    exported, _ = _export(tmp_path, lambda d: mx.sym.topk(d, name="tk", **attrs),
                          {"d": (3, 1000)}, "topk")
    axis = attrs.get("axis", -1)
    for x in (distinct, ties):
        got = _run(exported, x)
        want = mx.nd.topk(mx.nd.array(x), **attrs)
        want = [w.asnumpy() for w in (want if isinstance(want, list) else [want])]
        assert [g.dtype for g in got] == [w.dtype for w in want]
        if x is distinct:
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)
        elif attrs["ret_typ"] == "value":
            np.testing.assert_array_equal(got[0], want[0])
        else:
            _ties_agree(x, got[-1], want[-1], axis)
            if attrs["ret_typ"] == "both":
                np.testing.assert_array_equal(got[0], want[0])


def test_topk_k0_stays_in_mxnet(tmp_path):
    """MXNet's topk with k < 1 sorts the whole axis; mxnet.onnx's TopK would return nothing."""
    with pytest.raises(ExportError, match="NotImplementedError"):
        _export(tmp_path, lambda d: mx.sym.topk(d, k=0, name="tk"), {"d": (2, 50)}, "topk")


@pytest.mark.parametrize("attrs", [dict(), dict(is_ascend=False, dtype="int64"),
                                   dict(axis=0, dtype="int32")])
def test_argsort(tmp_path, attrs):
    rng = np.random.default_rng(10)
    distinct = rng.permutation(3 * 500).reshape(3, 500).astype(np.float32)
    ties = np.round(rng.random((3, 500)) * 8).astype(np.float32)
    exported, _ = _export(tmp_path, lambda d: mx.sym.argsort(d, name="as", **attrs),
                          {"d": (3, 500)}, "argsort")
    for x in (distinct, ties):
        (got,) = _run(exported, x)
        want = mx.nd.argsort(mx.nd.array(x), **attrs).asnumpy()
        assert got.dtype == want.dtype
        if x is distinct:
            np.testing.assert_array_equal(got, want)
        else:
            _ties_agree(x, got, want, attrs.get("axis", -1))


# ----------------------------------------------------------------------------------------------
# Reshape with MXNet's special codes: trtc's shape walk against MXNet
# ----------------------------------------------------------------------------------------------
RESHAPE_CASES = [
    # (input shape, target, reverse): multi-head attention's head split and merge first
    ((2, 5, 12), (0, 0, -4, 3, -1), False),
    ((2, 5, 3, 4), (0, 0, -3), False),
    ((6, 5, 4), (-4, -1, 3, 0, 0), False),
    ((2, 3, 5, 4), (-3, 0, 0), False),
    ((2, 3, 5, 4), (-1, 0, 0), True),          # GluonNLP's attention cell
    ((2, 3, 5, 4), (0, 0, 0, 2, -1, -4), True),  # reverse reads a -4 pair after it
    ((2, 3, 5, 4), (0, -2), False),
    ((2, 3, 5, 4), (-2, 1, 1), False),
    ((2, 3, 5, 4), (-3, -2), False),
    ((2, 3, 5, 4), (-2, -3), True),
    ((2, 3, 5, 4), (0, -3, -1), False),
    ((2, 3, 5, 4), (5, -1), True),
    ((2, 3, 5, 4), (0, -4, 1, -1, 0, 0), False),
    ((2, 3, 5, 4), (-3, -3), False),
    ((4, 6), (-4, 2, 2, -4, 3, -1), False),
]


def _run_shape_generic(tmp_path, symbol, x):
    """``symbol`` (one input) exported by mxnet.onnx with trtc's converters and every size
    dynamic (nothing folded), run by ONNX Runtime on ``x``: the converter's own ONNX."""
    import mxnet.onnx as mx_onnx

    from trtc.export import _provenance

    path = tmp_path / "generic.onnx"
    with _provenance() as state:
        mx_onnx.export_model(symbol, {}, in_shapes=[x.shape], in_types=[np.float32],
                             onnx_file_path=str(path), dynamic=True)
    assert state["failed"] is None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    return got


@pytest.mark.parametrize("shape,target,reverse", RESHAPE_CASES)
def test_reshape_special_codes_exact(tmp_path, shape, target, reverse):
    """mxnet.onnx raised for most targets with -2/-3/-4 (the op then ran in MXNet) and wrote a
    Pad/Slice over the shape for reverse=True that TensorRT refuses unfolded. trtc's converter
    runs MXNet's own shape walk on the symbolic shape. Checked twice: the shape-generic ONNX
    (no size folded: what a dynamic batch gets) and trtc's folded segment."""
    x = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    want = mx.nd.reshape(mx.nd.array(x), shape=target, reverse=reverse).asnumpy()
    symbol = mx.sym.reshape(mx.sym.var("data"), shape=target, reverse=reverse, name="r")
    got = _run_shape_generic(tmp_path, symbol, x)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)

    exported, _ = _export(tmp_path, lambda d: mx.sym.reshape(d, shape=target, reverse=reverse,
                                                             name="r"), {"d": shape}, "Reshape")
    (got,) = _run(exported, x)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("target", [(-1, -1), (-4, -1, -1), (-4, 2), (-2, 0)])
def test_reshape_targets_mxnet_refuses_are_refused(target):
    """Targets MXNet's own shape inference refuses (two -1, a -4 splitting into -1 and -1 or
    missing a value, 0 after -2): the shape walk raises too, never guesses."""
    from trtc.converters import _reshape_dims

    with pytest.raises(mx.base.MXNetError):
        mx.nd.reshape(mx.nd.zeros((4, 6)), shape=target)
    with pytest.raises(NotImplementedError):
        _reshape_dims(target, reverse=False)


# ----------------------------------------------------------------------------------------------
# AdaptiveAvgPooling2D beyond 1x1 (PSPNet, Fast-SCNN): MXNet's overlapping bins
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,output_size", [
    ((2, 3, 16, 16), (6,)),       # PSPNet's 6x6 on a 16x16 map: bins of 3 and 4, overlapping
    ((1, 4, 16, 16), (3, 3)),
    ((1, 2, 12, 20), (2, 3)),
    ((1, 2, 5, 7), (6, 8)),       # more bins than pixels: repeated pixels
    ((1, 2, 9, 9), (1, 1)),       # mxnet.onnx's GlobalAveragePool
])
def test_adaptive_avg_pooling_exact(tmp_path, shape, output_size):
    """mxnet.onnx raised for any output but 1x1 (the op ran in MXNet). Checked on the
    shape-generic ONNX (dynamic sizes, nothing folded) and on trtc's folded segment."""
    x = np.random.default_rng(11).standard_normal(shape).astype(np.float32)
    want = mx.nd.contrib.AdaptiveAvgPooling2D(mx.nd.array(x), output_size=output_size).asnumpy()
    symbol = mx.sym.contrib.AdaptiveAvgPooling2D(mx.sym.var("data"), output_size=output_size,
                                                 name="pool")
    got = _run_shape_generic(tmp_path, symbol, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

    exported, _ = _export(tmp_path, lambda d: mx.sym.contrib.AdaptiveAvgPooling2D(
        d, output_size=output_size, name="pool"), {"d": shape}, "_contrib_AdaptiveAvgPooling2D")
    (got,) = _run(exported, x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# BilinearResize2D: align_corners both ways, every mode (mxnet.onnx: always align_corners,
# 'size' only)
# ----------------------------------------------------------------------------------------------
RESIZE_CASES = [
    ((2, 3, 5, 7), dict(height=9, width=4)),
    ((1, 2, 8, 8), dict(height=1, width=1)),
    ((1, 2, 16, 16), dict(scale_height=1.5, scale_width=0.5)),
    ((1, 2, 15, 16), dict(scale_height=1.37, scale_width=2.0)),
    ((1, 2, 15, 16), dict(mode="odd_scale", scale_height=1.5, scale_width=1.5)),
    ((1, 2, 15, 16), dict(mode="to_even_down")),
    ((1, 2, 15, 16), dict(mode="to_even_up")),
    ((1, 2, 15, 16), dict(mode="to_odd_down")),
    ((1, 2, 15, 16), dict(mode="to_odd_up")),
]


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("shape,attrs", RESIZE_CASES)
def test_bilinear_resize_matches_mxnet(tmp_path, shape, attrs, align_corners):
    """Shape-generic ONNX (sizes computed at run time) and trtc's folded segment (sizes
    constant: the fractional scales survive folding) against MXNet. Tolerance: the source
    index is computed as in/out * x in MXNet, x / (out/in) in ONNX Runtime (last-bit
    differences of the interpolation weights)."""
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    want = mx.nd.contrib.BilinearResize2D(mx.nd.array(x), align_corners=align_corners,
                                          **attrs).asnumpy()
    symbol = mx.sym.contrib.BilinearResize2D(mx.sym.var("data"), align_corners=align_corners,
                                             name="resize", **attrs)
    got = _run_shape_generic(tmp_path, symbol, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    exported, _ = _export(tmp_path, lambda d: mx.sym.contrib.BilinearResize2D(
        d, align_corners=align_corners, name="resize", **attrs), {"d": shape},
        "_contrib_BilinearResize2D")
    (got,) = _run(exported, x)


# 1-D convolution and pooling (Gluon Conv1D / MaxPool1D / AvgPool1D / Global*Pool1D: layout NCW)
# ----------------------------------------------------------------------------------------------
CONV1D_CASES = [
    dict(kernel=(3,), num_filter=8, pad=(1,)),                   # Gluon Conv1D(8, 3, padding=1)
    dict(kernel=(5,), num_filter=6, stride=(2,), dilate=(2,), pad=(3,)),
    dict(kernel=(3,), num_filter=6, num_group=3, no_bias=True),  # grouped, no bias
]


@pytest.mark.parametrize("attrs", CONV1D_CASES)
def test_conv1d_ncw(tmp_path, attrs):
    """mxnet.onnx refused layout='NCW' (Gluon's Conv1D): the op ran in MXNet. Float
    summation order differs between MXNet's oneDNN kernel and ONNX Runtime: 1e-5."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 6, 23)).astype(np.float32)
    k = rng.standard_normal((attrs["num_filter"], 6 // attrs.get("num_group", 1),
                             attrs["kernel"][0])).astype(np.float32)
    bias = rng.standard_normal((attrs["num_filter"],)).astype(np.float32)
    no_bias = attrs.get("no_bias", False)
    shapes = {"x": x.shape, "k": k.shape, **({} if no_bias else {"bias": bias.shape})}
    exported, _ = _export(tmp_path, lambda *a: mx.sym.Convolution(*a, layout="NCW", name="conv",
                                                                  **attrs),
                          shapes, "Convolution")
    arrays = [x, k] if no_bias else [x, k, bias]
    (got,) = _run(exported, *arrays)
    want = mx.nd.Convolution(*[mx.nd.array(a) for a in arrays], layout="NCW", **attrs).asnumpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


POOL1D_CASES = [
    dict(kernel=(2,), stride=(2,), pool_type="max"),                      # MaxPool1D(2)
    dict(kernel=(3,), stride=(2,), pad=(1,), pool_type="max", pooling_convention="full"),
    dict(kernel=(2,), stride=(2,), pool_type="avg"),                      # AvgPool1D(2)
    dict(kernel=(3,), stride=(2,), pad=(1,), pool_type="avg", count_include_pad=False),
    dict(kernel=(3,), stride=(1,), pad=(1,), pool_type="avg", pooling_convention="full"),
    dict(kernel=(1,), global_pool=True, pool_type="avg"),                 # GlobalAvgPool1D
    dict(kernel=(1,), global_pool=True, pool_type="max"),                 # GlobalMaxPool1D
    dict(kernel=(1,), global_pool=True, pool_type="sum"),
]


@pytest.mark.parametrize("attrs", POOL1D_CASES)
def test_pool1d_ncw(tmp_path, attrs):
    """Pooling with layout='NCW' (Gluon's 1-D pools), checked on the shape-generic ONNX and on
    trtc's folded segment (a sum pool: that one only). Max is bit-exact; averages and sums
    round differently (1e-6)."""
    x = np.random.default_rng(13).standard_normal((2, 5, 21)).astype(np.float32)
    want = mx.nd.Pooling(mx.nd.array(x), layout="NCW", **attrs).asnumpy()
    if attrs["pool_type"] != "sum":  # a sum pool needs the rank, which trtc gives its export
        got = _run_shape_generic(tmp_path, mx.sym.Pooling(mx.sym.var("data"), layout="NCW",
                                                          name="pool", **attrs), x)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    exported, _ = _export(tmp_path, lambda d: mx.sym.Pooling(d, layout="NCW", name="pool",
                                                             **attrs), {"d": x.shape}, "Pooling")
    (got,) = _run(exported, x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    if attrs["pool_type"] == "max":
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(2, 3, 8, 9), (1, 4, 3, 5, 6)])
def test_global_sum_pool(tmp_path, shape):
    x = np.random.default_rng(14).standard_normal(shape).astype(np.float32)
    attrs = dict(kernel=(1,) * (len(shape) - 2), global_pool=True, pool_type="sum")
    exported, _ = _export(tmp_path, lambda d: mx.sym.Pooling(d, name="pool", **attrs),
                          {"d": shape}, "Pooling")
    (got,) = _run(exported, x)
    want = mx.nd.Pooling(mx.nd.array(x), **attrs).asnumpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bilinear_resize_like(tmp_path):
    """mode='like' (HRNet's segmentation head): the second input's H and W."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 3, 6, 9)).astype(np.float32)
    like = rng.standard_normal((1, 5, 13, 11)).astype(np.float32)
    for align_corners in (True, False):
        want = mx.nd.contrib.BilinearResize2D(mx.nd.array(x), mx.nd.array(like), mode="like",
                                              align_corners=align_corners).asnumpy()
        exported, _ = _export(tmp_path, lambda d, l: mx.sym.contrib.BilinearResize2D(
            d, l, mode="like", align_corners=align_corners, name="resize"),
            {"d": x.shape, "l": like.shape}, "_contrib_BilinearResize2D")
        (got,) = _run(exported, x, like)
        assert got.shape == (1, 3, 13, 11)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# mxnet.onnx's attribute defaults against MXNet's registry
# ----------------------------------------------------------------------------------------------
# (op, attribute) whose defaults are spelled differently but mean the same, or whose converter
# trtc replaces; reviewed one by one.
SAME_MEANING = {
    ("softmax", "use_length"): "'None' is read as false",
    ("_contrib_box_nms", "force_suppress"): "trtc's own converter",
    ("_contrib_ROIAlign", "sample_ratio"): "0 and -1 both mean adaptive (trtc's wrapper)",
    ("Convolution", "layout"): "None is NCHW for 2-D (others are refused)",
    ("Deconvolution", "layout"): "None is NCHW for 2-D (others are refused)",
    ("Pooling", "layout"): "None is NCHW for 2-D (others are refused)",
    ("_linalg_gemm2", "axis"): "None is MXNet's -2; any axis given is refused",
    ("Pooling", "p_value"): "MXNet requires p_value for lp pooling, the only user",
    ("Pooling", "count_include_pad"): "MXNet's None means True",
    ("_sample_multinomial", "shape"): "random ops are never exported (random_op)",
    ("_random_uniform", "shape"): "random ops are never exported (random_op)",
    ("_random_uniform", "dtype"): "random ops are never exported (random_op)",
    ("_random_normal", "shape"): "random ops are never exported (random_op)",
    ("_random_normal", "dtype"): "random ops are never exported (random_op)",
    ("_contrib_BilinearResize2D", "height"): "trtc's own converter",
    ("_contrib_BilinearResize2D", "width"): "trtc's own converter",
    ("_contrib_BilinearResize2D", "scale_height"): "trtc's own converter",
    ("_contrib_BilinearResize2D", "scale_width"): "trtc's own converter",
    ("_contrib_AdaptiveAvgPooling2D", "output_size"): "MXNet's () is a 1x1 output",
    ("reshape_like", "lhs_begin"): "None is 0",
    ("reshape_like", "rhs_begin"): "None is 0",
    ("slice_like", "axes"): "None and () both mean every axis",
    ("Dropout", "axes"): "None and () both mean no shared axis",
}


def _default_text(text: str) -> Any:
    import re

    text = str(text).strip().strip("'\"")
    if text in ("", "None", "[]", "()", "(", "[", "''"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return round(float(text), 6)
    except ValueError:
        pass
    numbers = re.findall(r"-?\d+", text)
    return tuple(int(n) for n in numbers) if text[:1] in "([" else text


def test_mxnet_onnx_defaults_agree_with_mxnet_or_are_filled():
    """Every ``attrs.get(name, default)`` of every mxnet.onnx converter, against MXNet's own
    default for that attribute: each mismatch is filled with MXNet's value before conversion
    (``MXNET_DEFAULTS_FILLED``: LRN's knorm was 1.0 instead of 2) or reviewed as the same
    meaning. A new mxnet.onnx with a new mismatch fails here."""
    import ast
    import inspect
    import re

    import mxnet.onnx  # noqa: F401
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph

    from trtc.converters import MXNET_DEFAULTS_FILLED, mxnet_op_arguments

    pattern = re.compile(r"attrs\.get\(\s*['\"](\w+)['\"]\s*,\s*([^)]*?)\)")
    mismatches, seen = set(), set()
    for opset in (13, 12):
        for op, converter in MXNetGraph.registry_.get(opset, {}).items():
            if op in seen:
                continue
            seen.add(op)
            try:
                arguments = mxnet_op_arguments(op)
                source = inspect.getsource(converter)
            except Exception:  # noqa: BLE001 - an alias MXNet does not register, a builtin
                continue
            for name, default in pattern.findall(source):
                if name not in arguments or "required" in arguments[name][0]:
                    continue  # a required attribute is always in the JSON
                try:
                    default = ast.literal_eval(default.strip())
                except (ValueError, SyntaxError):
                    pass
                if _default_text(default) != _default_text(arguments[name][1]):
                    mismatches.add((op, name))
    filled = {(op, name) for op, names in MXNET_DEFAULTS_FILLED.items() for name in names}
    assert ("LRN", "knorm") in mismatches  # the audit sees what it must
    assert mismatches - filled - set(SAME_MEANING) == set()


@pytest.mark.parametrize("build,op", [
    (lambda d: mx.sym.LRN(d, nsize=3, name="lrn"), "LRN"),
    (lambda d: mx.sym.Deconvolution(d, mx.sym.var("dw", shape=(3, 2, 3, 3)), kernel=(3, 3),
                                    num_filter=2, stride=(2, 2), name="deconv"),
     "Deconvolution"),
])
def test_mxnet_defaults_are_what_the_onnx_computes(tmp_path, build, op):
    """A symbol that leaves LRN's knorm (MXNet 2) or Deconvolution's no_bias (MXNet True) to
    MXNet's default: the ONNX computes MXNet's result (before: 0.68 off; a refused export)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    symbol = build(mx.sym.var("data"))
    args = {"data": mx.nd.array(x)}
    params = {}
    if op == "Deconvolution":
        params["dw"] = mx.nd.array(rng.standard_normal((3, 2, 3, 3)).astype(np.float32))
    want = symbol.eval(ctx=mx.cpu(), **args, **params)[0].asnumpy()
    import mxnet.onnx as mx_onnx

    from trtc.export import _provenance

    path = tmp_path / "m.onnx"
    with _provenance() as state:
        mx_onnx.export_model(symbol, params, in_shapes=[x.shape], in_types=[np.float32],
                             onnx_file_path=str(path))
    assert state["failed"] is None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"data": x})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_windowed_sum_pool_stays_in_mxnet(tmp_path):
    with pytest.raises(ExportError, match="NotImplementedError"):
        _export(tmp_path, lambda d: mx.sym.Pooling(d, kernel=(2, 2), pool_type="sum", name="p"),
                {"d": (1, 2, 6, 6)}, "Pooling")


# ----------------------------------------------------------------------------------------------
# GroupNorm: MXNet 1.x's per-group gamma and beta
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,groups,eps,mean_var", [
    ((2, 6, 4, 5), 3, 1e-5, False),
    ((2, 8, 11), 4, 0.1, False),
    ((1, 4, 3, 2, 5), 1, 1e-3, False),
    ((2, 6, 4, 5), 2, 1e-5, True),
])
def test_group_norm(tmp_path, shape, groups, eps, mean_var):
    """No mxnet.onnx converter (the op ran in MXNet). gamma and beta are (num_groups,) in MXNet
    1.9.1 (infer_shape checked). Float summation order differs: 1e-5 on unit-scale data."""
    rng = np.random.default_rng(15)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    gamma = rng.standard_normal((groups,)).astype(np.float32)
    beta = rng.standard_normal((groups,)).astype(np.float32)
    attrs = dict(num_groups=groups, eps=eps, output_mean_var=mean_var)
    symbol = mx.sym.GroupNorm(mx.sym.var("x"), mx.sym.var("g"), mx.sym.var("b"), **attrs)
    assert symbol.infer_shape(x=shape)[0][1:] == [(groups,), (groups,)]
    exported, segment = _export(tmp_path, lambda *a: mx.sym.GroupNorm(*a, name="gn", **attrs),
                                {"x": shape, "g": gamma.shape, "b": beta.shape}, "GroupNorm")
    got = _run(exported, x, gamma, beta)
    want = mx.nd.GroupNorm(mx.nd.array(x), mx.nd.array(gamma), mx.nd.array(beta), **attrs)
    want = [w.asnumpy() for w in (want if isinstance(want, list) else [want])]
    assert len(got) == len(want) == (3 if mean_var else 1)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# element-wise ops mxnet.onnx has no converter for
# ----------------------------------------------------------------------------------------------
def _edge_values(shape: Tuple[int, ...], seed: int) -> np.ndarray:
    """Random data of several scales with NaN, +-inf, +-0, +-0.5 steps and huge values mixed
    in (where the op is defined for them)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * rng.choice([0.01, 1, 100], shape)).astype(np.float32)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 0.5, -0.5, 1.5, -2.5, 0.25, -0.25,
                        1.0, -1.0, 4.0, 3e38, -3e38, 1e-40, 8388609.0, 0.49999997], np.float32)
    flat = x.reshape(-1)
    n = min(flat.size, special.size)
    flat[:n] = special[:n]
    return x


def _assert_same(got: np.ndarray, want: np.ndarray, exact: bool, rtol: float = 0.0) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    if exact:  # bit for bit: NaN in the same places, signed zeros alike
        np.testing.assert_array_equal(got.view(np.uint32) if got.dtype == np.float32 else got,
                                      want.view(np.uint32) if want.dtype == np.float32 else want)
    else:
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 1e-3)


# op, inputs (shapes), attrs, exact (else the relative tolerance)
ELEMENTWISE_CASES = [
    ("broadcast_maximum", [(2, 6, 4, 5), (1, 6, 1, 1)], {}, 1e-7),  # +-0 may swap sign
    ("broadcast_maximum", [(2, 1, 5), (3, 1)], {}, 1e-7),
    ("broadcast_hypot", [(2, 6, 4, 5), (1, 6, 1, 1)], {}, 2e-7),
    ("erf", [(4, 100)], {}, 2e-7),
    ("sign", [(4, 100)], {}, True),
    ("softsign", [(4, 100)], {}, True),
    ("softmin", [(3, 7, 5)], dict(axis=1), 1e-6),
    ("softmin", [(3, 7, 5)], dict(temperature=2.5), 1e-6),
    ("smooth_l1", [(4, 100)], {}, True),
    ("smooth_l1", [(4, 100)], dict(scalar=2.0), True),
    ("smooth_l1", [(4, 100)], dict(scalar=0.3), True),
    # 0.49999997, 8388609, -0.5, -2.5, NaN, inf, ...; a zero's sign may differ (ONNX Runtime's
    # Ceil and Where drop it): compared as values, NaN included
    ("round", [(4, 100)], {}, 0.0),
    ("fix", [(4, 100)], {}, 0.0),
    ("trunc", [(4, 100)], {}, 0.0),
    ("rint", [(4, 100)], {}, 0.0),
]


@pytest.mark.parametrize("op,shapes,attrs,exact", ELEMENTWISE_CASES)
def test_elementwise(tmp_path, op, shapes, attrs, exact):
    """No mxnet.onnx converter (the ops ran in MXNet). Ops that are a few IEEE operations in
    both are compared bit for bit on edge values (maximum: NaN included, but MXNet returns the
    second of 0.0 and -0.0, ONNX Runtime either); erf, hypot (libm vs ONNX Runtime) and the
    softmins (exp, sums) within a few ulps on finite data."""
    arrays = [_edge_values(s, 16 + i) for i, s in enumerate(shapes)]
    if op in ("broadcast_hypot", "erf", "softmin"):  # finite, moderate data
        arrays = [np.nan_to_num(a, nan=0.5, posinf=2.0, neginf=-2.0) for a in arrays]
        arrays = [np.where(np.abs(a) > 1e4, a / 1e36, a).astype(np.float32) for a in arrays]
    names = [f"x{i}" for i in range(len(shapes))]
    exported, _ = _export(tmp_path, lambda *a: getattr(mx.sym, op)(*a, name="op", **attrs),
                          dict(zip(names, shapes)), op)
    (got,) = _run(exported, *arrays)
    want = getattr(mx.nd, op)(*[mx.nd.array(a) for a in arrays], **attrs).asnumpy()
    if exact is True:
        _assert_same(got, want, True)
    elif exact == 0.0:
        np.testing.assert_array_equal(got, want)
    else:
        _assert_same(got, want, False, exact)


def test_softmin_other_dtype_stays_in_mxnet(tmp_path):
    with pytest.raises(ExportError, match="NotImplementedError"):
        _export(tmp_path, lambda d: mx.sym.softmin(d, dtype="float64", name="op"), {"d": (2, 5)},
                "softmin")


# ----------------------------------------------------------------------------------------------
# pick, cumsum, sort, moments, L2Normalization, BatchNorm on another axis
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis,mode,keepdims", [(1, "clip", False), (-1, "clip", True),
                                                (0, "wrap", False), (2, "wrap", True),
                                                (0, "clip", True)])  # keepdims, index without
def test_pick(tmp_path, axis, mode, keepdims):
    """GatherElements with MXNet's index rules: float indices truncated, then clipped or
    wrapped (negative and past-the-end ones included); with keepdims the index with the axis
    (size 1) or, as Gluon passes argmax's, without it. Bit-exact (a gather)."""
    rng = np.random.default_rng(17)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    shape = list(x.shape)
    shape[axis] = 1
    index = rng.integers(-7, 9, shape).astype(np.float32) + rng.choice([0, 0.3, 0.7], shape)
    index = (index if keepdims and axis else np.squeeze(index, axis)).astype(np.float32)
    attrs = dict(axis=axis, mode=mode, keepdims=keepdims)
    exported, _ = _export(tmp_path, lambda d, i: mx.sym.pick(d, i, name="op", **attrs),
                          {"d": x.shape, "i": index.shape}, "pick")
    (got,) = _run(exported, x, index)
    want = mx.nd.pick(mx.nd.array(x), mx.nd.array(index), **attrs).asnumpy()
    _assert_same(got, want, exact=True)


@pytest.mark.parametrize("axis,dtype,out_dtype", [(2, "float32", None), (None, "float32", None),
                                                  (0, "int32", "int64"), (2, "int64", None),
                                                  (1, "float32", "float64")])
def test_np_cumsum(tmp_path, axis, dtype, out_dtype):
    """ONNX CumSum sums in order as MXNet does: bit-exact. (MXNet 1.9.1's _np_cumsum refuses
    a negative axis itself.)"""
    rng = np.random.default_rng(18)
    x = (rng.standard_normal((2, 6, 7)) * 10).astype(dtype)
    data = mx.sym.var("d", dtype=dtype)
    pre = mx.sym.broadcast_add(data, mx.sym.var("w", dtype=dtype), name="pre")
    symbol = mx.sym.np.cumsum(pre.as_np_ndarray(), axis=axis, dtype=out_dtype).as_nd_ndarray()
    symbol.save(str(tmp_path / "m-symbol.json"))
    mx.nd.save(str(tmp_path / "m-0000.params"), {"arg:w": mx.nd.zeros((1,), dtype=dtype)})
    graph = load_graph(tmp_path / "m-symbol.json", tmp_path / "m-0000.params", {"d": x.shape},
                       {"d": dtype})
    segment = describe_nodes(graph, [n.index for n in graph.op_nodes if n.op == "_np_cumsum"],
                             "engine")
    (got,) = _run(onnx_from_segment(graph, segment), x)
    want = mx.np.cumsum(mx.np.array(x, dtype=dtype), axis=axis, dtype=out_dtype).asnumpy()
    _assert_same(got, want, exact=True)


@pytest.mark.parametrize("attrs", [dict(axis=1), dict(), dict(axis=0, is_ascend=False)])
def test_sort(tmp_path, attrs):
    rng = np.random.default_rng(19)
    for x in (rng.standard_normal((4, 9, 5)).astype(np.float32),
              np.round(rng.standard_normal((4, 9, 5)) * 2).astype(np.float32)):  # ties
        exported, _ = _export(tmp_path, lambda d: mx.sym.sort(d, name="op", **attrs),
                              {"d": x.shape}, "sort")
        (got,) = _run(exported, x)
        _assert_same(got, mx.nd.sort(mx.nd.array(x), **attrs).asnumpy(), exact=True)


@pytest.mark.parametrize("axes,keepdims", [((2, 3), True), ((1,), False), ((0, 2), False)])
def test_moments(tmp_path, axes, keepdims):
    """Two outputs (mean, var); summation order differs: 1e-5 on data of mean 1."""
    x = (np.random.default_rng(20).standard_normal((2, 6, 5, 7)) + 1).astype(np.float32)
    exported, _ = _export(tmp_path, lambda d: mx.sym.moments(d, axes=axes, keepdims=keepdims,
                                                             name="op"), {"d": x.shape},
                          "moments")
    got = _run(exported, x)
    want = [w.asnumpy() for w in mx.nd.moments(mx.nd.array(x), axes=axes, keepdims=keepdims)]
    assert len(got) == 2
    for g, w in zip(got, want):
        _assert_same(g, w, exact=False, rtol=1e-5)


@pytest.mark.parametrize("mode,shape,eps", [("instance", (2, 3, 4, 5), 1e-10),
                                            ("spatial", (2, 3, 4, 5), 0.5),
                                            ("channel", (2, 3, 4, 5), 1e-10),
                                            ("instance", (3, 7), 1e-10)])
def test_l2_normalization(tmp_path, mode, shape, eps):
    """MXNet's eps inside the square root; an all-zero row gives 0 (mxnet.onnx's 'channel'
    LpNormalization gave NaN there). Summation order differs: 1e-6."""
    x = np.random.default_rng(21).standard_normal(shape).astype(np.float32)
    x[0] = 0
    exported, _ = _export(tmp_path, lambda d: mx.sym.L2Normalization(d, mode=mode, eps=eps,
                                                                     name="op"),
                          {"d": shape}, "L2Normalization")
    (got,) = _run(exported, x)
    want = mx.nd.L2Normalization(mx.nd.array(x), mode=mode, eps=eps).asnumpy()
    assert not np.isnan(got).any()
    _assert_same(got, want, exact=False, rtol=1e-6)


@pytest.mark.parametrize("axis,shape", [(2, (2, 5, 4)), (-1, (2, 3, 4, 6)), (3, (1, 2, 3, 4))])
def test_batchnorm_other_axis(tmp_path, axis, shape):
    """mxnet.onnx refused axis != 1; Transpose, BatchNormalization, Transpose. The statistics
    are params (MXNet's moving mean and variance are aux states). Rounding differs: 1e-5."""
    rng = np.random.default_rng(22)
    x = rng.standard_normal(shape).astype(np.float32)
    c = shape[axis]
    stats = {"g": rng.standard_normal((c,)), "b": rng.standard_normal((c,)),
             "m": rng.standard_normal((c,)), "v": rng.random((c,)) + 0.5}
    attrs = dict(axis=axis, eps=1e-3, fix_gamma=False)
    pre = mx.sym.broadcast_add(mx.sym.var("d"), mx.sym.var("w"), name="pre")
    symbol = mx.sym.BatchNorm(pre, *[mx.sym.var(k) for k in "gbmv"], name="op", **attrs)
    symbol.save(str(tmp_path / "m-symbol.json"))
    params = {f"{'aux' if k in 'mv' else 'arg'}:{k}": mx.nd.array(v) for k, v in stats.items()}
    mx.nd.save(str(tmp_path / "m-0000.params"), {**params, "arg:w": mx.nd.zeros((1,))})
    graph = load_graph(tmp_path / "m-symbol.json", tmp_path / "m-0000.params", {"d": shape})
    segment = describe_nodes(graph, [n.index for n in graph.op_nodes if n.op == "BatchNorm"],
                             "engine")
    (got,) = _run(onnx_from_segment(graph, segment), x)
    want = mx.nd.BatchNorm(mx.nd.array(x), *[mx.nd.array(stats[k]) for k in "gbmv"],
                           **attrs).asnumpy()
    _assert_same(got, want, exact=False, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# end to end: a hand-written 1-D block of these ops compiles with no MXNet stage
# ----------------------------------------------------------------------------------------------
def test_compile_1d_block_needs_no_mxnet(tmp_path):
    """A Gluon 1-D CNN (Conv1D, GroupNorm, MaxPool1D, AvgPool1D, global pools) with the
    element-wise ops, pick, cumsum, sort, moments and L2Normalization, Xavier weights, compiled
    with the default command: every op runs in an engine or ONNX Runtime, the bundle does not
    require MXNet, and its CPU path matches MXNet."""
    from mxnet.gluon import HybridBlock, nn

    from models.tiny import export_block
    from trtc import CompileSettings, compile
    from trtc.frontend import resolve_model_files
    from trtc.runtime import load
    from trtc.verify import mxnet_forward

    class Audio(HybridBlock):
        def __init__(self) -> None:
            super().__init__(prefix="audio_")
            with self.name_scope():
                self.conv = nn.Conv1D(8, 3, padding=1, in_channels=3)
                self.norm = nn.GroupNorm(num_groups=2)
                self.max = nn.MaxPool1D(2)
                self.avg = nn.AvgPool1D(2)
                self.gap = nn.GlobalAvgPool1D()
                self.gmp = nn.GlobalMaxPool1D()

        def hybrid_forward(self, F: Any, x: Any) -> Any:
            y = self.norm(self.conv(x))
            y = F.broadcast_maximum(self.max(y), self.avg(y)) + F.softsign(y.slice_axis(2, 0, 10))
            y = y + F.erf(y) * F.sign(y) + F.smooth_l1(y, scalar=2.0) + F.softmin(y, axis=1)
            y = F.L2Normalization(y, mode="instance") + F.broadcast_hypot(y, y * 0.5)
            y = F.sort(y, axis=2) + F.np.cumsum(y.as_np_ndarray(), axis=2).as_nd_ndarray()
            mean, var = F.moments(y, axes=(2,), keepdims=True)
            picked = F.pick(y, F.argmax(y, axis=2), axis=2, keepdims=True)
            return F.concat(self.gap(y), self.gmp(y), mean, var, picked, dim=1)

    params = export_block(Audio(), tmp_path, "audio", (2, 3, 20))
    result = compile(CompileSettings(params=params, inputs={"data": (2, 3, 20)},
                                     output=tmp_path / "audio.trtb"))
    report, manifest = result.report, result.manifest
    assert report.mxnet_ops == 0 and not manifest["requires"]["mxnet"], report.to_text()
    assert all(c.ok or not c.blocking for c in result.checks)

    graph = load_graph(*resolve_model_files(params), {"data": (2, 3, 20)})
    x = np.random.default_rng(23).standard_normal((2, 3, 20)).astype(np.float32)
    want = mxnet_forward(graph, {"data": x}, graph.outputs)
    got = load(result.output, device="cpu")(data=x)
    for name in graph.outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5)
