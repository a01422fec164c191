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

from .backends import BuiltEngine, get_backend
from .dims import dim_groups
from .export import ExportedSegment, subgraph_symbol_json
from .frontend import (Graph, check_input_shapes, fold_constants, import_user_modules, load_graph,
                       path_problem, resolve_model_files)
from .partition import PartitionReport, Segment, partition_and_build
from .runtime import bundle as bundle_format
from .runtime._version import __version__
from .runtime.errors import BundleError, CompileError, IncompatibleError, TrtcError, UsageError
from . import _defaults
from .settings import CompileSettings, check_compute_capabilities, checked_settings
from .strip import check_can_strip, strip_engines
from .runtime._native import quiet_native
from .memory import available_memory
from . import memory
from .verify import (_OUT_OF_MEMORY, OutputCheck, ReferenceFailed, degenerate_outputs,
                     gate_inputs, gate_memory, gate_shapes, id_range, load_verify_inputs, run_gate)

__all__ = ["compile", "CompileResult", "Progress", "check_output_path"]

Progress = Callable[[str], None]


@dataclass(repr=False)
class CompileResult:
    """What a compilation produced (``output`` is None for --dry-run)."""

    output: Optional[Path]
    report: PartitionReport
    manifest: Optional[Dict[str, Any]] = None
    checks: List[OutputCheck] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)

    def __repr__(self) -> str:  # not the manifest (thousands of param names) nor bundle bytes
        report = self.report
        ok = all(c.ok for c in self.checks) if self.checks else None
        return (f"{type(self).__name__}(output={str(self.output) if self.output else None!r}, "
                f"{len(report.engine_segments)} engine(s), {report.residual_ops}/{report.total_ops} "
                f"ops in MXNet, verified={ok}, {self.timings.get('total', 0.0):.1f} s)")

    def to_json(self) -> Dict[str, Any]:
        return {
            "output": str(self.output) if self.output else None,
            "partition": self.report.to_json(),
            "verify": [c.to_json() for c in self.checks],
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "warnings": self.warnings,
            "verified": bool(self.checks) and all(c.ok or not c.blocking for c in self.checks),
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

    settings = _check_settings(settings)
    if settings.sign_key is not None and path_problem(settings.sign_key):  # e.g. a FIFO: a hang
        raise UsageError(f"--sign-key {settings.sign_key} {path_problem(settings.sign_key)}; pass "
                         "the PEM private key file trtc keygen wrote")
    import_user_modules(settings.imports)
    symbol_path, params_path = resolve_model_files(settings.params, settings.symbol)
    output = _output_path(settings, symbol_path, params_path)

    if settings.target == "cpu":  # ONNX stages only: no TensorRT needed to compile or to run
        backend = None
    else:  # before minutes of work: is there a builder (that can strip, if asked)?
        backend = get_backend(settings.backend)
        if settings.strip_weights and not settings.dry_run:
            check_can_strip(backend)

    with timer.span("load"):
        say(f"loading {symbol_path.name} + {params_path.name}")
        with quiet_native():
            graph = load_graph(symbol_path, params_path, settings.inputs, settings.input_dtypes,
                               allow_nonfinite_weights=settings.allow_nonfinite_weights,
                               opt_shapes=settings.opt_shapes)
            graph = fold_constants(graph)
    memory.step("load")
    say(f"model: {len(graph.op_nodes)} ops, inputs "
        + ", ".join(f"{n}:{_dims_text(graph, n)}{'' if d == 'float32' else ':' + d}"
                    for n, _, d in graph.inputs))
    notes = _load_notes(graph)
    for line in notes:
        say(f"note: {line}")
    if graph.folded:
        say(f"folded {sum(graph.folded.values())} weight-only ops into constants: "
            + ", ".join(f"{op} x{n}" for op, n in graph.folded.items()))
    model_ops = {n.op for n in graph.op_nodes}
    for op in settings.exclude_ops:
        if op not in model_ops:
            warnings.append(f"--exclude-op {op}: the model has no {op} op "
                            f"(ops present: {', '.join(sorted(model_ops))})")
            say(f"warning: {warnings[-1]}")
    conversions: List[str] = []  # integer sample arrays fed to float inputs: said, not silent
    samples = (load_verify_inputs(graph, settings.verify_inputs, notes=conversions)
               if settings.verify_inputs is not None else None)

    if backend is None:
        say("--target cpu: segments by what mxnet.onnx exports; no TensorRT parser or builder")
    else:
        say(f"builder: {backend.name} {backend.version}")
    calibration = None
    if settings.int8:
        from .quantize import load_calibration

        calibration = load_calibration(graph, settings.calibration, notes=conversions)
        say(f"int8: {len(calibration)} calibration sample(s) from {settings.calibration} "
            f"({settings.calibration_method})")
        if samples is None:
            samples = calibration[:_defaults.INT8_GATE_SAMPLES]
    for line in dict.fromkeys(conversions):
        warnings.append(line)
        say(f"warning: {line}")
    if settings.verify and not settings.dry_run:  # before minutes of building
        with quiet_native():
            _check_gate_runs(graph, samples)
    try:
        with quiet_native():
            parts = partition_and_build(graph, settings, backend, timer, say,
                                        calibration=calibration)
    except MemoryError as exc:  # MXNet's forward for fp16 / int8 calibration, a build
        raise _out_of_memory(f"partitioning and building ({str(exc)[:160]})") from None
    memory.step("partitioning and building")
    report = PartitionReport(total_ops=len(graph.op_nodes), segments=parts.segments,
                             decisions=sorted(parts.decisions.values(), key=lambda d: d.node),
                             built=not settings.dry_run, folded=dict(graph.folded), notes=notes,
                             fp32_layers=dict(parts.fp32_layers),
                             engine_kind="ONNX Runtime stage" if backend is None else "TensorRT engine")
    if settings.require_full and not report.full:
        raise _with_report(CompileError(
            f"--require-full: {report.residual_ops} of {report.total_ops} ops would stay in MXNet "
            f"({', '.join(sorted({d.reason for d in report.decisions}))}; see the partition report)"),
            report)
    result = CompileResult(output=None, report=report, warnings=warnings)
    if settings.dry_run:
        result.timings = {**timer.totals, "total": time.perf_counter() - start}
        return result
    if not report.engine_segments:  # still a deployable bundle: said, not silent
        warnings.append(f"no part of the model runs in TensorRT: the bundle runs in "
                        f"{report.stages_of('onnx')} ONNX Runtime and {report.stages_of('residual')} "
                        "MXNet stage(s) (see the partition report for why)")
        say(f"warning: {warnings[-1]}")

    with timer.span("write"), quiet_native():
        manifest, members = _assemble(graph, settings, parts.segments, parts.exported, parts.built,
                                      notes, parts.fp32_layers)
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
        if not settings.verify:
            warnings.append("--no-verify: the bundle was not compared with MXNet (the manifest "
                            "records verified: false; trtc inspect shows it)")
            say(f"warning: {warnings[-1]}")
        while settings.verify:
            try:
                with timer.span("verify"), quiet_native():  # MXNet's log lines, all of them
                    result.checks = _verify(graph, tmp, settings, parts.segments, samples,
                                            report, say, warnings)
                break
            except _OnnxStagesOff as off:  # those stages run in MXNet instead; verify again
                _to_mxnet(parts.segments, parts.decisions, off.stages, say, off.why)
                with timer.span("write"):
                    manifest, members = _assemble(graph, settings, parts.segments, parts.exported,
                                                  parts.built, notes, parts.fp32_layers)
                    bundle_format.write_bundle(tmp, manifest, members)
        mxnet_ops = manifest["requires"].get("mxnet_ops")
        if mxnet_ops:  # said before the bundle is written, and kept in the manifest
            warnings.append(_needs_mxnet_text(report, mxnet_ops))
            say(f"warning: {warnings[-1]}")
        if settings.strip_weights and backend is not None:  # refit from the ONNX the gate verified
            with timer.span("strip"):
                manifest, members, _ = strip_engines(manifest, members, backend, say)
                bundle_format.write_bundle(tmp, manifest, members)
        if settings.target == "gpu":  # verified with the ONNX; shipped without it
            manifest, members = _gpu_only(manifest, members)
            bundle_format.write_bundle(tmp, manifest, members)
            say("--target gpu: the CPU path's ONNX verified, then left out of the bundle")
        if settings.sign_key is not None:
            from .runtime import signing

            fingerprint = signing.sign_bundle(tmp, settings.sign_key)
            say(f"signed with ed25519 key {fingerprint}")
        os.replace(tmp, output)
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    result.output = output
    result.manifest = bundle_format.read_bundle(output).manifest
    result.timings = {**timer.totals, "total": time.perf_counter() - start}
    say(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB) in {result.timings['total']:.1f} s")
    return result


def _needs_mxnet_text(report: PartitionReport, ops: List[str]) -> str:
    """The warning of a bundle that keeps MXNet stages: which ops, why, what that needs."""
    why = sorted({d.mxnet_reason or d.reason for d in report.mxnet_decisions})
    return (f"{report.mxnet_ops} op(s) run in {report.stages_of('residual')} MXNet stage(s) "
            f"({', '.join(ops[:6])}{', ...' if len(ops) > 6 else ''}: {'; '.join(why)[:200]}): "
            "the bundle needs MXNet 1.9.1 at run time, i.e. Python <= 3.11 with numpy < 1.24")


def _dims_text(graph: Graph, name: str) -> str:
    """``1..32x3x224x224 (opt 8x3x224x224)`` for a ranged input, ``1x3x224x224`` for a fixed one."""
    lo, opt, hi = graph.shape_range(name)
    return bundle_format.range_text(lo, hi) + (f" (opt {'x'.join(map(str, opt))})" if lo != hi else "")


def _check_settings(settings: CompileSettings) -> CompileSettings:
    """Settings that are wrong whatever the model (the CLI and the Python API both come through
    here): every field's type (settings.checked_settings), then the values. Returns the
    normalized settings."""
    settings = checked_settings(settings)
    if settings.min_segment_size < 1:
        raise UsageError("--min-segment-size must be at least 1")
    if not isinstance(settings.seed, int) or not 0 <= settings.seed < 2 ** 32:
        raise UsageError(f"--seed {settings.seed}: expected an integer in [0, 2^32)")
    if settings.int8:
        if settings.fp16:
            raise UsageError("--int8 and --fp16 together are not supported yet: int8 engines keep "
                             "their non-quantized layers in fp32; pass one of them")
        if settings.calibration is None:
            raise UsageError("--int8 needs --calibration PATH (a directory of .npy/.npz inputs or "
                             "one .npz, arrays by input name)")
        from .quantize import METHODS

        if settings.calibration_method not in METHODS:
            raise UsageError(f"--calibration-method {settings.calibration_method!r}: choose one of "
                             f"{', '.join(METHODS)}")
    elif settings.calibration is not None:
        raise UsageError("--calibration applies to int8 engines: add --int8")
    if settings.target not in ("all", "gpu", "cpu"):
        raise UsageError(f"--target {settings.target!r}: choose all (default), gpu or cpu")
    if settings.strip_weights and settings.target != "all":
        raise UsageError(f"--strip-weights with --target {settings.target}: stripped engines "
                         "refit from the ONNX that --target all keeps (--target gpu drops it, "
                         "--target cpu builds no engine); use --target all --strip-weights, or "
                         "compile --target cpu here and run `trtc strip` on a GPU machine")
    if settings.residual not in _defaults.RESIDUAL_EXECUTORS:
        raise UsageError(f"--residual {settings.residual!r}: choose onnxruntime (default) or mxnet")
    if settings.keep_fp32 and not settings.fp16:
        raise UsageError("--keep-fp32 applies to fp16 engines: add --fp16")
    if settings.tolerance is not None and not (0 < settings.tolerance < float("inf")):
        raise UsageError("--tolerance must be a positive number")
    check_compute_capabilities(settings.compute_capabilities, settings.backend)
    return settings


def _check_gate_runs(graph: Graph, samples: Optional[List[Dict[str, np.ndarray]]]) -> None:
    """Can the accuracy gate run MXNet's forward at the shapes it will use? Each shape the
    frontend did not check (the range's odd size, --verify-inputs samples of other sizes) must
    pass MXNet's shape inference and the reshape check (frontend.check_input_shapes: MXNet would
    crash); and a lower bound of the memory it needs must fit in what this machine has.

    Raises:
        UsageError: naming the shapes and the op, or the memory needed and what to do.
    """
    runs = (gate_shapes(graph) if samples is None
            else [{n: tuple(v.shape) for n, v in sample.items()} for sample in samples])
    runs = [dict(r) for r in dict.fromkeys(tuple(sorted(r.items())) for r in runs)]
    if graph.is_dynamic:
        checked = [{n: graph.shape_range(n)[i] for n in graph.input_names} for i in range(3)]
        for number, shapes in enumerate(runs):
            if shapes not in checked:
                where = ("the accuracy gate's odd size inside the --input range" if samples is None
                         else f"--verify-inputs sample {number + 1}")
                check_input_shapes(graph, shapes, where)
    need, what = gate_memory(graph, runs)
    have = available_memory()
    if have is not None and need > have:
        largest = max(runs, key=lambda r: sum(int(np.prod(s)) for s in r.values()))
        raise UsageError(
            f"the accuracy gate needs at least {need / 2**30:.1f} GiB to run MXNet's forward at "
            + ", ".join(f"{n}:{'x'.join(map(str, s))}" for n, s in largest.items())
            + f" (its inputs, and {what}), more than the {have / 2**30:.1f} GiB available here: "
            "narrow the --input range (the gate runs its max), give --verify-inputs of smaller "
            "shapes, or skip the gate with --no-verify")


def _load_notes(graph: Graph) -> List[str]:
    """What loading changed on the user's behalf (reported, and kept in the manifest)."""
    notes = []
    if graph.renamed:
        pairs = list(graph.renamed.items())
        notes.append(f"{len(pairs)} op node name(s) appear more than once in the symbol (a block "
                     "called twice); renamed: " + ", ".join(f"{a} -> {b}" for a, b in pairs[:4])
                     + (", ..." if len(pairs) > 4 else ""))
    if graph.unreachable:
        notes.append(f"{len(graph.unreachable)} node(s) no output depends on were ignored (as MXNet "
                     f"does): {', '.join(graph.unreachable[:4])}" + (", ..." if len(graph.unreachable) > 4 else ""))
    return notes


def _with_report(error: TrtcError, report: PartitionReport) -> TrtcError:
    """Attach the partition report to an error (the CLI prints it with the error)."""
    error.report = report  # type: ignore[attr-defined]
    return error


def _output_path(settings: CompileSettings, symbol_path: Path, params_path: Path) -> Path:
    """Where the bundle goes. Never one of the model's own files, nor any existing file that is
    not a trtc bundle: only a bundle may be replaced."""
    if settings.output is None:
        match = re.match(r"^(.+)-\d{4}\.params$", params_path.name)
        stem = match.group(1) if match else params_path.stem
        output = params_path.with_name(f"{stem}{'-fp16' if settings.fp16 else ''}.trtb")
    else:
        output = Path(settings.output)
    return check_output_path(output, {symbol_path: "symbol", params_path: "params"})


def check_output_path(output: Path, sources: Dict[Path, str]) -> Path:
    """``-o``: a writable file name in an existing directory, none of ``sources`` (the command's
    inputs: path -> what it is) however spelled, and if it exists, a bundle (only a bundle may be
    replaced). Raises UsageError, else returns ``output``."""
    if str(output).strip() == "":
        raise UsageError("-o is empty; pass a file name like model.trtb")
    name_bytes = len(output.name.encode("utf-8", "surrogateescape"))
    if name_bytes > 255:
        raise UsageError(f"-o: the file name is {name_bytes} bytes; file systems allow at most 255")
    if output.is_dir():
        raise UsageError(f"-o {output} is a directory; pass a file name like {output}/model.trtb")
    if not output.parent.exists() and str(output.parent) not in ("", "."):
        raise UsageError(f"-o {output}: directory {output.parent} does not exist; create it first")
    try:
        resolved = output.resolve()
        resolved_sources = {Path(p).resolve(): kind for p, kind in sources.items()}
    except (OSError, RuntimeError) as exc:
        raise UsageError(f"-o {output}: cannot resolve the path ({exc})") from None
    if resolved in resolved_sources or any(output.exists() and Path(p).exists()
                                           and os.path.samefile(output, p) for p in sources):
        kind = resolved_sources.get(resolved, "model")
        raise UsageError(f"-o {output} is the model's {kind} file; trtc never overwrites its input: "
                         "pass another name, like model.trtb")
    if output.exists():
        if not output.is_file():
            raise UsageError(f"-o {output} exists and is not a regular file; pass a file name")
        if not bundle_format.looks_like_bundle(output):
            raise UsageError(f"-o {output} exists and is not a trtc bundle; trtc only replaces "
                             "bundles: remove it or pass another name")
    return output


def _gpu_only(manifest: Dict[str, Any], members: Dict[str, bytes]) -> Tuple[Dict[str, Any], Dict[str, bytes]]:
    """The bundle for ``--target gpu``: the verified bundle less its ONNX (the CPU path)."""
    import copy

    manifest = copy.deepcopy(manifest)
    dropped = set()
    for stage in manifest["stages"]:
        if stage["kind"] == "engine":
            dropped.add(stage.pop("onnx"))
    manifest["paths"] = ["gpu"]
    manifest["requires"].pop("cpu_path", None)
    return manifest, {k: v for k, v in members.items() if k not in dropped}


def _resolve_io(graph: Graph, spec: Dict[str, Any]) -> Dict[str, Any]:
    """The network's IO spec; a dimension the parser left unknown (-1) is taken from MXNet's
    shape inference where it is static over the input range (they agree wherever both are
    known); dynamic ones stay -1, with the tensor's min and max shapes."""
    shape = spec["shape"]
    if spec["name"] in graph.shapes:
        known = _spec(graph, spec["name"])
        if len(known["shape"]) == len(shape) and all(d < 0 or k < 0 or d == k
                                                     for d, k in zip(shape, known["shape"])):
            return {**spec, **{k: v for k, v in known.items() if k != "dtype"}}
    return spec


def _spec(graph: Graph, name: str) -> Dict[str, Any]:
    """A tensor's manifest spec: its shape (-1 on axes that vary over the input range, with
    ``min_shape`` and ``max_shape`` then) and dtype."""
    spec: Dict[str, Any] = {"name": name, "shape": [-1 if d is None else d for d in graph.onnx_dims(name)],
                            "dtype": graph.dtypes.get(name, "float32")}
    if -1 in spec["shape"]:
        lo, _, hi = graph.shape_range(name)
        spec["min_shape"], spec["max_shape"] = list(lo), list(hi)
    return spec


def _input_spec(graph: Graph, name: str) -> Dict[str, Any]:
    spec = _spec(graph, name)
    if name in graph.input_ranges:
        spec["opt_shape"] = list(graph.input_ranges[name][1])
    ids = id_range(graph, name, refused_only=True)
    if ids is not None:  # the runtime refuses ids outside [0, size) as MXNet would not take them
        spec["index_range"] = [0, ids[0]]
        spec["indexes"] = ids[1]
    return spec


def _assemble(graph: Graph, settings: CompileSettings, segments: List[Segment],
              exported: Dict[Any, ExportedSegment], built: Dict[Any, BuiltEngine],
              notes: List[str], fp32_layers: Dict[str, str]):
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
            exp = exported[seg.key]
            onnx_member = f"onnx/{seg.name}.onnx"
            if seg.key in built:  # members in a fixed order: each stage's plan, then its ONNX
                members[f"engines/{seg.name}.plan"] = built[seg.key].plan
            members[onnx_member] = exp.onnx_bytes
            stages.append({
                **common, "precision": settings.precision, "fp32_tensors": exp.kept_fp32,
                "fp32_layers": list(exp.fp32_layers), "int8_layers": list(exp.int8_layers),
                "onnx": onnx_member,
            })
            if seg.key in built:  # --target cpu builds no engine
                engine = built[seg.key]
                engine_member = f"engines/{seg.name}.plan"
                stages[-1].update({
                    "backend": engine.backend, "backend_version": engine.backend_version,
                    "compute_capabilities": engine.compute_capabilities,
                    "bytes": len(engine.plan), "sha256": bundle_format.sha256_hex(engine.plan),
                    "engine": engine_member, "io": [_resolve_io(graph, spec) for spec in engine.io],
                })
            profile = {t: dict(zip(("min", "opt", "max"), map(list, graph.shape_range(t))))
                       for t in seg.inputs if graph.dynamic_axes(t)}
            if profile:
                stages[-1]["profile"] = profile
        elif seg.kind == "onnx":  # run by ONNX Runtime on every path
            onnx_member = f"onnx/{seg.name}.onnx"
            members[onnx_member] = exported[seg.key].onnx_bytes
            stages.append({**common, "onnx": onnx_member})
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
        # v2 adds ONNX Runtime stages; a bundle without one stays v1, readable by older runtimes
        "format_version": (bundle_format.FORMAT_VERSION if any(s["kind"] == "onnx" for s in stages)
                           else 1),
        "trtc_version": __version__,
        "source": {
            "symbol": {"file": graph.symbol_path.name, "sha256": graph.symbol_sha256},
            "params": {"file": graph.params_path.name, "sha256": graph.params_sha256,
                       "bytes": graph.params_path.stat().st_size},
        },
        "precision": settings.precision,
        "inputs": [_input_spec(graph, n) for n, _, _ in graph.inputs],
        "outputs": [_spec(graph, t) for t in graph.outputs],
        "stages": stages,
        "requires": {
            "mxnet": bool(residual_param_keys) or any(s["kind"] == "residual" for s in stages),
            "custom_ops": custom_ops,
            "cpu_path": "onnxruntime",
            "gpu_path": sorted({f"{s['backend']}=={s['backend_version']}" for s in stages
                                if s["kind"] == "engine" and "backend" in s}),
        },
        "paths": ["cpu"] if settings.target == "cpu" else ["cpu", "gpu"],
        # False: compiled with --no-verify, never compared with MXNet (inspect and --json say so)
        "verified": bool(settings.verify),
        "partition": {k: v for k, v in PartitionReport(
            len(graph.op_nodes), segments, [], folded=dict(graph.folded), notes=notes,
            fp32_layers=fp32_layers).to_json().items() if k != "residual"},
    }
    if graph.renamed:
        manifest["partition"]["renamed_nodes"] = dict(graph.renamed)
    groups = dim_groups(graph)  # dynamic axes MXNet needs equal: the runtime checks them
    if groups:
        manifest["dim_groups"] = [[[name, axis] for name, axis in group] for group in groups]
    if any(s["kind"] == "residual" for s in stages):
        manifest["requires"]["mxnet_version"] = "1.9.1"
        manifest["requires"]["mxnet_ops"] = sorted({op for s in stages if s["kind"] == "residual"
                                                    for op in s["op_types"]})
    if residual_param_keys:
        import io

        buffer = io.BytesIO()
        np.savez(buffer, **{k: graph.params[k] for k in residual_param_keys})
        members["residual/params.npz"] = buffer.getvalue()
        manifest["residual_params"] = "residual/params.npz"
        manifest["residual_param_bytes"] = int(sum(graph.params[k].nbytes for k in residual_param_keys))
    return manifest, members


