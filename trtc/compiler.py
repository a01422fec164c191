"""compile(): MXNet export -> partition -> ONNX -> TensorRT engines -> verified .trtb bundle."""

from __future__ import annotations

import json
import os
import platform
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

from .backends import BuildError, BuiltEngine, TrtBackend, get_backend
from .export import (ExportError, ExportedSegment, WholeExport, cut_segment, export_nodes,
                     onnx_from_segment, subgraph_symbol_json)
from .frontend import Graph, import_user_modules, load_graph, resolve_model_files
from .partition import (Decision, PartitionReport, Reason, Segment, initial_decisions,
                        segment_graph)
from .runtime import bundle as bundle_format
from .runtime._version import __version__
from .runtime.errors import BundleError, CompileError, IncompatibleError, TrtcError, UsageError
from .settings import CompileSettings
from .verify import OutputCheck, compare, mxnet_forward, random_inputs, recheck_in_fp64

__all__ = ["compile", "CompileResult", "Progress"]

Progress = Callable[[str], None]
_MAX_ROUNDS = 10000


@dataclass
class CompileResult:
    """What a compilation produced (``output`` is None for --dry-run)."""

    output: Optional[Path]
    report: PartitionReport
    manifest: Optional[Dict[str, Any]] = None
    checks: List[OutputCheck] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return {
            "output": str(self.output) if self.output else None,
            "partition": self.report.to_json(),
            "verify": [c.to_json() for c in self.checks],
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "warnings": self.warnings,
            "bundle_bytes": self.output.stat().st_size if self.output and self.output.exists() else None,
            "stages": [{"kind": s["kind"], "name": s["name"],
                        **({"bytes": s["bytes"], "precision": s["precision"]} if s["kind"] == "engine" else {})}
                       for s in (self.manifest or {}).get("stages", [])],
        }


class _Timer:
    def __init__(self) -> None:
        self.totals: Dict[str, float] = {}

    def add(self, key: str, seconds: float) -> None:
        self.totals[key] = self.totals.get(key, 0.0) + seconds

    class _Span:
        def __init__(self, timer: "_Timer", key: str):
            self.timer, self.key = timer, key

        def __enter__(self) -> None:
            self.start = time.perf_counter()

        def __exit__(self, *exc: Any) -> None:
            self.timer.add(self.key, time.perf_counter() - self.start)

    def span(self, key: str) -> "_Timer._Span":
        return _Timer._Span(self, key)


def _quiet(_: str) -> None:
    pass


