"""Partitioning: which MXNet ops go into TensorRT engines, which stay in MXNet, and why.

The final word on support is TensorRT's own ONNX parser (and builder): `compiler.py` exports each
candidate segment, parses and builds it, and feeds every rejection back here as a ``Decision``.
This module owns the pure parts: the per-op decisions that need no parser (user exclusions, ops
mxnet.onnx cannot export), cycle-free segmentation, the minimum segment size, and the report.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from .frontend import Graph
from .segments import Segment, describe_nodes
from .memory import note

__all__ = [
    "PartitionResult",
    "partition_and_build",
    "parser_text",
    "Reason",
    "Decision",
    "Segment",
    "PartitionReport",
    "initial_decisions",
    "segment_graph",
    "renumber_segments",
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
    RANDOM = "random_op"                   # draws random numbers: only MXNet matches MXNet

    # Reasons that leave an exact ONNX of the op (mxnet.onnx's or trtc's own converter): such an
    # op can run in an ONNX Runtime stage. The others have none, so the op runs in MXNet.
    HAS_ONNX = frozenset((EXCLUDED, PARSER_REJECTED, BUILD_FAILED, BELOW_MIN_SIZE))

    TEXT = {
        EXCLUDED: "excluded by the user (--exclude-op)",
        NO_CONVERTER: "no ONNX converter in mxnet.onnx",
        EXPORT_FAILED: "mxnet.onnx failed to export it",
        EXPORT_UNFAITHFUL: "mxnet.onnx's ONNX for it would compute something else",
        PARSER_REJECTED: "TensorRT's ONNX parser rejected it",
        BUILD_FAILED: "the TensorRT build of its segment failed",
        BELOW_MIN_SIZE: "its engine segment was below the minimum size",
        RANDOM: "a random op (engines and ONNX Runtime stages take none: their draws differ)",
    }


@dataclass
class Decision:
    """Why one MXNet op node stays out of TensorRT engines, and where it runs instead."""

    node: str
    op: str
    reason: str
    message: str = ""
    runs_in: str = "mxnet"  # 'onnxruntime' (an ONNX stage) | 'mxnet' (a residual MXNet stage)
    mxnet_reason: str = ""  # runs_in == 'mxnet': why not ONNX Runtime


# Segment.kind -> what runs it, as reports say it.
EXECUTOR_TEXT = {"engine": "TensorRT", "onnx": "ONNX Runtime", "residual": "MXNet"}


_EXPORTABLE_CACHE: Optional[Set[str]] = None


def exportable_ops() -> Optional[Set[str]]:
    """Op names mxnet.onnx has a converter for (any opset), trtc's own (trtc/converters.py)
    included, or None if that cannot be read."""
    global _EXPORTABLE_CACHE
    if _EXPORTABLE_CACHE is None:
        try:
            from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph

            from .converters import register
            register()  # mxnet.onnx's converters, then trtc's over them

            _EXPORTABLE_CACHE = {op for table in MXNetGraph.registry_.values() for op in table}
        except Exception:  # a different MXNet layout: fall back to trying the export
            return None
    return _EXPORTABLE_CACHE


# MXNet's random samplers (_random_uniform, _sample_multinomial, random_normal, _npi_...):
# ONNX's RandomUniform/Multinomial draw other numbers, so the gate could never pass them, and the
# runtime refuses those ONNX ops (unbounded work from an attribute).
_RANDOM_OP = re.compile(r"^(_npi_|_np_)?_?(random|sample)_|^(_npi_)?(multinomial|shuffle)$|"
                        r"^_?shuffle$|^_sample_unique_zipfian$")


def is_random_op(op: str) -> bool:
    """Does MXNet op ``op`` draw random numbers?"""
    return _RANDOM_OP.search(op) is not None


def initial_decisions(graph: Graph, exclude_ops: Iterable[str]) -> Dict[int, Decision]:
    """Decisions that need no parser: user exclusions and ops without an ONNX converter."""
    excluded = set(exclude_ops)
    converters = exportable_ops()
    decisions: Dict[int, Decision] = {}
    for node in graph.op_nodes:
        if is_random_op(node.op):
            decisions[node.index] = Decision(node.name, node.op, Reason.RANDOM,
                                             f"{node.op} draws random numbers")
        elif node.op in excluded:
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


def segment_graph(graph: Graph, decisions: Mapping[int, Decision], min_segment_size: int,
                  onnx_ok: Optional[Callable[[int, Decision], bool]] = None
                  ) -> Tuple[List[Segment], Dict[int, Decision]]:
    """Cut the graph into ordered engine, ONNX Runtime and MXNet segments.

    Args:
        graph: the model.
        decisions: op nodes that stay out of engines (index -> Decision).
        min_segment_size: engine segments with fewer ops stay out of engines.
        onnx_ok: which of those ops may run in an ONNX Runtime stage ('onnx' segments); the
            rest run in MXNet ('residual' segments). None: all of them run in MXNet.

    Returns:
        The segments in execution order, and the decisions including the ones added for
        segments below the minimum size.
    """
    decisions = dict(decisions)

    def out_of_engines(idx: int) -> str:
        return "onnx" if onnx_ok is not None and onnx_ok(idx, decisions[idx]) else "residual"

    while True:
        label = {n.index: (out_of_engines(n.index) if n.index in decisions else "engine")
                 for n in graph.op_nodes}
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
    renumber_segments(segments)
    for seg in segments:
        for idx in seg.nodes:
            if idx in decisions:
                decisions[idx].runs_in = "onnxruntime" if seg.kind == "onnx" else "mxnet"
    return segments, decisions


def renumber_segments(segments: Sequence[Segment]) -> None:
    """Name segments by kind and order: engine0, engine1, onnx0, residual0, ..."""
    counts: Counter = Counter()
    for seg in segments:
        seg.name = f"{seg.kind}{counts[seg.kind]}"
        counts[seg.kind] += 1


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
    # decisions made on the user's behalf before partitioning (folded constants, renamed nodes)
    folded: Dict[str, int] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    fp32_layers: Dict[str, str] = field(default_factory=dict)  # fp16: MXNet node -> why fp32
    engine_kind: str = "TensorRT engine"  # "ONNX Runtime stage" for --target cpu (no TensorRT)

    @property
    def engine_segments(self) -> List[Segment]:
        return [s for s in self.segments if s.kind == "engine"]

    def ops_in(self, kind: str) -> int:
        """MXNet ops in segments of ``kind`` ('engine', 'onnx', 'residual')."""
        return sum(len(s.nodes) for s in self.segments if s.kind == kind)

    def stages_of(self, kind: str) -> int:
        return sum(1 for s in self.segments if s.kind == kind)

    @property
    def engine_ops(self) -> int:
        return self.ops_in("engine")

    @property
    def residual_ops(self) -> int:
        """Ops outside engines (in ONNX Runtime or MXNet stages)."""
        return self.total_ops - self.engine_ops

    @property
    def mxnet_ops(self) -> int:
        """Ops that run in MXNet stages (the bundle then needs MXNet at run time)."""
        return self.ops_in("residual")

    @property
    def full(self) -> bool:
        return self.residual_ops == 0

    @property
    def mxnet_decisions(self) -> List[Decision]:
        return [d for d in self.decisions if d.runs_in == "mxnet"]

    def to_json(self) -> Dict[str, Any]:
        return {
            "total_ops": self.total_ops,
            "engine_ops": self.engine_ops,
            "residual_ops": self.residual_ops,
            "onnxruntime_ops": self.ops_in("onnx"),
            "mxnet_ops": self.mxnet_ops,
            "engine_segments": len(self.engine_segments),
            "residual_segments": len(self.segments) - len(self.engine_segments),
            "onnxruntime_segments": self.stages_of("onnx"),
            "mxnet_segments": self.stages_of("residual"),
            "segments": [{"name": s.name, "kind": s.kind, "executor": EXECUTOR_TEXT[s.kind],
                          "ops": len(s.nodes), "inputs": s.inputs, "outputs": s.outputs}
                         for s in self.segments],
            "residual": [asdict(d) for d in self.decisions],
            "folded_ops": dict(self.folded),
            "notes": list(self.notes),
            "fp32_layers": dict(self.fp32_layers),
        }

    def __str__(self) -> str:
        return self.to_text()

    def to_text(self) -> str:
        ort, mx = self.stages_of("onnx"), self.stages_of("residual")
        lines = [f"partition: {self.engine_ops}/{self.total_ops} MXNet ops in "
                 f"{len(self.engine_segments)} {self.engine_kind}(s); "
                 f"{self.ops_in('onnx')} in {ort} ONNX Runtime stage(s), "
                 f"{self.mxnet_ops} in {mx} MXNet stage(s)"]
        if self.folded:
            lines.append(f"  folded at compile time (weights only, stored as constants): "
                         f"{sum(self.folded.values())} ops ("
                         + ", ".join(f"{op} x{n}" for op, n in self.folded.items()) + ")")
        for note in self.notes:
            lines.append(f"  note: {note}")
        for seg in self.segments:
            lines.append(f"  {seg.name:<12} {EXECUTOR_TEXT[seg.kind]:<12} {len(seg.nodes):>5} ops  "
                         f"in: {_short_list(seg.inputs)}  out: {_short_list(seg.outputs)}")
        if self.fp32_layers:
            lines.append(f"layers kept in fp32 inside fp16 engines ({len(self.fp32_layers)}):")
            for name, why in self.fp32_layers.items():
                lines.append(f"    {name}: {why}")
        if self.decisions:
            on_ort = len(self.decisions) - len(self.mxnet_decisions)
            lines.append(f"ops kept out of engines ({len(self.decisions)}: "
                         f"{on_ort} run in ONNX Runtime, {len(self.mxnet_decisions)} in MXNet):")
            by_reason: Dict[str, List[Decision]] = {}
            for d in self.decisions:
                by_reason.setdefault(d.reason, []).append(d)
            for reason, items in by_reason.items():
                lines.append(f"  {Reason.TEXT.get(reason, reason)} [{reason}]:")
                for d in items:
                    where = ("ONNX Runtime" if d.runs_in == "onnxruntime"
                             else "MXNet" + (f" ({d.mxnet_reason})" if d.mxnet_reason else ""))
                    lines.append(f"    {d.node} ({d.op}): {d.message} -> {where}")
        return "\n".join(lines)


def _short_list(names: Sequence[str], limit: int = 3) -> str:
    if len(names) <= limit:
        return ", ".join(names) or "-"
    return ", ".join(names[:limit]) + f", ... ({len(names)})"


# ----------------------------------------------------------------------------------------------
# The partition <-> export <-> parser/builder loop
# ----------------------------------------------------------------------------------------------
@dataclass
class PartitionResult:
    """What the loop settled on: segments, every op kept out of engines with its reason (and
    where it runs), each engine segment's ONNX (accepted by the parser) and, unless a dry run,
    its built engine, and each ONNX Runtime segment's ONNX."""

    segments: List[Segment]
    decisions: Dict[int, Decision]
    exported: Dict[Any, Any]  # Segment.key -> export.ExportedSegment
    built: Dict[Any, Any]  # Segment.key -> backends.BuiltEngine
    rounds: int = 0
    fp32_layers: Dict[str, str] = field(default_factory=dict)  # fp16 engines: MXNet node -> why fp32