def _verify(graph: Graph, bundle_path: str, settings: CompileSettings, segments: List[Segment],
            samples: Optional[List[Dict[str, np.ndarray]]], report: PartitionReport,
            say: Progress, warnings: List[str]) -> List[OutputCheck]:
    """The accuracy gate (trtc/verify.py): the bundle on the CPU path against MXNet's forward,
    end to end and each engine on MXNet's own inputs. Raises CompileError (with the partition
    report attached) when it fails. MXNet's forward runs in a child process first
    (trtc/_isolate.py): its native crash is a CompileError naming it and the input shapes."""
    from .runtime import load

    tolerance = settings.effective_tolerance
    if samples is None:
        samples = []
        for shapes in gate_shapes(graph):
            try:
                feeds, how = gate_inputs(graph, settings.seed, shapes)
            except MemoryError:
                raise _with_report(_out_of_memory(
                    "making the accuracy gate's random inputs at " + ", ".join(
                        f"{n}:{'x'.join(map(str, s))}" for n, s in shapes.items())), report) from None
            samples.append(feeds)
        at = (" at " + ", ".join("/".join("x".join(map(str, f[n].shape)) for f in samples)
                                 for n in graph.input_names if n in graph.input_ranges)
              if graph.is_dynamic else "")
        say(f"verifying on the CPU path against MXNet (tolerance {tolerance:g}) on random inputs"
            f"{at} (seed {settings.seed}; --verify-inputs FILE.npz for real ones): " + "; ".join(how))
    else:
        source = settings.verify_inputs or f"the calibration data {settings.calibration}"
        say(f"verifying on the CPU path against MXNet (tolerance {tolerance:g}) on {len(samples)} "
            f"sample(s) from {source}")
    kinds = {seg.name: seg.kind for seg in segments}
    try:
        with quiet_native():
            model = load(bundle_path, device="cpu", memory_arena=False)
        memory.step("loading the bundle for the gate")
    except (BundleError, IncompatibleError) as exc:  # e.g. ONNX Runtime refuses an engine's ONNX
        _raise_if_onnx_stage(exc, kinds)
        raise CompileError(f"the compiled bundle does not load on the CPU path: {exc}; no bundle "
                           "written (please report this model)") from None
    try:  # MXNet's reference forward runs in a child process first (trtc/verify.py)
        with quiet_native():
            gate = run_gate(graph, model, segments, samples, tolerance)
    except BundleError as exc:  # an ONNX Runtime stage that cannot run its ONNX: MXNet runs it
        _raise_if_onnx_stage(exc, kinds)
        text = re.sub(r"; recompile the bundle$", "", str(exc))
        if _OUT_OF_MEMORY.search(text):
            stage = re.match(r"stage '([^']+)'", text)
            raise _with_report(_out_of_memory(
                "running the bundle in the accuracy gate"
                + (f" (stage {stage.group(1)}, in ONNX Runtime)" if stage else "")), report) from None
        raise _with_report(CompileError(  # not a bad bundle file of the user's: exit 1, not 3
            f"the compiled bundle fails on the accuracy gate's inputs: {text}"), report) from None
    except MemoryError as exc:
        raise _with_report(_out_of_memory(f"verifying ({str(exc)[:160]})" if str(exc)
                                          else "verifying"), report) from None
    except ReferenceFailed as exc:  # MXNet itself cannot run the model there: nothing to compare
        raise _with_report(CompileError(
            f"accuracy gate: {exc}; with no reference from MXNet the bundle cannot be verified: "
            "check --input (and --verify-inputs), or compile with --no-verify (unverified)"),
            report) from None
    checks = gate.checks
    e2e = [c for c in checks if c.scope == "end_to_end"]
    local = [c for c in checks if c.scope == "local"]
    for check in e2e:
        if check.kind == "output" or not check.ok or check.note:
            say(f"  {'output' if check.kind == 'output' else 'stage boundary'} {check.name}: max abs "
                f"err {check.max_abs:.3g}, relative {check.relative:.3g} "
                f"{'ok' if check.ok else ('FAILED' if check.blocking else 'differs')}"
                + (f"; {check.note}" if check.note else ""))
    inner = [c for c in e2e if c.kind == "boundary"]
    if inner:
        worst = max(inner, key=lambda c: c.relative)
        say(f"  {len(inner)} stage-boundary tensors: worst relative {worst.relative:.3g}")
    for stage in dict.fromkeys(c.stage for c in local):
        mine = [c for c in local if c.stage == stage]
        worst = max(mine, key=lambda c: (c.blocking, c.relative))
        say(f"  {stage} on MXNet's own inputs: worst relative {worst.relative:.3g} ({worst.name}) "
            f"{'FAILED' if worst.blocking else 'ok'}" + (f"; {worst.note}" if worst.note else ""))
    for name, share in gate.top1.items():
        say(f"  output {name}: top-1 agrees with MXNet on {share:.0%} of "
            f"{gate.top1_rows.get(name, gate.samples)} row(s) of {gate.samples} sample(s)")
    failed = gate.failed
    off = {}
    for check in failed:  # an ONNX Runtime stage off on MXNet's own inputs: MXNet runs it instead
        if check.scope == "local" and kinds.get(check.stage) == "onnx":
            off[check.stage] = max(off.get(check.stage, 0.0), check.relative)
    if off:
        raise _OnnxStagesOff(off)
    if failed:
        raise _with_report(CompileError(_gate_message(failed, settings, segments, graph)), report)
    _degenerate_outputs(graph, gate, samples, settings, report, say, warnings)
    low = {n: v for n, v in gate.top1.items() if v < _defaults.INT8_MIN_TOP1}
    if settings.int8 and low:
        name, share = next(iter(low.items()))
        raise _with_report(CompileError(
            f"accuracy gate failed: int8 output '{name}' agrees with MXNet's top-1 on {share:.0%} of "
            f"the calibration samples (needs {_defaults.INT8_MIN_TOP1:.0%}); no bundle written. Give "
            "more representative --calibration data, try --calibration-method entropy or "
            "percentile, or compile with --fp16"), report)
    return checks


