"""Compile speed and bundle size: `trtc compile` vs a bare mxnet.onnx export + one TensorRT build.

    python benchmarks/compile.py [--models resnet18_v2,resnet50_v1] [--precision fp32,fp16]
                                 [--targets all,gpu,cpu,strip] [--repeat 1] [--quick] [--json]

For each model (Gluon zoo architecture, seeded random weights) and precision, measured side by
side in one process, alternating:

- bare: ``mxnet.onnx.export_model`` of the whole model, (fp16: convert the ONNX to an fp16
  network, as TensorRT-RTX is strongly typed), one ``build_serialized_network`` of that ONNX.
  This is the least any MXNet -> TensorRT path does; it does not verify and writes only a plan.
- trtc: ``trtc.compile`` of the same files, split into its phases (load, export, partition,
  build, verify, write). trtc also checks every output and stage-boundary tensor against MXNet
  and writes a self-describing bundle.

Table 1 prints the phase split, both totals and the ratio trtc / bare (goal <= 1.5; resnet50_v1
fp16 full compile <= 10 s on a 2-core machine). Table 2 prints the bundle's size split: engine
plans, stored ONNX, residual params, the source params file, and bundle / source params.
With --repeat N each side runs N times and the fastest run counts.

Table 3 prints bundle / source params per ``--target`` (issue 15): ``all`` (engines + their ONNX),
``gpu`` (engines only; goals fp32 <= 1.05, fp16 <= 0.55), ``cpu`` (ONNX only; goal fp32 <= 1.05)
and ``strip`` (``--target all --strip-weights``: each weight once; goal <= 1.05). A builder that
cannot strip here (TensorRT-RTX without a GPU) gets its reason in that cell:
``benchmarks/strip.py`` measures a ``--target cpu`` bundle stripped on a GPU machine instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

RATIO_GOAL = 1.5
R50_FP16_GOAL_S = 10.0
DEFAULT_MODELS = ["resnet18_v2", "resnet50_v1", "mobilenetv2_1.0"]
PHASES = ["load", "export", "partition", "build", "verify", "write"]
TARGETS = ["all", "gpu", "cpu", "strip"]
# bundle / source params goals per (target, precision) (issue 15)
SIZE_GOALS = {("gpu", "fp32"): 1.05, ("gpu", "fp16"): 0.55, ("cpu", "fp32"): 1.05,
              ("strip", "fp32"): 1.05, ("strip", "fp16"): 1.05}


def bare_compile(params: Path, shape: tuple, fp16: bool) -> Dict[str, Any]:
    """mxnet.onnx export of the whole model + one TensorRT build; seconds per step."""
    import mxnet as mx
    import mxnet.onnx as mx_onnx
    import numpy as np
    import onnx

    from trtc.backends import BuildError, get_backend
    from trtc.export import convert_to_fp16

    symbol_path = params.with_name(params.name.replace("-0000.params", "-symbol.json"))
    result: Dict[str, Any] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        mx_onnx.export_model(str(symbol_path), str(params), in_shapes=[shape],
                             in_types=[np.float32], onnx_file_path=path)
        model = onnx.load(path)
    if fp16:
        convert_to_fp16(model)
    onnx_bytes = model.SerializeToString()
    result["export"] = time.perf_counter() - start
    backend = get_backend("auto")
    start = time.perf_counter()
    try:
        backend.build(onnx_bytes)
        result["build"] = time.perf_counter() - start
    except BuildError as exc:  # e.g. YOLOv3: the parser rejects part of the head
        result["build"] = None
        result["error"] = str(exc).splitlines()[0][:100]
    result["total"] = result["export"] + (result["build"] or 0.0)
    return result


def trtc_compile(params: Path, out: Path, fp16: bool) -> Dict[str, Any]:
    from trtc import CompileSettings, compile
    from trtc.runtime.bundle import read_bundle

    start = time.perf_counter()
    result = compile(CompileSettings(params=params, output=out, fp16=fp16))
    total = time.perf_counter() - start
    bundle = read_bundle(out)
    members = bundle.manifest.get("members", {})

    def size(prefix: str) -> int:
        return sum(int(m["bytes"]) for name, m in members.items() if name.startswith(prefix))

    return {
        **{k: result.timings.get(k, 0.0) for k in PHASES}, "total": total,
        "bundle_bytes": out.stat().st_size, "engine_bytes": size("engines/"),
        "onnx_bytes": size("onnx/"), "residual_bytes": size("residual/"),
        "engines": len(result.report.engine_segments),
    }


def target_sizes(params: Path, out: Path, fp16: bool, targets: List[str],
                 all_bytes: int) -> Dict[str, Any]:
    """Bundle bytes per target (the ``all`` bundle was just compiled: ``all_bytes``); a target
    this machine cannot build gets the reason (a string) instead."""
    from trtc import CompileSettings, compile
    from trtc.runtime.errors import TrtcError

    sizes: Dict[str, Any] = {}
    for target in targets:
        if target == "all":
            sizes[target] = all_bytes
            continue
        settings = CompileSettings(params=params, output=out, fp16=fp16,
                                   target="all" if target == "strip" else target,
                                   strip_weights=target == "strip")
        try:
            compile(settings)
            sizes[target] = out.stat().st_size
        except TrtcError as exc:
            sizes[target] = str(exc)
    return sizes


def measure(name: str, precisions: List[str], repeat: int, work: Path,
            targets: List[str] = ("all",)) -> List[Dict[str, Any]]:
    from trtc.zoo import default_shape, export_example

    _, params = export_example(name, work)
    rows = []
    for precision in precisions:
        fp16 = precision == "fp16"
        bare: Optional[Dict[str, Any]] = None
        ours: Optional[Dict[str, Any]] = None
        for _ in range(repeat):  # alternate the two sides; keep each side's fastest run
            b = bare_compile(params, default_shape(name), fp16)
            bare = b if bare is None or b["total"] < bare["total"] else bare
            o = trtc_compile(params, work / f"{name}-{precision}.trtb", fp16)
            ours = o if ours is None or o["total"] < ours["total"] else ours
        assert bare is not None and ours is not None
        sizes = target_sizes(params, work / f"{name}-{precision}-target.trtb", fp16,
                             list(targets), ours["bundle_bytes"])
        rows.append({"model": name, "precision": precision, "trtc": ours, "bare": bare,
                     "source_params_bytes": params.stat().st_size, "target_bytes": sizes,
                     "ratio": ours["total"] / bare["total"] if bare.get("build") else None})
    return rows


def _s(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def print_tables(rows: List[Dict[str, Any]], out: Any = sys.stdout) -> None:
    head = (["model", "prec"] + PHASES + ["trtc s", "bare export", "bare build", "bare s",
                                          "ratio", "goal"])
    lines = [head]
    for r in rows:
        t, b = r["trtc"], r["bare"]
        goal = f"<= {RATIO_GOAL}"
        if r["ratio"] is None:
            verdict = "bare build fails: " + b.get("error", "?")[:40]
        else:
            verdict = f"{r['ratio']:.2f} " + ("met" if r["ratio"] <= RATIO_GOAL else "MISSED")
        if r["model"] == "resnet50_v1" and r["precision"] == "fp16":
            goal += f"; total <= {R50_FP16_GOAL_S:g} s " + (
                "met" if t["total"] <= R50_FP16_GOAL_S else "MISSED")
        lines.append([r["model"], r["precision"]] + [_s(t[k]) for k in PHASES]
                     + [_s(t["total"]), _s(b["export"]), _s(b["build"]), _s(b["total"]),
                        verdict, goal])
    print_aligned(lines, out)
    print(file=out)
    size_head = ["model", "prec", "engines", "bundle MB", "engine plans MB", "ONNX MB",
                 "residual MB", "source params MB", "bundle / source"]
    size_lines = [size_head]
    for r in rows:
        t = r["trtc"]
        size_lines.append([r["model"], r["precision"], str(t["engines"])]
                          + [f"{t[k] / 1e6:.1f}" for k in ("bundle_bytes", "engine_bytes",
                                                            "onnx_bytes", "residual_bytes")]
                          + [f"{r['source_params_bytes'] / 1e6:.1f}",
                             f"{t['bundle_bytes'] / r['source_params_bytes']:.2f}"])
    print_aligned(size_lines, out)
    targets = [t for t in TARGETS if any(t in r.get("target_bytes", {}) for r in rows)]
    if targets == ["all"]:
        return
    print(file=out)
    target_lines = [["model", "prec"] + [f"--target {t}" if t != "strip" else "all --strip-weights"
                                         for t in targets]]
    for r in rows:
        cells = []
        for target in targets:
            value = r["target_bytes"].get(target)
            goal = SIZE_GOALS.get((target, r["precision"]))
            if isinstance(value, int):
                ratio = value / r["source_params_bytes"]
                verdict = "" if goal is None else (f" (goal <= {goal}: "
                                                   + ("met)" if ratio <= goal else "MISSED)"))
                cells.append(f"{value / 1e6:.1f} MB = {ratio:.2f}x{verdict}")
            else:
                cells.append("n/a" if value is None else "n/a here: " + (
                    "the builder cannot strip without a GPU" if "weight-stripped" in value
                    else value[:60]))
        target_lines.append([r["model"], r["precision"]] + cells)
    print("bundle size per target (bundle / source params)", file=out)
    print_aligned(target_lines, out)


def print_aligned(lines: List[List[str]], out: Any) -> None:
    """Rows of cells in left-aligned columns, a dashed rule under the first (the header)."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for n, line in enumerate(lines):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip(), file=out)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--precision", default="fp32,fp16", help="comma-separated: fp32,fp16")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help="comma-separated: all,gpu,cpu,strip (table 3; --quick: all)")
    parser.add_argument("--quick", action="store_true", help="resnet18_v2 fp32 once (CI smoke)")
    parser.add_argument("--json", action="store_true", help="rows as JSON on stdout")
    args = parser.parse_args(argv)
    models = ["resnet18_v2"] if args.quick else [m for m in args.models.split(",") if m]
    precisions = ["fp32"] if args.quick else [p for p in args.precision.split(",") if p]
    targets = [t for t in args.targets.split(",") if t]
    if args.quick and "--targets" not in (argv if argv is not None else sys.argv):
        targets = ["all"]
    if any(p not in ("fp32", "fp16") for p in precisions) or args.repeat < 1:
        parser.error("--precision takes fp32 and/or fp16; --repeat at least 1")
    if not targets or any(t not in TARGETS for t in targets):
        parser.error(f"--targets takes some of {','.join(TARGETS)}")
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="trtc-bench-") as tmp:
        for name in models:
            print(f"[compile] {name} ({', '.join(precisions)})", file=sys.stderr, flush=True)
            rows.extend(measure(name, precisions, args.repeat, Path(tmp), targets))
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        print(f"trtc compile vs bare mxnet.onnx export + one build; {os.cpu_count()} CPUs; "
              f"fastest of {args.repeat}; seconds")
        print_tables(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