def compile(settings: CompileSettings, progress: Optional[Progress] = None) -> CompileResult:
    """Compile an MXNet model into a .trtb bundle.

    Args:
        settings: what to compile and how (see CompileSettings).
        progress: called with one line per step (the CLI prints them to stderr).

    Returns:
        CompileResult with the partition report, accuracy checks, timings and the manifest.

    Raises:
        UsageError: bad inputs (files, shapes, flags).
        CompileError: nothing could be built, --require-full failed, or the accuracy gate failed.
    """
    say = progress or _quiet
    timer = _Timer()
    warnings: List[str] = []
    start = time.perf_counter()

    import_user_modules(settings.imports)
    symbol_path, params_path = resolve_model_files(settings.params, settings.symbol)
    output = _output_path(settings, params_path)
    if settings.min_segment_size < 1:
        raise UsageError("--min-segment-size must be at least 1")

    with timer.span("load"):
        say(f"loading {symbol_path.name} + {params_path.name}")
        graph = load_graph(symbol_path, params_path, settings.inputs)
    say(f"model: {len(graph.op_nodes)} ops, inputs "
        + ", ".join(f"{n}:{'x'.join(map(str, s))}" for n, s, _ in graph.inputs))
    model_ops = {n.op for n in graph.op_nodes}
    for op in settings.exclude_ops:
        if op not in model_ops:
            warnings.append(f"--exclude-op {op}: the model has no {op} op "
                            f"(ops present: {', '.join(sorted(model_ops))})")
            say(f"warning: {warnings[-1]}")

    backend = get_backend(settings.backend)
    say(f"builder: {backend.name} {backend.version}")
    segments, decisions, exported, built = _partition_and_build(
        graph, settings, backend, timer, say)
    report = PartitionReport(total_ops=len(graph.op_nodes), segments=segments,
                             decisions=sorted(decisions.values(), key=lambda d: d.node),
                             built=not settings.dry_run)
    if settings.require_full and not report.full:
        raise _with_report(CompileError(
            f"--require-full: {report.residual_ops} of {report.total_ops} ops would stay in MXNet "
            f"({', '.join(sorted({d.reason for d in report.decisions}))}; see the partition report)"),
            report)
    result = CompileResult(output=None, report=report, warnings=warnings)
    if settings.dry_run:
        result.timings = {**timer.totals, "total": time.perf_counter() - start}
        return result
    if not report.engine_segments:
        raise _with_report(CompileError("no part of the model can run in TensorRT (see the "
                                        "partition report); nothing to compile"), report)

    with timer.span("write"):
        manifest, members = _assemble(graph, settings, segments, exported, built)
        for stale in bundle_format.remove_stale_partials(output):
            say(f"removed {os.path.basename(stale)}, left by an interrupted compile")
    tmp = ""
    try:  # the bundle is written to a temp file beside the output, renamed over it when verified
        with timer.span("write"):
            try:
                tmp = bundle_format.partial_path(output)
                bundle_format.write_bundle(tmp, manifest, members)
            except OSError as exc:
                raise UsageError(f"cannot write {output}: {exc.strerror}") from None
        if settings.verify:
            with timer.span("verify"):
                say("verifying on the CPU path against MXNet "
                    f"(seed {settings.seed}, tolerance {settings.effective_tolerance:g})")
                result.checks = _verify(graph, tmp, settings)
            for check in result.checks:
                if check.name in graph.outputs or not check.ok or check.note:
                    kind = "output" if check.name in graph.outputs else "stage boundary"
                    say(f"  {kind} {check.name}: max abs err {check.max_abs:.3g}, relative "
                        f"{check.relative:.3g} {'ok' if check.ok else 'FAILED'}"
                        + (f"; {check.note}" if check.note else ""))
            inner = [c for c in result.checks if c.name not in graph.outputs]
            if inner:
                worst = max(inner, key=lambda c: c.relative)
                say(f"  {len(inner)} stage-boundary tensors: worst relative {worst.relative:.3g}")
            failed = [c for c in result.checks if not c.ok]
            if failed:
                worst = max(failed, key=lambda c: c.relative)
                raise CompileError(
                    f"accuracy gate failed: output '{worst.name}' differs from MXNet by "
                    f"{worst.relative:.3g} relative (tolerance {worst.tolerance:g}"
                    + (f"; {worst.note}" if worst.note else "") + "); no bundle "
                    "written (raise --tolerance, or keep the offending ops in MXNet with "
                    "--exclude-op)")
        os.replace(tmp, output)
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    result.output = output
    result.manifest = bundle_format.read_bundle(output).manifest
    result.timings = {**timer.totals, "total": time.perf_counter() - start}
    say(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB) in {result.timings['total']:.1f} s")
    return result


def _with_report(error: TrtcError, report: PartitionReport) -> TrtcError:
    """Attach the partition report to an error (the CLI prints it with the error)."""
    error.report = report  # type: ignore[attr-defined]
    return error


def _output_path(settings: CompileSettings, params_path: Path) -> Path:
    if settings.output is None:
        match = re.match(r"^(.+)-\d{4}\.params$", params_path.name)
        stem = match.group(1) if match else params_path.stem
        return params_path.with_name(f"{stem}{'-fp16' if settings.fp16 else ''}.trtb")
    output = Path(settings.output)
    if output.is_dir():
        raise UsageError(f"-o {output} is a directory; pass a file name like {output}/model.trtb")
    if not output.parent.exists() and str(output.parent) not in ("", "."):
        raise UsageError(f"-o {output}: directory {output.parent} does not exist; create it first")
    return output