def _degenerate_outputs(graph: Graph, gate: Any, samples: List[Dict[str, np.ndarray]],
                        settings: CompileSettings, report: PartitionReport, say: Progress,
                        warnings: List[str]) -> None:
    """Say (or, with strict_verify, fail) when an output the gate compared is all zeros or the
    same for two different inputs: a comparison that passes there proves little."""
    try:
        found = degenerate_outputs(graph, gate, samples, settings.seed)
    except ReferenceFailed:  # MXNet cannot run the second input: nothing more to learn
        return
    if not found:
        return
    what = "; ".join(f"output {name} is {why}" for name, why in found.items())
    line = (f"the accuracy gate saw degenerate outputs ({what}): its comparison proves little; "
            "give real inputs with --verify-inputs FILE.npz")
    if settings.strict_verify:
        raise _with_report(CompileError(f"{line} (--strict-verify: no bundle written)"), report)
    say(f"warning: {line} (--strict-verify makes this an error)")
    warnings.append(line)


def _out_of_memory(doing: str) -> CompileError:
    """The one line for running out of memory while ``doing`` something."""
    return CompileError(f"out of memory while {doing}: compile on a machine with more memory, "
                        "narrow the --input range (the gate runs its max), or skip the accuracy "
                        "gate with --no-verify")


