"""Partitioning: which MXNet ops go into TensorRT engines, which stay in MXNet, and why.

The final word on support is TensorRT's own ONNX parser (and builder): `compiler.py` exports each
candidate segment, parses and builds it, and feeds every rejection back here as a ``Decision``.
This module owns the pure parts: the per-op decisions that need no parser (user exclusions, ops
mxnet.onnx cannot export), cycle-free segmentation, the minimum segment size, and the report.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from .frontend import Graph

__all__ = [
    "Reason",
    "Decision",
    "Segment",
    "PartitionReport",
    "initial_decisions",
    "segment_graph",
    "describe_nodes",
    "exportable_ops",
]


class Reason:
    """Why an op stays in MXNet (the codes in reports and JSON)."""

    EXCLUDED = "excluded"                  # --exclude-op
    NO_CONVERTER = "no_onnx_converter"     # mxnet.onnx has no converter for the op
    EXPORT_FAILED = "onnx_export_failed"   # the converter raised for this node
    EXPORT_UNFAITHFUL = "onnx_export_differs"  # the converter says ONNX computes something else
    PARSER_REJECTED = "parser_rejected"    # TensorRT's ONNX parser refused the node
    BUILD_FAILED = "build_failed"          # the segment parsed but did not build; split here
    BELOW_MIN_SIZE = "below_min_segment_size"

    TEXT = {
        EXCLUDED: "excluded by the user (--exclude-op)",
        NO_CONVERTER: "no ONNX converter in mxnet.onnx",
        EXPORT_FAILED: "mxnet.onnx failed to export it",
        EXPORT_UNFAITHFUL: "mxnet.onnx's ONNX for it would compute something else",
        PARSER_REJECTED: "TensorRT's ONNX parser rejected it",
        BUILD_FAILED: "the TensorRT build of its segment failed",
        BELOW_MIN_SIZE: "its engine segment was below the minimum size",
    }


@dataclass
class Decision:
    """Why one MXNet op node stays in MXNet."""

    node: str
    op: str
    reason: str
    message: str = ""


@dataclass
class Segment:
    """A cycle-free group of op nodes that runs as one stage."""

    kind: str  # 'engine' | 'residual'
    nodes: List[int]  # op node indices, topologically ordered
    inputs: List[str] = field(default_factory=list)  # tensors consumed from outside
    outputs: List[str] = field(default_factory=list)  # tensors used outside or model outputs
    params: List[str] = field(default_factory=list)  # param keys its nodes use
    name: str = ""

    @property
    def key(self) -> Tuple[Tuple[int, ...], Tuple[str, ...]]:
        return tuple(self.nodes), tuple(self.outputs)


_EXPORTABLE_CACHE: Optional[Set[str]] = None


def exportable_ops() -> Optional[Set[str]]:
    """Op names mxnet.onnx has a converter for (any opset), or None if that cannot be read."""
    global _EXPORTABLE_CACHE
    if _EXPORTABLE_CACHE is None:
        try:
            import mxnet.onnx  # noqa: F401  registers the converters
            from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph

            _EXPORTABLE_CACHE = {op for table in MXNetGraph.registry_.values() for op in table}
        except Exception:  # a different MXNet layout: fall back to trying the export
            return None
    return _EXPORTABLE_CACHE


def initial_decisions(graph: Graph, exclude_ops: Iterable[str]) -> Dict[int, Decision]:
    """Decisions that need no parser: user exclusions and ops without an ONNX converter."""
    excluded = set(exclude_ops)
    converters = exportable_ops()
    decisions: Dict[int, Decision] = {}
    for node in graph.op_nodes:
        if node.op in excluded:
            decisions[node.index] = Decision(node.name, node.op, Reason.EXCLUDED,
                                             f"--exclude-op {node.op}")
        elif converters is not None and node.op not in converters:
            detail = f" (op_type={node.attrs['op_type']})" if node.op == "Custom" and "op_type" in node.attrs else ""
            decisions[node.index] = Decision(node.name, node.op, Reason.NO_CONVERTER,
                                             f"mxnet.onnx has no converter for {node.op}{detail}")
    return decisions


# ----------------------------------------------------------------------------------------------
# Cycle-free segmentation
# ----------------------------------------------------------------------------------------------
def _cluster(graph: Graph, label: Mapping[int, str]) -> List[List[int]]:
    """Group op nodes of equal label into clusters such that no path leaves a cluster and returns.

    Greedy in topological order: a node joins the cluster of one of its same-label producers when
    no producer outside that cluster is reachable from it (``reach[p]``: the clusters from which
    node p can be reached). Then clusters of equal label are merged pairwise while the cluster
    graph stays acyclic.
    """
    ops = graph.op_nodes
    cluster_of: Dict[int, int] = {}
    members: List[List[int]] = []
    cluster_label: List[str] = []
    reach: Dict[int, int] = {}  # node -> bitset of clusters that reach it
    for node in ops:
        preds = sorted({src for src, _ in node.inputs if graph.nodes[src].is_op})
        reach_v = 0
        for p in preds:
            reach_v |= reach[p] | (1 << cluster_of[p])
        chosen = None
        for p in preds:
            c = cluster_of[p]
            if cluster_label[c] != label[node.index] or (chosen is not None):
                continue
            bit = 1 << c
            if all(cluster_of[q] == c or not (reach[q] & bit) for q in preds):
                chosen = c
        if chosen is None:
            chosen = len(members)
            members.append([])
            cluster_label.append(label[node.index])
        members[chosen].append(node.index)
        cluster_of[node.index] = chosen
        reach[node.index] = reach_v
    return _merge_clusters(graph, members, cluster_label, cluster_of)


def _merge_clusters(graph: Graph, members: List[List[int]], labels: List[str],
                    cluster_of: Dict[int, int]) -> List[List[int]]:
    """Merge same-label clusters while the cluster graph stays acyclic."""
    alive = list(range(len(members)))
    sets = [list(m) for m in members]
    owner = dict(cluster_of)

    def edges() -> Dict[int, Set[int]]:
        out: Dict[int, Set[int]] = {c: set() for c in alive}
        for node in graph.op_nodes:
            dst = owner[node.index]
            for src, _ in node.inputs:
                if graph.nodes[src].is_op and owner[src] != dst:
                    out[owner[src]].add(dst)
        return out

    def reaches(out: Dict[int, Set[int]], start: int, goal: int, skip_direct: bool) -> bool:
        # Is `goal` reachable from `start` through at least one other cluster?
        stack = [n for n in out[start] if n != goal] if skip_direct else list(out[start])
        seen = set(stack)
        while stack:
            c = stack.pop()
            if c == goal:
                return True
            for n in out[c]:
                if n not in seen:
                    seen.add(n)
                    stack.append(n)
        return False

    merged = True
    while merged:
        merged = False
        out = edges()
        for i, a in enumerate(alive):
            for b in alive[i + 1:]:
                if labels[a] != labels[b]:
                    continue
                if reaches(out, a, b, True) or reaches(out, b, a, True):
                    continue
                for n in sets[b]:
                    owner[n] = a
                sets[a] = sorted(sets[a] + sets[b])
                alive.remove(b)
                merged = True
                break
            if merged:
                break
    return [sets[c] for c in alive]


def _topo_order(graph: Graph, clusters: List[List[int]]) -> List[List[int]]:
    owner = {n: i for i, c in enumerate(clusters) for n in c}
    deps: Dict[int, Set[int]] = {i: set() for i in range(len(clusters))}
    for node in graph.op_nodes:
        for src, _ in node.inputs:
            if graph.nodes[src].is_op and owner[src] != owner[node.index]:
                deps[owner[node.index]].add(owner[src])
    order: List[int] = []
    done: Set[int] = set()
    while len(order) < len(clusters):
        ready = [i for i in range(len(clusters)) if i not in done and deps[i] <= done]
        if not ready:  # cannot happen for acyclic clusters
            raise RuntimeError("internal error: cycle between segments")
        first = min(ready, key=lambda i: clusters[i][0])
        order.append(first)
        done.add(first)
    return [clusters[i] for i in order]


def segment_graph(graph: Graph, decisions: Mapping[int, Decision],
                  min_segment_size: int) -> Tuple[List[Segment], Dict[int, Decision]]:
    """Cut the graph into ordered engine and residual segments.

    Args:
        graph: the model.
        decisions: op nodes that must stay in MXNet (index -> Decision).
        min_segment_size: engine segments with fewer ops stay in MXNet.

    Returns:
        The segments in execution order, and the decisions including the ones added for
        segments below the minimum size.
    """
    decisions = dict(decisions)
    while True:
        label = {n.index: ("residual" if n.index in decisions else "engine") for n in graph.op_nodes}
        clusters = _cluster(graph, label)
        small = [c for c in clusters if label[c[0]] == "engine" and len(c) < min_segment_size]
        if not small:
            break
        for cluster in small:
            for idx in cluster:
                node = graph.nodes[idx]
                decisions[idx] = Decision(node.name, node.op, Reason.BELOW_MIN_SIZE,
                                          f"segment of {len(cluster)} op(s) < --min-segment-size "
                                          f"{min_segment_size}")
    ordered = _topo_order(graph, clusters)
    segments = [describe_nodes(graph, nodes, label[nodes[0]]) for nodes in ordered]
    counts = Counter()
    for seg in segments:
        seg.name = f"{'engine' if seg.kind == 'engine' else 'residual'}{counts[seg.kind]}"
        counts[seg.kind] += 1
    return segments, decisions


def describe_nodes(graph: Graph, nodes: List[int], kind: str) -> Segment:
    """A Segment for ``nodes``: the tensors it reads from outside, the params it uses, and the
    tensors it produces that are used outside or are model outputs."""
    inside = set(nodes)
    consumers = graph.consumers()
    heads = set(graph.heads)
    inputs: List[str] = []
    params: List[str] = []
    outputs: List[str] = []
    for idx in nodes:
        for src, out in graph.nodes[idx].inputs:
            producer = graph.nodes[src]
            if producer.is_op and src in inside:
                continue
            if not producer.is_op and producer.param_key is not None:
                if producer.param_key not in params:
                    params.append(producer.param_key)
                continue
            name = graph.tensor((src, out))
            if name not in inputs:
                inputs.append(name)
    for idx in nodes:
        node = graph.nodes[idx]
        used_outside = {c for c in consumers[idx] if c not in inside}
        for out, name in enumerate(node.outputs):
            external = (idx, out) in heads or any(
                (idx, out) in graph.nodes[c].inputs for c in used_outside)
            if external and name not in outputs:
                outputs.append(name)
    return Segment(kind=kind, nodes=list(nodes), inputs=inputs, outputs=outputs, params=params)


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
@dataclass
class PartitionReport:
    """What went where, and why. Printed by default; ``to_json()`` for pipelines."""

    total_ops: int
    segments: List[Segment]
    decisions: List[Decision]
    built: bool = True

    @property
    def engine_segments(self) -> List[Segment]:
        return [s for s in self.segments if s.kind == "engine"]

    @property
    def engine_ops(self) -> int:
        return sum(len(s.nodes) for s in self.engine_segments)

    @property
    def residual_ops(self) -> int:
        return self.total_ops - self.engine_ops

    @property
    def full(self) -> bool:
        return self.residual_ops == 0

    def to_json(self) -> Dict[str, Any]:
        return {
            "total_ops": self.total_ops,
            "engine_ops": self.engine_ops,
            "residual_ops": self.residual_ops,
            "engine_segments": len(self.engine_segments),
            "residual_segments": len(self.segments) - len(self.engine_segments),
            "segments": [{"name": s.name, "kind": s.kind, "ops": len(s.nodes),
                          "inputs": s.inputs, "outputs": s.outputs} for s in self.segments],
            "residual": [asdict(d) for d in self.decisions],
        }

    def to_text(self) -> str:
        lines = [f"partition: {self.engine_ops}/{self.total_ops} MXNet ops in "
                 f"{len(self.engine_segments)} TensorRT engine(s), {self.residual_ops} in MXNet"]
        for seg in self.segments:
            lines.append(f"  {seg.name:<12} {seg.kind:<8} {len(seg.nodes):>5} ops  "
                         f"in: {_short_list(seg.inputs)}  out: {_short_list(seg.outputs)}")
        if self.decisions:
            lines.append(f"ops kept in MXNet ({len(self.decisions)}):")
            by_reason: Dict[str, List[Decision]] = {}
            for d in self.decisions:
                by_reason.setdefault(d.reason, []).append(d)
            for reason, items in by_reason.items():
                lines.append(f"  {Reason.TEXT.get(reason, reason)} [{reason}]:")
                for d in items:
                    lines.append(f"    {d.node} ({d.op}): {d.message}")
        return "\n".join(lines)


def _short_list(names: Sequence[str], limit: int = 3) -> str:
    if len(names) <= limit:
        return ", ".join(names) or "-"
    return ", ".join(names[:limit]) + f", ... ({len(names)})"