# ----------------------------------------------------------------------------------------------
# Partition <-> parser/builder loop
# ----------------------------------------------------------------------------------------------
def _partition_and_build(graph: Graph, settings: CompileSettings, backend: TrtBackend,
                         timer: _Timer, say: Progress):
    by_name = {n.name: n.index for n in graph.nodes}
    decisions: Dict[int, Decision] = initial_decisions(graph, settings.exclude_ops)
    exported: Dict[Any, ExportedSegment] = {}
    built: Dict[Any, BuiltEngine] = {}
    whole: Optional[WholeExport] = None
    whole_usable = True  # False once a whole export failed without naming a node
    try:
        for _ in range(_MAX_ROUNDS):
            with timer.span("partition"):
                segments, all_decisions = segment_graph(graph, decisions, settings.min_segment_size)
            engines = [s for s in segments if s.kind == "engine"]
            pending = [s for s in engines if s.key not in exported]
            changed = False
            if whole_usable and pending and (whole is None or not all(whole.covers(s) for s in pending)):
                candidates = sorted(i for s in engines for i in s.nodes)
                candidate_set = set(candidates)
                say(f"exporting {len(candidates)} ops to ONNX (mxnet.onnx)")
                try:
                    with timer.span("export"):
                        if whole is not None:
                            whole.close()
                            whole = None
                        whole = export_nodes(graph, candidates)
                except ExportError as exc:
                    idx = by_name.get(exc.node or "")
                    if idx is None or idx not in candidate_set:
                        whole, whole_usable = None, False  # export segment by segment below
                    else:
                        _reject(decisions, graph, idx, Reason.EXPORT_FAILED, str(exc)[:300])
                        say(f"  mxnet.onnx failed on {exc.node}; kept in MXNet")
                    continue
                unfaithful = {by_name[n]: text for n, text in whole.unfaithful.items()
                              if by_name.get(n) in candidate_set}
                for idx, text in unfaithful.items():
                    _reject(decisions, graph, idx, Reason.EXPORT_UNFAITHFUL,
                            f"mxnet.onnx says its ONNX differs from MXNet: {text}"[:300])
                if unfaithful:
                    say(f"  kept {len(unfaithful)} op(s) in MXNet (mxnet.onnx warns its ONNX differs): "
                        + ", ".join(graph.nodes[i].name for i in list(unfaithful)[:3]))
                    continue
            for seg in pending:
                exp = _segment_onnx(graph, seg, settings, backend, whole, decisions, by_name,
                                    timer, say)
                if exp is None:
                    changed = True
                else:
                    exported[seg.key] = exp
            if changed:
                continue
            if settings.dry_run:
                return segments, all_decisions, exported, built
            for seg in engines:
                if seg.key in built:
                    continue
                say(f"building {seg.name} ({len(seg.nodes)} ops, {settings.precision}) "
                    f"with {backend.name}")
                try:
                    with timer.span("build"):
                        built[seg.key] = backend.build(exported[seg.key].onnx_bytes,
                                                       settings.compute_capabilities)
                except BuildError as exc:
                    exp = exported[seg.key]
                    names = {name for line in exc.log for name in re.findall(r"([\w./:\-]+)#\d+", line)}
                    idxs = [by_name[n] for n in names if n in by_name and by_name[n] in seg.nodes]
                    if not idxs:
                        idxs = [seg.nodes[len(seg.nodes) // 2]]
                    for idx in idxs:
                        _reject(decisions, graph, idx, Reason.BUILD_FAILED, str(exc)[:300])
                    say(f"  build failed ({str(exc)[:120]}); splitting")
                    changed = True
            if not changed:
                return segments, all_decisions, exported, built
        raise CompileError("partitioning did not converge; please report this model")
    finally:
        if whole is not None:
            whole.close()


def _segment_onnx(graph: Graph, seg: Segment, settings: CompileSettings, backend: TrtBackend,
                  whole: Optional[WholeExport], decisions: Dict[int, Decision],
                  by_name: Dict[str, int], timer: _Timer, say: Progress) -> Optional[ExportedSegment]:
    """The segment's ONNX (cut out of the whole export, else exported alone), accepted by
    TensorRT's parser; None when an op of it was sent to MXNet instead (recorded in
    ``decisions``: export failed or differs, parser rejected)."""
    try:
        if whole is not None and whole.has_light:
            # after a first rejection: parse cuts that reference the weights (cheap)
            with timer.span("export"):
                light = cut_segment(whole, graph, seg, light=True)
            if light is not None:
                with timer.span("partition"):
                    parsed = backend.parse(light.onnx_bytes, whole.model_path)
                if not parsed.ok:
                    _parser_rejected(graph, seg, light, parsed, by_name, decisions, say)
                    return None
        with timer.span("export"):
            exp = cut_segment(whole, graph, seg, settings.fp16) if whole is not None else None
            if exp is None:
                say(f"exporting {seg.name} ({len(seg.nodes)} ops) to ONNX")
                exp = onnx_from_segment(graph, seg, fp16=settings.fp16)
    except ExportError as exc:
        idx = by_name.get(exc.node or "")
        if idx is None or idx not in seg.nodes:
            idx = seg.nodes[len(seg.nodes) // 2]
        _reject(decisions, graph, idx,
                Reason.EXPORT_UNFAITHFUL if exc.unfaithful else Reason.EXPORT_FAILED,
                str(exc)[:300])
        return None
    with timer.span("partition"):
        parsed = backend.parse(exp.onnx_bytes)
    if not parsed.ok:
        _parser_rejected(graph, seg, exp, parsed, by_name, decisions, say)
        if whole is not None:
            with timer.span("export"):
                whole.make_light()  # more rounds ahead: stop copying weights
        return None
    return exp


def _parser_rejected(graph: Graph, seg: Segment, exp: ExportedSegment, parsed: Any,
                     by_name: Dict[str, int], decisions: Dict[int, Decision], say: Progress) -> None:
    """Keep the MXNet ops whose ONNX nodes the parser rejected in MXNet, with its message."""
    rejected = _attribute(graph, seg, exp, parsed.issues, by_name)
    if not rejected:  # the parser named no node: split the segment in the middle
        msg = "; ".join(i.message for i in parsed.issues)[:300] or "parse failed"
        rejected = {seg.nodes[len(seg.nodes) // 2]: msg}
    for idx, msg in rejected.items():
        _reject(decisions, graph, idx, Reason.PARSER_REJECTED, msg)
    say(f"  parser rejected {len(rejected)} op(s): "
        + ", ".join(graph.nodes[i].name for i in list(rejected)[:3]))


def _reject(decisions: Dict[int, Decision], graph: Graph, idx: int, reason: str, msg: str) -> None:
    node = graph.nodes[idx]
    decisions[idx] = Decision(node.name, node.op, reason, msg)


def _attribute(graph: Graph, seg: Segment, exp: ExportedSegment, issues: List[Any],
               by_name: Dict[str, int]) -> Dict[int, str]:
    """Map parser errors on ONNX nodes back to the MXNet nodes that produced them."""
    rejected: Dict[int, str] = {}
    for issue in issues:
        mx_name = ""
        if 0 <= issue.node_index < len(exp.node_origin):
            mx_name = exp.node_origin[issue.node_index]
        if not mx_name and "#" in issue.node_name:
            mx_name = issue.node_name.rsplit("#", 1)[0]
        idx = by_name.get(mx_name)
        if idx is not None and idx in seg.nodes:
            rejected.setdefault(idx, f"ONNX {issue.op}: {_parser_text(issue.message)}")
    return rejected


# ----------------------------------------------------------------------------------------------
# Bundle assembly
# ----------------------------------------------------------------------------------------------
def _parser_text(message: str) -> str:
    """The informative part of a parser message, on one line."""
    lines = [l.strip() for l in message.strip().splitlines() if l.strip()]
    useful = [l for l in lines if not l.startswith("Invalid Node") and not l.startswith("Node name")]
    text = " ".join(useful or lines) or "rejected"
    text = re.sub(r" In operator\(\) at \S+", "", text)
    text = re.sub(r"\s*\[checkMacros.*$", "", text)
    return text[:300]


def _resolve_io(graph: Graph, spec: Dict[str, Any]) -> Dict[str, Any]:
    """The network's IO spec; a dimension the parser left unknown (-1) is taken from MXNet's
    shape inference (static shapes: they agree wherever both are known)."""
    shape = spec["shape"]
    if any(d < 0 for d in shape) and spec["name"] in graph.shapes:
        known = list(graph.shapes[spec["name"]])
        if len(known) == len(shape) and all(d < 0 or d == k for d, k in zip(shape, known)):
            return {**spec, "shape": known}
    return spec


def _spec(graph: Graph, name: str) -> Dict[str, Any]:
    return {"name": name, "shape": list(graph.shapes[name]), "dtype": graph.dtypes.get(name, "float32")}


def _assemble(graph: Graph, settings: CompileSettings, segments: List[Segment],
              exported: Dict[Any, ExportedSegment], built: Dict[Any, BuiltEngine]):
    members: Dict[str, bytes] = {}
    stages: List[Dict[str, Any]] = []
    residual_param_keys: List[str] = []
    custom_ops: List[str] = []
    for seg in segments:
        ops = Counter(graph.nodes[i].op for i in seg.nodes)
        common = {
            "kind": seg.kind, "name": seg.name,
            "inputs": [_spec(graph, t) for t in seg.inputs],
            "outputs": [_spec(graph, t) for t in seg.outputs],
            "mxnet_ops": len(seg.nodes), "op_types": dict(sorted(ops.items())),
        }
        if seg.kind == "engine":
            engine = built[seg.key]
            exp = exported[seg.key]
            engine_member, onnx_member = f"engines/{seg.name}.plan", f"onnx/{seg.name}.onnx"
            members[engine_member] = engine.plan
            members[onnx_member] = exp.onnx_bytes
            stages.append({
                **common,
                "backend": engine.backend, "backend_version": engine.backend_version,
                "compute_capabilities": engine.compute_capabilities,
                "precision": settings.precision, "fp32_tensors": exp.kept_fp32,
                "bytes": len(engine.plan), "sha256": bundle_format.sha256_hex(engine.plan),
                "engine": engine_member, "onnx": onnx_member,
                "io": [_resolve_io(graph, spec) for spec in engine.io],
            })
        else:
            text, _ = subgraph_symbol_json(graph, seg.nodes, seg.inputs, seg.outputs)
            symbol_member = f"residual/{seg.name}-symbol.json"
            members[symbol_member] = text.encode("utf-8")
            keys = list(seg.params)
            for key in keys:
                if key not in residual_param_keys:
                    residual_param_keys.append(key)
            for i in seg.nodes:
                node = graph.nodes[i]
                if node.op == "Custom" and node.attrs.get("op_type") not in custom_ops:
                    custom_ops.append(node.attrs.get("op_type", "?"))
            stages.append({**common, "symbol": symbol_member, "params": keys})
    manifest: Dict[str, Any] = {
        "format": bundle_format.FORMAT_NAME,
        "format_version": bundle_format.FORMAT_VERSION,
        "trtc_version": __version__,
        "source": {
            "symbol": {"file": graph.symbol_path.name, "sha256": graph.symbol_sha256},
            "params": {"file": graph.params_path.name, "sha256": graph.params_sha256},
        },
        "precision": settings.precision,
        "inputs": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in graph.inputs],
        "outputs": [_spec(graph, t) for t in graph.outputs],
        "stages": stages,
        "requires": {
            "mxnet": bool(residual_param_keys) or any(s["kind"] == "residual" for s in stages),
            "custom_ops": custom_ops,
            "cpu_path": "onnxruntime",
            "gpu_path": sorted({f"{s['backend']}=={s['backend_version']}" for s in stages
                                if s["kind"] == "engine"}),
        },
        "partition": {k: v for k, v in PartitionReport(
            len(graph.op_nodes), segments, []).to_json().items() if k != "residual"},
    }
    if any(s["kind"] == "residual" for s in stages):
        manifest["requires"]["mxnet_version"] = "1.9.1"
    if residual_param_keys:
        import io

        buffer = io.BytesIO()
        np.savez(buffer, **{k: graph.params[k] for k in residual_param_keys})
        members["residual/params.npz"] = buffer.getvalue()
        manifest["residual_params"] = "residual/params.npz"
        manifest["residual_param_bytes"] = int(sum(graph.params[k].nbytes for k in residual_param_keys))
    return manifest, members


def _verify(graph: Graph, bundle_path: str, settings: CompileSettings) -> List[OutputCheck]:
    """Run the bundle stage by stage on the CPU path; compare every tensor crossing a stage
    boundary, and the outputs, with MXNet's own forward pass (a wrong engine cannot hide behind
    a later stage that masks it, e.g. NMS)."""
    from .runtime import load

    feeds = random_inputs(graph, settings.seed)
    try:
        model = load(bundle_path, device="cpu")
    except (BundleError, IncompatibleError) as exc:  # e.g. ONNX Runtime refuses an engine's ONNX
        raise CompileError(f"the compiled bundle does not load on the CPU path: {exc}; no bundle "
                           "written (please report this model)") from None
    tensors: Dict[str, np.ndarray] = model.validate_inputs(feeds)
    produced: List[str] = []
    for stage in model.stages:
        tensors.update(stage.run(tensors))
        produced.extend(stage.outputs)
    names = list(dict.fromkeys(graph.outputs + produced))
    reference = mxnet_forward(graph, feeds, names)
    actual = {n: tensors[n] for n in names}
    checks = compare(actual, reference, settings.effective_tolerance)
    recheck_in_fp64(graph, feeds, checks, actual, reference)
    outputs = set(graph.outputs)
    for check in checks:
        check.boundary = check.name not in outputs  # type: ignore[attr-defined]
    return checks