def _raise_if_onnx_stage(exc: Exception, kinds: Dict[str, str]) -> None:
    """An error of an ONNX Runtime stage (its ONNX does not load or run): that stage goes to
    MXNet (_OnnxStagesOff, with the reason) rather than failing the compile."""
    match = re.search(r"stage '([^']+)': (.*)", str(exc))
    if match and kinds.get(match.group(1)) == "onnx":
        raise _OnnxStagesOff({match.group(1): float("inf")},
                             {match.group(1): match.group(2)[:200]}) from None


class _OnnxStagesOff(Exception):
    """ONNX Runtime stages that failed the gate locally: stage name -> worst relative error."""

    def __init__(self, stages: Dict[str, float], why: Optional[Dict[str, str]] = None):
        super().__init__(", ".join(stages))
        self.stages = stages
        self.why = why or {}


def _to_mxnet(segments: List[Segment], decisions: Dict[int, Any], stages: Dict[str, float],
              say: Progress, why: Optional[Dict[str, str]] = None) -> None:
    """Make the ONNX Runtime segments named in ``stages`` MXNet segments (same boundaries, so no
    re-partitioning), with the reason on each of their ops; renumber the stage names."""
    from .partition import renumber_segments

    for seg in segments:
        if seg.name in stages:
            if why and seg.name in why:
                text = f"ONNX Runtime cannot run its stage {seg.name} ({why[seg.name]})"
            else:
                text = (f"its ONNX Runtime stage {seg.name} was {stages[seg.name]:.3g} relative "
                        "off MXNet on MXNet's own inputs (accuracy gate)")
            say(f"  {seg.name}: {text}: its {len(seg.nodes)} op(s) run in MXNet instead")
            seg.kind = "residual"
            for idx in seg.nodes:
                if idx in decisions:
                    decisions[idx].runs_in, decisions[idx].mxnet_reason = "mxnet", text
    renumber_segments(segments)