class _Loop:
    """State of one partitioning run. Each round re-segments with the decisions so far, exports
    what is new (one mxnet.onnx export of every engine candidate, cut per segment), parses the
    cuts and builds the engines; every rejection moves the exact MXNet ops responsible to MXNet
    and starts a new round. Bounded by ``max_rounds`` and ``time_limit`` (CompileError)."""

    MAX_PRECISION_ROUNDS = 6  # fp16: rounds of keeping layers in fp32, per engine

    def __init__(self, graph: Graph, settings: Any, backend: Any, timer: Any, say: Any,
                 max_rounds: int, time_limit: float,
                 calibration: Optional[List[Dict[str, Any]]] = None):
        import time

        self.graph, self.settings, self.backend, self.timer, self.say = graph, settings, backend, timer, say
        self.by_name = {n.name: n.index for n in graph.nodes}
        self.decisions: Dict[int, Decision] = initial_decisions(graph, settings.exclude_ops)
        # ops out of engines that cannot run in ONNX Runtime: index -> why (they run in MXNet)
        self.no_onnx: Dict[int, str] = {}
        self.residual = getattr(settings, "residual", "onnxruntime")
        self.exported: Dict[Any, Any] = {}
        self.built: Dict[Any, Any] = {}
        self.whole: Any = None
        self.max_rounds, self.time_limit = max_rounds, time_limit
        self.deadline = time.monotonic() + time_limit
        self.rounds = 0
        self.fp32_layers: Dict[str, str] = {}
        self.forced_fp32: Set[str] = set()
        if settings.fp16 and getattr(settings, "keep_fp32", ()):
            from .precision import resolve_keep_fp32

            self.forced_fp32, unknown = resolve_keep_fp32(graph, settings.keep_fp32)
            if unknown:
                from .runtime.errors import UsageError

                raise UsageError(f"--keep-fp32 {unknown[0]}: the model has no op type or node of that "
                                 "name (op types: " + ", ".join(sorted({n.op for n in graph.op_nodes}))[:300] + ")")
        self._reference: Optional[Dict[str, Any]] = None
        self.calibration = calibration or []
        self._calibrated: List[Dict[str, Any]] = [dict(c) for c in self.calibration]

    # -- bookkeeping ----------------------------------------------------------------------------
    def reject(self, idx: int, reason: str, message: str) -> None:
        node = self.graph.nodes[idx]
        self.decisions[idx] = Decision(node.name, node.op, reason, message[:300])

    def moved(self, idxs: Sequence[int], why: str, where: str = "out of engines") -> None:
        names = [self.graph.nodes[i].name for i in idxs]
        ops = Counter(self.graph.nodes[i].op for i in idxs)
        self.say(f"  round {self.rounds}: {len(idxs)} op(s) {where} ({why}): "
                 + ", ".join(f"{op} x{n}" if n > 1 else op for op, n in ops.most_common(4))
                 + (f" [{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}]"))

    def next_round(self) -> None:
        import time

        from .runtime.errors import CompileError

        self.rounds += 1
        if self.rounds > self.max_rounds or time.monotonic() > self.deadline:
            why = (f"{self.max_rounds} rounds" if self.rounds > self.max_rounds
                   else f"{self.time_limit:.0f} s")
            raise CompileError(f"partitioning did not settle within {why} ({len(self.decisions)} "
                               "ops moved to MXNet so far); keep the op types named in the progress "
                               "lines in MXNet with --exclude-op, or report this model")

    # -- export ---------------------------------------------------------------------------------
    def export_candidates(self, engines: List[Segment]) -> bool:
        """One export of every engine candidate. False when ops were moved to MXNet instead."""
        from .export import ExportError, export_nodes

        candidates = sorted(i for s in engines for i in s.nodes)
        self.say(f"exporting {len(candidates)} ops to ONNX (mxnet.onnx)")
        try:
            with self.timer.span("export"):
                if self.whole is not None:
                    self.whole.close()
                    self.whole = None
                self.whole = export_nodes(self.graph, candidates)
            note("exporting to ONNX")
        except ExportError as exc:
            self.export_failed(exc, candidates, Reason.EXPORT_FAILED)
            return False
        candidate_set = set(candidates)
        unfaithful = {self.by_name[n]: text for n, text in self.whole.unfaithful.items()
                      if self.by_name.get(n) in candidate_set}
        for idx, text in unfaithful.items():
            self.reject(idx, Reason.EXPORT_UNFAITHFUL, f"mxnet.onnx says its ONNX differs from MXNet: {text}")
        if unfaithful:
            self.moved(list(unfaithful), "mxnet.onnx warns its ONNX computes something else")
            return False
        return True

    def export_failed(self, exc: Any, nodes: Sequence[int], reason: str) -> None:
        """Send the MXNet ops an export error is about to MXNet: the nodes it names (the converter
        that raised; every node ONNX's checker refused), else the op found by bisection."""
        inside = set(nodes)
        named = {self.by_name[n]: msg for n, msg in exc.nodes.items()
                 if self.by_name.get(n) in inside}
        if not named:
            culprit = self.bisect_export(list(nodes))
            named = {culprit: f"{exc} (found by exporting parts of the segment)"}
        for idx, msg in named.items():
            self.reject(idx, Reason.EXPORT_UNFAITHFUL if exc.unfaithful else reason, msg)
        self.moved(list(named), "mxnet.onnx cannot export it" if not exc.unfaithful
                   else "mxnet.onnx warns its ONNX computes something else")

    def bisect_export(self, nodes: List[int]) -> int:
        """The op whose export fails, when the error named none: export halves (topological
        order) and keep the failing one; log2(n) exports of shrinking size."""
        from .export import ExportError, export_nodes

        self.say(f"  the export error names no op: bisecting {len(nodes)} ops")
        while len(nodes) > 1:
            half = len(nodes) // 2
            failing = None
            for part in (nodes[:half], nodes[half:]):
                try:
                    with self.timer.span("export"):
                        export_nodes(self.graph, part).close()
                except ExportError as exc:
                    named = [self.by_name[n] for n in exc.nodes if self.by_name.get(n) in set(part)]
                    if named:
                        return named[0]
                    failing = part
                    break
            if failing is None:
                return nodes[half]  # each half exports alone: the failure is at the seam
            nodes = failing
        return nodes[0]

    def segment_onnx(self, seg: Segment) -> Any:
        """The segment's ONNX (cut out of the whole export, else exported alone), accepted by
        TensorRT's parser; None when ops of it were sent to MXNet instead."""
        from .export import ExportError, cut_segment, onnx_from_segment

        whole, fp16 = self.whole, self.settings.fp16
        try:
            if whole is not None and whole.has_light:
                # after a first rejection: parse cuts that reference the weights (cheap)
                with self.timer.span("export"):
                    light = cut_segment(whole, self.graph, seg, light=True)
                if light is not None:
                    with self.timer.span("partition"):
                        parsed = self.backend.parse(light.onnx_bytes, whole.model_path)
                    if not parsed.ok:
                        self.parser_rejected(seg, light, parsed)
                        return None
            with self.timer.span("export"):
                exp = self.export_cut(seg, fp16, self.kept_in(seg, self.forced_fp32))
        except ExportError as exc:
            self.export_failed(exc, seg.nodes, Reason.EXPORT_FAILED)
            return None
        if self.backend is None:  # --target cpu: ONNX Runtime runs what mxnet.onnx exports
            return exp
        with self.timer.span("partition"):
            parsed = self.backend.parse(exp.onnx_bytes)
        if not parsed.ok:
            self.parser_rejected(seg, exp, parsed)
            if whole is not None:
                with self.timer.span("export"):
                    whole.make_light()  # more rounds ahead: stop copying weights
            return None
        return exp

    def kept_in(self, seg: Segment, names: Set[str]) -> List[str]:
        return sorted(self.graph.nodes[i].name for i in seg.nodes if self.graph.nodes[i].name in names)

    def export_cut(self, seg: Segment, fp16: bool, keep_fp32: Sequence[str] = ()) -> Any:
        """The segment's ONNX cut out of the whole export (else exported alone)."""
        from .export import cut_segment, onnx_from_segment

        exp = (cut_segment(self.whole, self.graph, seg, fp16, keep_fp32=keep_fp32)
               if self.whole is not None else None)
        if exp is None:
            self.say(f"exporting {seg.name} ({len(seg.nodes)} ops) to ONNX")
            exp = onnx_from_segment(self.graph, seg, fp16=fp16, keep_fp32=keep_fp32)
        return exp

    # -- fp16: layers that must stay fp32 --------------------------------------------------------
    def reference(self) -> Dict[str, Any]:
        """MXNet's values of every tensor, on the gate's first input (computed once)."""
        if self._reference is None:
            from .verify import gate_inputs, load_verify_inputs, mxnet_forward

            if getattr(self.settings, "verify_inputs", None) is not None:
                feeds = load_verify_inputs(self.graph, self.settings.verify_inputs)[0]
            else:
                feeds = gate_inputs(self.graph, self.settings.seed)[0]
            names = sorted({t for n in self.graph.op_nodes for t in n.outputs})
            values = mxnet_forward(self.graph, feeds, names)
            values.update(feeds)
            self._reference = values
        return self._reference

    def settle_fp16(self, seg: Segment) -> None:
        """Keep the layers of an fp16 segment that overflow or lose too much in fp32
        (trtc/precision.py), a bounded number of rounds; the last export is what gets built."""
        from .precision import judge_fp16

        kept = set(self.kept_in(seg, self.forced_fp32))
        reasons = {name: "--keep-fp32" for name in kept}
        reference = self.reference()
        feeds = {t: reference[t] for t in seg.inputs}
        tolerance = self.settings.effective_tolerance
        exp = self.exported[seg.key]
        with self.timer.span("precision"):
            fp32 = self.export_cut(seg, False)
            for round_ in range(self.MAX_PRECISION_ROUNDS + 1):
                verdict = judge_fp16(fp32.model, exp.model, feeds, reference, seg.outputs,
                                     tolerance, kept, gradual=2 ** round_)
                if verdict.ok or not verdict.keep:
                    break
                if round_ == self.MAX_PRECISION_ROUNDS:  # judged, not changed: the gate decides
                    self.say(f"  {seg.name}: fp16 still {verdict.error:.3g} off after "
                             f"{round_} round(s) of keeping layers in fp32 (tolerance "
                             f"{tolerance:g})")
                    break
                kept |= set(verdict.keep)
                reasons.update(verdict.keep)
                first = next(iter(verdict.keep.items()))
                self.say(f"  {seg.name}: {len(verdict.keep)} layer(s) kept in fp32 "
                         f"({first[0]}: {first[1]}" + (", ..." if len(verdict.keep) > 1 else "") + ")")
                exp = self.export_cut(seg, True, sorted(kept))
        self.exported[seg.key] = exp
        self.fp32_layers.update({k: v for k, v in reasons.items() if k in kept})
        for name, why in exp.required_fp32.items():
            self.fp32_layers.setdefault(name, why)

    # -- int8 ---------------------------------------------------------------------------------
    def quantize(self, seg: Segment) -> None:
        """Replace the segment's fp32 ONNX by its Q/DQ int8 version (trtc/quantize.py),
        calibrated on MXNet's values of the segment's inputs for every calibration sample."""
        from .export import segment_from_model
        from .quantize import int8_layers, quantize_segment
        from .verify import mxnet_forward

        if not self.calibration:
            return
        missing = [t for t in seg.inputs if t not in self._calibrated[0]]
        with self.timer.span("calibrate"):
            if missing:
                for sample, values in zip(self.calibration, self._calibrated):
                    values.update(mxnet_forward(self.graph, sample, missing))
            feeds = [{t: values[t] for t in seg.inputs} for values in self._calibrated]
            model = quantize_segment(self.exported[seg.key].model, feeds,
                                     self.settings.calibration_method)
        exp = segment_from_model(model)
        exp.int8_layers = int8_layers(model)
        self.say(f"  {seg.name}: {len(exp.int8_layers)} layer(s) quantized to int8 "
                 f"({self.settings.calibration_method}, {len(feeds)} calibration sample(s))")
        self.exported[seg.key] = exp

    def parser_rejected(self, seg: Segment, exp: Any, parsed: Any) -> None:
        """Keep the MXNet ops whose ONNX nodes the parser rejected in MXNet, with its message."""
        rejected: Dict[int, str] = {}
        members = set(seg.nodes)
        for issue in parsed.issues:
            mx_name = ""
            if 0 <= issue.node_index < len(exp.node_origin):
                mx_name = exp.node_origin[issue.node_index]
            if not mx_name and "#" in issue.node_name:
                mx_name = issue.node_name.rsplit("#", 1)[0]
            idx = self.by_name.get(mx_name)
            if idx is not None and idx in members:
                rejected.setdefault(idx, f"ONNX {issue.op}: {parser_text(issue.message)}")
        if not rejected:  # the parser named no node: split the segment in the middle
            msg = "; ".join(i.message for i in parsed.issues)[:300] or "parse failed"
            rejected = {seg.nodes[len(seg.nodes) // 2]: f"{msg} (the parser named no node; "
                                                          "the segment was split here)"}
        for idx, msg in rejected.items():
            self.reject(idx, Reason.PARSER_REJECTED, msg)
        self.moved(list(rejected), "TensorRT's parser rejects it")

    # -- build ----------------------------------------------------------------------------------
    def prepare(self, seg: Segment) -> None:
        """The segment's final ONNX: fp16 with its fp32 layers settled, or int8 Q/DQ."""
        if self.settings.fp16 and not getattr(self.exported[seg.key], "settled", False):
            self.settle_fp16(seg)
            self.exported[seg.key].settled = True
        if getattr(self.settings, "int8", False) and not self.exported[seg.key].int8_layers:
            self.quantize(seg)

    def build(self, seg: Segment) -> bool:
        import re

        from .backends import BuildError

        self.prepare(seg)
        self.say(f"building {seg.name} ({len(seg.nodes)} ops, {self.settings.precision}) "
                 f"with {self.backend.name}")
        try:
            with self.timer.span("build"):
                profile = ({t: self.graph.shape_range(t) for t in seg.inputs
                            if self.graph.dynamic_axes(t)} if self.graph.is_dynamic else None)
                self.built[seg.key] = self.backend.build(self.exported[seg.key].onnx_bytes,
                                                         self.settings.compute_capabilities,
                                                         profile=profile)
            return True
        except BuildError as exc:
            names = {name for line in exc.log for name in re.findall(r"([\w./:\-]+)#\d+", line)}
            idxs = [self.by_name[n] for n in names if n in self.by_name and self.by_name[n] in seg.nodes]
            note = ""
            if not idxs:
                idxs = [seg.nodes[len(seg.nodes) // 2]]
                note = " (the builder named no node; the segment was split here)"
            for idx in idxs:
                self.reject(idx, Reason.BUILD_FAILED, str(exc)[:250] + note)
            self.moved(idxs, f"the build failed: {str(exc)[:100]}")
            return False

    # -- ONNX Runtime stages ----------------------------------------------------------------------
    def onnx_ok(self, idx: int, decision: Decision) -> bool:
        """May an op kept out of engines run in an ONNX Runtime stage? Only with an exact ONNX
        (its reason leaves one) that has not failed to export on its own."""
        if self.residual != "onnxruntime" or idx in self.no_onnx:
            decision.mxnet_reason = (self.no_onnx.get(idx, "") if self.residual == "onnxruntime"
                                     else "--residual mxnet")
            return False
        if decision.reason not in Reason.HAS_ONNX:
            decision.mxnet_reason = "no exact ONNX for it"
            return False
        decision.mxnet_reason = ""
        return True

    def export_onnx_stage(self, seg: Segment) -> bool:
        """Export an ONNX Runtime stage (fp32, exported alone: its ops were never part of the
        engine candidates). False when ops of it could not be exported and now run in MXNet."""
        from .export import ExportError, onnx_from_segment

        self.say(f"exporting {seg.name} ({len(seg.nodes)} ops) to ONNX for ONNX Runtime")
        try:
            with self.timer.span("export"):
                self.exported[seg.key] = onnx_from_segment(self.graph, seg, fp16=False)
            return True
        except ExportError as exc:
            inside = set(seg.nodes)
            named = {self.by_name[n]: msg for n, msg in exc.nodes.items()
                     if self.by_name.get(n) in inside}
            if not named:
                named = {self.bisect_export(list(seg.nodes)): str(exc)}
            for idx, msg in named.items():
                self.no_onnx[idx] = f"its ONNX export failed: {msg}"[:300]
            self.moved(list(named), "its ONNX export failed", where="to MXNet")
            return False

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> PartitionResult:
        min_size = self.settings.min_segment_size
        try:
            while True:
                self.next_round()
                with self.timer.span("partition"):
                    segments, all_decisions = segment_graph(self.graph, self.decisions, min_size,
                                                            self.onnx_ok)
                engines = [s for s in segments if s.kind == "engine"]
                pending = [s for s in engines if s.key not in self.exported]
                if pending and (self.whole is None or not all(self.whole.covers(s) for s in pending)):
                    if not self.export_candidates(engines):
                        continue
                changed = False
                for seg in pending:
                    exp = self.segment_onnx(seg)
                    if exp is None:
                        changed = True
                    else:
                        self.exported[seg.key] = exp
                    note(f"cutting and parsing {seg.name}")
                if changed:
                    continue
                if getattr(self.settings, "require_full", False) and all_decisions:
                    # --require-full has failed already: build nothing (the compiler says so)
                    return PartitionResult(segments, all_decisions, self.exported, self.built,
                                           self.rounds)
                if not self.settings.dry_run and self.backend is None:
                    for seg in engines:  # --target cpu: no engine, but the precision still applies
                        self.prepare(seg)
                elif not self.settings.dry_run:
                    for seg in engines:
                        if seg.key not in self.built and not self.build(seg):
                            changed = True
                        note(f"building {seg.name}")
                if not changed:
                    for seg in segments:
                        if seg.kind == "onnx" and seg.key not in self.exported \
                                and not self.export_onnx_stage(seg):
                            changed = True
                if not changed:
                    names = {self.graph.nodes[i].name for s in engines for i in s.nodes}
                    return PartitionResult(segments, all_decisions, self.exported, self.built,
                                           self.rounds, {k: v for k, v in self.fp32_layers.items()
                                                         if k in names})
        finally:
            if self.whole is not None:
                self.whole.close()


def partition_and_build(graph: Graph, settings: Any, backend: Any, timer: Any, say: Any,
                        max_rounds: int = 200, time_limit: float = 1800.0,
                        calibration: Optional[List[Dict[str, Any]]] = None) -> PartitionResult:
    """Partition ``graph`` by what mxnet.onnx exports and TensorRT's parser and builder accept;
    build each engine (unless ``settings.dry_run``); with ``settings.int8``, engines are built
    from Q/DQ ONNX calibrated on ``calibration`` (model input samples)."""
    result = _Loop(graph, settings, backend, timer, say, max_rounds, time_limit, calibration).run()
    rejected = {i: d for i, d in result.decisions.items() if d.reason == Reason.PARSER_REJECTED}
    if graph.is_dynamic and rejected:
        _compare_with_static(graph, settings, backend, timer, say, rejected, max_rounds, time_limit)
    return result


def _compare_with_static(graph: Graph, settings: Any, backend: Any, timer: Any, say: Any,
                         rejected: Dict[int, Decision], max_rounds: int, time_limit: float) -> None:
    """Some ops TensorRT's parser accepts with static shapes it rejects with dynamic ones (shape
    arithmetic on unknown sizes). Partition the same graph at the opt shape, parse only, and say
    so on every op that a static compile would have put in an engine."""
    import copy
    import dataclasses

    static = copy.copy(graph)
    static.input_ranges, static.ranges = {}, {}
    say(f"checking the {len(rejected)} op(s) the parser rejects with dynamic shapes against a static "
        "export at the opt shape")
    quiet = lambda _: None  # noqa: E731
    static_result = _Loop(static, dataclasses.replace(settings, dry_run=True, residual="mxnet"),
                          backend, timer, quiet,
                          max_rounds, time_limit).run()
    for idx, decision in rejected.items():
        if idx not in static_result.decisions:
            decision.message = (decision.message[:200] + " [dynamic shapes only: a static compile "
                                "(fixed --input) puts it in an engine]")


def parser_text(message: str) -> str:
    """The informative part of a parser message, on one line."""
    import re

    lines = [l.strip() for l in message.strip().splitlines() if l.strip()]
    useful = [l for l in lines if not l.startswith("Invalid Node") and not l.startswith("Node name")]
    text = " ".join(useful or lines) or "rejected"
    text = re.sub(r" In operator\(\) at \S+", "", text)
    text = re.sub(r"\s*\[checkMacros.*$", "", text)
    return text[:300]
