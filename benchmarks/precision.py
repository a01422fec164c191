"""Precision table: fp32 / fp16 / int8 bundles of one model side by side (issue 14, part 3).

    python benchmarks/precision.py [--models resnet50_v1,mobilenetv2_1.0] [--precision fp32,fp16,int8]
                                   [--calibration-samples 16] [--eval-samples 16]
                                   [--calibration-method minmax] [--rounds 5] [--iterations N]
                                   [--quick] [--json]

For each model (Gluon zoo architecture, ``trtc.zoo.export_example``: seeded RANDOM weights) it
compiles one bundle per precision with ``trtc.compile`` (int8: ``--int8 --calibration`` on
``--calibration-samples`` seeded random inputs, uniform [0, 1), one .npz) and reports, per bundle:

- bundle MB (the .trtb file) and engine MB (the TensorRT plans; the bundle also stores each
  engine's ONNX for the CPU path), and engine bytes / the fp32 bundle's;
- error vs MXNet fp32 on ``--eval-samples`` HELD-OUT seeded random inputs (another seed than the
  calibration inputs and the gate's): per input, max |trtc - mxnet| / max |mxnet| of the model
  output (the gate's metric), the largest over the inputs; and top-1 agreement, the share of
  inputs whose argmax matches MXNet's;
- CPU-path latency at batch 1 (``trtc.runtime.load(bundle, device="cpu")``: ONNX Runtime on the
  very ONNX each engine was built from): the bundles of one model alternate within a round, in a
  different order each round; a round times ``--iterations`` calls of each (default: as many as
  take about a second); the median over rounds of each round's median call, and the median of the
  per-round ratios to the fp32 bundle;
- compile time (``CompileResult.timings["total"]``: export, calibration, build, accuracy gate, write)
  and the layers kept in fp32 (fp16) or quantized (int8), from the manifest.

The weights and the calibration data are random, so the int8 error says how well the pipeline keeps
a random network's output, not what a trained model with real calibration data would lose.

``--quick``: mobilenetv2_0.25, fp32/fp16/int8, 2 calibration samples, 4 held-out inputs, a few
calls per round (a smoke test, not a measurement).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np

os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

DEFAULT_MODELS = ["resnet50_v1", "mobilenetv2_1.0"]
PRECISIONS = ["fp32", "fp16", "int8"]
QUICK_MODEL = "mobilenetv2_0.25"
INPUT = "data"  # the input name of every trtc.zoo classifier
CALIBRATION_SEED = 1  # the gate's own random inputs use seed 0 (fp32/fp16)
EVAL_SEED = 2
ROUND_SECONDS = 1.0
MIN_ITERATIONS = 3
MAX_ITERATIONS = 1000
NOTE = ("weights: seeded random (trtc.zoo, rescaled to unit activation RMS); calibration and "
        "held-out inputs: seeded random uniform [0, 1). The int8 error is not representative of "
        "a trained model with real calibration data.")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def random_inputs(shape: tuple, count: int, seed: int) -> np.ndarray:
    """``count`` samples of ``shape``, stacked on a new leading axis (the calibration layout)."""
    return np.random.default_rng(seed).random((count,) + tuple(shape)).astype(np.float32)


def mxnet_reference(symbol: Path, params: Path, samples: np.ndarray) -> List[np.ndarray]:
    """MXNet's fp32 forward of the exported model on each sample (the model's first output)."""
    import mxnet as mx

    with warnings.catch_warnings():  # "cannot decide type for data": the forward decides it
        warnings.simplefilter("ignore", UserWarning)
        net = mx.gluon.SymbolBlock.imports(str(symbol), [INPUT], str(params))
    outs = []
    for sample in samples:
        out = net(mx.nd.array(sample))
        out = out[0] if isinstance(out, (list, tuple)) else out
        outs.append(out.asnumpy())
    return outs


def compare(ours: List[np.ndarray], ref: List[np.ndarray]) -> Dict[str, float]:
    """Largest per-input relative error (max |ours - ref| / max |ref|) and top-1 agreement."""
    rel = []
    agree = 0
    for a, b in zip(ours, ref):
        scale = float(np.max(np.abs(b)))
        err = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
        rel.append(err / scale if scale > 0 else err)
        agree += int(np.array_equal(np.argmax(a.reshape(a.shape[0], -1), axis=1),
                                    np.argmax(b.reshape(b.shape[0], -1), axis=1)))
    return {"max_relative": max(rel), "mean_relative": float(np.mean(rel)),
            "top1_agreement": agree / len(ref)}


def compile_bundle(params: Path, out: Path, precision: str, calibration: Optional[Path],
                   method: str) -> Dict[str, Any]:
    from trtc import CompileSettings, compile

    kwargs: Dict[str, Any] = {}
    if precision == "fp16":
        kwargs["fp16"] = True
    elif precision == "int8":
        kwargs.update(int8=True, calibration=calibration, calibration_method=method)
    result = compile(CompileSettings(params=params, output=out, **kwargs))
    assert result.manifest is not None and result.output is not None
    engines = [s for s in result.manifest["stages"] if s["kind"] == "engine"]
    gate = [c.relative for c in result.checks if c.scope == "end_to_end" and c.kind == "output"]
    return {
        "bundle_bytes": result.output.stat().st_size,
        "engine_bytes": sum(int(s["bytes"]) for s in engines),
        "engines": len(engines),
        "mxnet_ops": result.report.residual_ops,
        "fp32_layers": sum(len(s.get("fp32_layers", [])) for s in engines),
        "int8_layers": sum(len(s.get("int8_layers", [])) for s in engines),
        "compile_s": result.timings["total"],
        "timings": dict(result.timings),
        "gate_relative": max(gate) if gate else None,
    }


def interleaved_medians(calls: Dict[str, Callable[[], Any]], rounds: int,
                        iterations: Optional[int]) -> Dict[str, List[float]]:
    """Per contender, the median call (ms) of each round; contenders alternate within a round in
    an order cycling through their permutations (what ran just before shifts timings)."""
    from trtc.bench import time_calls

    counts = {}
    for name, call in calls.items():
        if iterations:
            counts[name] = iterations
        else:
            once = max(float(np.median(time_calls(call, 1, 3))), 1e-6)
            counts[name] = int(min(MAX_ITERATIONS, max(MIN_ITERATIONS, ROUND_SECONDS / once)))
    orders = list(itertools.permutations(calls))
    medians: Dict[str, List[float]] = {name: [] for name in calls}
    for r in range(rounds):
        for name in orders[r % len(orders)]:
            medians[name].append(float(np.median(time_calls(calls[name], 1, counts[name]))) * 1e3)
    return medians


def measure(name: str, precisions: List[str], args: argparse.Namespace,
            work: Path) -> List[Dict[str, Any]]:
    import trtc.runtime as rt
    from trtc.zoo import default_shape, export_example

    symbol, params = export_example(name, work)
    shape = default_shape(name)
    calibration = work / f"{name}-calibration.npz"
    np.savez(calibration, **{INPUT: random_inputs(shape, args.calibration_samples,
                                                    CALIBRATION_SEED)})
    held_out = random_inputs(shape, args.eval_samples, EVAL_SEED)
    _say(f"[precision] {name}: MXNet fp32 reference on {len(held_out)} held-out inputs")
    reference = mxnet_reference(symbol, params, held_out)

    rows: List[Dict[str, Any]] = []
    models: Dict[str, Any] = {}
    for precision in precisions:
        _say(f"[precision] {name} {precision}: compiling")
        bundle = work / f"{name}-{precision}.trtb"
        row = {"model": name, "precision": precision,
               **compile_bundle(params, bundle, precision, calibration, args.calibration_method)}
        model = rt.load(bundle, device="cpu")
        (output,) = list(model.outputs)[:1]
        ours = [model(**{INPUT: sample})[output] for sample in held_out]
        row.update(compare(ours, reference))
        models[precision] = model
        rows.append(row)

    _say(f"[precision] {name}: CPU latency, {args.rounds} interleaved rounds")
    x = {INPUT: held_out[0]}
    medians = interleaved_medians({p: (lambda m=m: m(**x)) for p, m in models.items()},
                                  args.rounds, args.iterations)
    base = next((r for r in rows if r["precision"] == "fp32"), None)
    for row in rows:
        ms = medians[row["precision"]]
        row["cpu_ms"] = statistics.median(ms)
        row["cpu_round_ms"] = ms
        row["cpu_vs_fp32"] = (statistics.median(a / b for a, b in zip(ms, medians["fp32"]))
                              if base else None)
        row["engine_vs_fp32"] = row["engine_bytes"] / base["engine_bytes"] if base else None
        row["source_params_bytes"] = params.stat().st_size
    return rows


def _layers(row: Mapping[str, Any]) -> str:
    if row["precision"] == "int8":
        return f"{row['int8_layers']} int8"
    if row["precision"] == "fp16":
        return f"{row['fp32_layers']} kept fp32"
    return "-"


def _ratio(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}"


HEADER = ["model", "prec", "engines", "bundle MB", "engine MB", "engine / fp32", "max rel err",
          "top-1 agree", "CPU ms", "CPU / fp32", "compile s", "layers"]


def print_table(rows: List[Dict[str, Any]], out: Any = sys.stdout) -> None:
    """A markdown table, one row per bundle."""
    lines = [HEADER]
    for r in rows:
        lines.append([r["model"], r["precision"], str(r["engines"]),
                      f"{r['bundle_bytes'] / 1e6:.1f}", f"{r['engine_bytes'] / 1e6:.1f}",
                      _ratio(r["engine_vs_fp32"]), f"{r['max_relative']:.1e}",
                      f"{100 * r['top1_agreement']:.0f} %", f"{r['cpu_ms']:.1f}",
                      _ratio(r["cpu_vs_fp32"]), f"{r['compile_s']:.1f}", _layers(r)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    for n, line in enumerate(lines):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |", file=out)
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=out)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--precision", default=",".join(PRECISIONS),
                        help="comma-separated: fp32,fp16,int8")
    parser.add_argument("--calibration-samples", type=int, default=16)
    parser.add_argument("--eval-samples", type=int, default=16)
    parser.add_argument("--calibration-method", default="minmax",
                        choices=["minmax", "entropy", "percentile"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=None,
                        help="timed calls per bundle and round (default: about 1 s of them)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_MODEL}, all precisions, 2 calibration samples (CI smoke)")
    parser.add_argument("--json", action="store_true", help="rows as JSON on stdout")
    args = parser.parse_args(argv)
    if args.quick:
        models = [QUICK_MODEL]
        precisions = list(PRECISIONS)
        args.calibration_samples, args.eval_samples = 2, 4
        args.rounds, args.iterations = 3, args.iterations or 3
    else:
        models = [m for m in args.models.split(",") if m]
        precisions = [p for p in args.precision.split(",") if p]
    if (any(p not in PRECISIONS for p in precisions) or "fp32" not in precisions
            or len(set(precisions)) != len(precisions)):
        parser.error("--precision takes fp32,fp16,int8 and must include fp32 (the reference)")
    if min(args.calibration_samples, args.eval_samples, args.rounds) < 1:
        parser.error("--calibration-samples, --eval-samples and --rounds must be at least 1")
    precisions = [p for p in PRECISIONS if p in precisions]  # fp32 first
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="trtc-precision-") as tmp:
        for name in models:
            rows.extend(measure(name, precisions, args, Path(tmp)))
    if args.json:
        json.dump({"note": NOTE, "calibration_samples": args.calibration_samples,
                   "calibration_method": args.calibration_method,
                   "eval_samples": args.eval_samples, "rounds": args.rounds, "rows": rows},
                  sys.stdout, indent=2)
        print()
    else:
        print(f"trtc precision: fp32 / fp16 / int8 bundles; error vs MXNet fp32 on "
              f"{args.eval_samples} held-out inputs; int8 calibrated on "
              f"{args.calibration_samples} inputs ({args.calibration_method}); CPU path, batch 1, "
              f"median of {args.rounds} interleaved rounds; {os.cpu_count()} CPUs")
        print(f"NOTE: {NOTE}")
        print()
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