def _gate_message(failed: List[OutputCheck], settings: CompileSettings, segments: List[Segment],
                  graph: Graph) -> str:
    """What failed, where, and what can actually help."""
    local = [c for c in failed if c.scope == "local"]
    worst = max(local or failed, key=lambda c: c.relative)
    what = "model output" if worst.kind == "output" else "stage-boundary tensor"
    where = (f"{worst.stage} run on MXNet's own inputs gives {what} '{worst.name}'"
             if worst.scope == "local" else f"{what} '{worst.name}'")
    text = (f"accuracy gate failed: {where} {worst.relative:.3g} relative off MXNet (tolerance "
            f"{worst.tolerance:g}" + (f"; {worst.note}" if worst.note else "") + "); no bundle written")
    # orders of magnitude over the tolerance is no rounding error: a wrong conversion, which a
    # higher tolerance would only hide
    wrong = worst.relative > max(_defaults.WRONG_NOT_ROUNDING * worst.tolerance, 1e-2)
    if worst.scope == "local":
        seg = next((s for s in segments if s.name == worst.stage), None)
        ops = Counter(graph.nodes[i].op for i in seg.nodes).most_common(4) if seg else []
        its_ops = "(its ops: " + ", ".join(op for op, _ in ops) + ")"
        if wrong:
            text += (f". {worst.stage} itself is off by far more than rounding explains (over "
                     f"{_defaults.WRONG_NOT_ROUNDING:g}x the tolerance): an op of it converts "
                     f"wrongly; keep its ops in MXNet with --exclude-op {its_ops} to find which, "
                     "and please report the model")
        else:
            hint = ("compile without --fp16, or keep the fp16-sensitive ops in MXNet with "
                    "--exclude-op " if settings.fp16 else
                    "keep some of this engine's ops in MXNet with --exclude-op ")
            text += f". {worst.stage} itself is off: {hint}{its_ops}, or raise --tolerance"
    elif wrong:
        text += (". Every engine passes on MXNet's own inputs, yet the output is off by far more "
                 "than rounding explains: check the inputs the gate used (--verify-inputs "
                 "FILE.npz with real ones), and please report the model")
    else:
        text += (". Every engine passes on MXNet's own inputs, so the error accumulates across "
                 "stages: raise --tolerance, or give real inputs with --verify-inputs FILE.npz")
    return text
