"""Precision: which layers of an fp16 engine must run in fp32.

TensorRT-RTX is strongly typed, so precision is a property of the network: a layer runs in fp32
when the ONNX it is built from computes it in fp32 (``export.convert_to_fp16(keep_nodes=...)``).
This module decides which MXNet nodes those are, for one engine segment, the way Polygraphy's
``debug precision`` does by hand:

1. **Range**: run the segment's fp32 ONNX (ONNX Runtime) on MXNet's own values of its inputs;
   every tensor whose magnitude exceeds fp16's range (65504) must live in fp32, so the layers
   producing and consuming it are kept in fp32.
2. **Error**: run the fp16 ONNX with every intermediate tensor exposed and compare it, tensor by
   tensor, with the fp32 run. If the segment's outputs are off MXNet by more than the tolerance
   (or NaN/Inf where MXNet is finite), the layers where the error *appears* (their own output is
   off while their inputs are not) are kept in fp32; when the error only grows gradually, the
   layer with the largest jump.

The partition loop repeats this a bounded number of rounds per engine and reports every layer
kept in fp32 with its reason; ``--keep-fp32 OP_OR_NODE`` forces layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

__all__ = ["FP16_MAX", "Fp16Verdict", "judge_fp16", "resolve_keep_fp32"]

FP16_MAX = 65504.0
# a tensor this close to fp16's maximum overflows after a rounding or an addition
_RANGE_MARGIN = 0.5


@dataclass
class Fp16Verdict:
    """Which MXNet nodes to keep in fp32 next (name -> reason); ``ok`` when the fp16 segment
    already meets the tolerance."""

    ok: bool
    keep: Dict[str, str] = field(default_factory=dict)
    error: float = 0.0  # the worst relative error of the segment's outputs vs MXNet


def resolve_keep_fp32(graph: Any, names: Sequence[str]) -> Tuple[Set[str], List[str]]:
    """``--keep-fp32`` entries (op types like ``softmax`` or node names) -> MXNet node names;
    also the entries that match nothing."""
    by_op: Dict[str, List[str]] = {}
    nodes = {n.name for n in graph.op_nodes}
    for node in graph.op_nodes:
        by_op.setdefault(node.op.lower(), []).append(node.name)
    chosen: Set[str] = set()
    unknown = []
    for entry in names:
        if entry in nodes:
            chosen.add(entry)
        elif entry.lower() in by_op:
            chosen.update(by_op[entry.lower()])
        else:
            unknown.append(entry)
    return chosen, unknown


def _with_all_outputs(model: Any) -> Tuple[Any, List[str]]:
    """A copy of ``model`` whose every float tensor is also a graph output."""
    import onnx
    from onnx import TensorProto, shape_inference

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    try:
        inferred = shape_inference.infer_shapes(copy)
    except Exception:
        inferred = copy
    present = {o.name for o in inferred.graph.output}
    names = []
    for vi in inferred.graph.value_info:
        if vi.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16) \
                and vi.name not in present:
            inferred.graph.output.append(vi)
            names.append(vi.name)
    return inferred, names


def _run(model: Any, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {k: v for k, v in feeds.items() if k in wanted})
    return dict(zip(names, values))


def _relative(got: np.ndarray, ref: np.ndarray) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        return float("inf")
    finite = np.isfinite(ref)
    if not np.isfinite(got[finite]).all():
        return float("inf")
    if not finite.any():
        return 0.0
    scale = float(np.abs(ref[finite]).max()) or 1.0
    return float(np.abs(got[finite] - ref[finite]).max()) / scale


def _origin(node: Any) -> str:
    name = node.name.rsplit("#", 1)[0] if "#" in node.name else ""
    return "" if name == "node" else name


def judge_fp16(fp32_model: Any, fp16_model: Any, feeds: Mapping[str, np.ndarray],
               reference: Mapping[str, np.ndarray], outputs: Sequence[str], tolerance: float,
               kept: Set[str], gradual: int = 1) -> Fp16Verdict:
    """Judge one fp16 segment (see the module docstring); ``kept`` are the MXNet nodes already
    in fp32. ``reference``: MXNet's values of the segment's outputs. ``gradual``: how many
    layers to keep, those with the largest jumps, when the error appears nowhere at once (the
    caller doubles it round after round: MobileNetV3's error grew over a dozen hard-swish
    layers, one per round, and the rounds ran out 20% over the tolerance)."""
    fp32_all, _ = _with_all_outputs(fp32_model)
    values32 = _run(fp32_all, feeds)
    nodes = list(fp32_model.graph.node)
    consumers: Dict[str, List[Any]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    # 1. range: tensors beyond fp16 -> their producer and consumers stay fp32
    keep: Dict[str, str] = {}
    for node in nodes:
        for out in node.output:
            value = values32.get(out)
            if value is None or value.dtype.kind != "f" or not value.size:
                continue
            peak = float(np.nanmax(np.abs(value[np.isfinite(value)]))) if np.isfinite(value).any() else 0.0
            if peak > FP16_MAX * _RANGE_MARGIN:
                reason = f"its values reach {peak:.3g}, beyond fp16's range (65504)"
                for mx_name in {_origin(node)} | {_origin(c) for c in consumers.get(out, [])}:
                    if mx_name and mx_name not in kept:
                        keep.setdefault(mx_name, reason if mx_name == _origin(node)
                                        else f"reads a tensor whose values reach {peak:.3g} (> 65504)")
    if keep:
        return Fp16Verdict(ok=False, keep=keep, error=float("inf"))

    # 2. error: the fp16 run against MXNet, then tensor by tensor against the fp32 run
    fp16_all, _ = _with_all_outputs(fp16_model)
    values16 = _run(fp16_all, feeds)
    error = max((_relative(values16[o], reference[o]) for o in outputs), default=0.0)
    if error <= tolerance:
        return Fp16Verdict(ok=True, error=error)
    errors: Dict[str, float] = {}
    for name, value in values32.items():
        if name in values16 and value.dtype.kind == "f":
            errors[name] = _relative(values16[name].astype(np.float32), value)
    blamed: Dict[str, float] = {}
    jumps: List[Tuple[float, str]] = []
    for node in nodes:
        mx_name = _origin(node)
        if not mx_name or mx_name in kept:
            continue
        outs = [errors[o] for o in node.output if o in errors]
        ins = [errors.get(i, 0.0) for i in node.input if i in errors]
        if not outs:
            continue
        out_err, in_err = max(outs), max(ins, default=0.0)
        if out_err > tolerance and in_err <= tolerance:
            blamed[mx_name] = max(blamed.get(mx_name, 0.0), out_err)
        if np.isfinite(out_err):
            jumps.append((out_err - (in_err if np.isfinite(in_err) else 0.0), mx_name))
    if not blamed and jumps:
        steps = {}
        for gain, mx_name in sorted(jumps, reverse=True)[:max(gradual, 1)]:
            if gain > 0:
                steps[mx_name] = max(steps.get(mx_name, 0.0), gain)
        keep = {name: f"the fp16 error grows by {gain:.3g} here (one of the {len(steps)} largest "
                      f"steps; it appears nowhere at once)" for name, gain in steps.items()}
        return Fp16Verdict(ok=False, keep=keep, error=error)
    keep = {name: (f"fp16 error {err:.3g} appears here (its inputs are within {tolerance:g})"
                   if np.isfinite(err) else "fp16 gives NaN/Inf here from finite inputs")
            for name, err in blamed.items()}
    return Fp16Verdict(ok=False, keep=keep, error=error)
