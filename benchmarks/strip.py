"""Weight-stripped bundle size: `trtc strip` on bundles, against their source params.

    python benchmarks/strip.py BUNDLE.trtb [BUNDLE.trtb ...] [--json]

Each BUNDLE must hold its engines' ONNX (`--target all` or `--target cpu`). For each, in one run,
the script strips it exactly as `trtc strip` / `trtc compile --strip-weights` do (every engine
rebuilt from its ONNX with STRIP_PLAN + REFIT_IDENTICAL) and prints: the source params file's size
(recorded in the manifest at compile time), the bundle's size before, the engine plans' size before
(0 for a `--target cpu` bundle) and after stripping, the stripped bundle's size and the ratio
stripped bundle / source params (goal <= 1.05: every weight stored once, in the ONNX).

Needs a builder that can strip: TensorRT-RTX with an NVIDIA GPU present (any GPU; the engines
need not run on it). Without one it prints the builder's reason and exits 1. No MXNet needed, so
bundles compiled on a CPU-only machine can be measured on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from compile import print_aligned  # noqa: E402  (benchmarks/compile.py: one table layout)

GOAL = 1.05


def measure(bundle: Path, work: Path) -> Dict[str, Any]:
    from trtc.runtime.bundle import read_bundle
    from trtc.strip import strip_bundle

    manifest = read_bundle(bundle).manifest
    out = work / f"{bundle.stem}-stripped.trtb"
    result = strip_bundle(bundle, out)
    params = manifest["source"]["params"].get("bytes")
    return {
        "bundle": bundle.name, "precision": manifest["precision"],
        "paths_before": manifest["paths"] if "paths" in manifest else ["cpu", "gpu"],
        "source_params_bytes": params, "bundle_bytes_before": result["bytes_before"],
        "plan_bytes_before": sum(e["plan_bytes_before"] for e in result["engines"]),
        "plan_bytes": sum(e["plan_bytes"] for e in result["engines"]),
        "bundle_bytes": result["bytes"], "strip_seconds": sum(e["seconds"] for e in result["engines"]),
        "ratio": result["bytes"] / params if params else None,
    }


def print_table(rows: List[Dict[str, Any]], out: Any = sys.stdout) -> None:
    head = ["bundle", "prec", "from", "params MB", "bundle MB", "plans MB", "stripped plans MB",
            "stripped bundle MB", "stripped / params", "goal"]
    lines = [head]
    for r in rows:
        ratio = r["ratio"]
        verdict = "n/a" if ratio is None else f"<= {GOAL} " + ("met" if ratio <= GOAL else "MISSED")
        lines.append([r["bundle"], r["precision"], "+".join(r["paths_before"]),
                      _mb(r["source_params_bytes"]), _mb(r["bundle_bytes_before"]),
                      _mb(r["plan_bytes_before"]), _mb(r["plan_bytes"]), _mb(r["bundle_bytes"]),
                      "n/a" if ratio is None else f"{ratio:.3f}", verdict])
    print_aligned(lines, out)


def _mb(value: Optional[int]) -> str:
    return "n/a" if value is None else f"{value / 1e6:.2f}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--json", action="store_true", help="rows as JSON on stdout")
    args = parser.parse_args(argv)
    from trtc.backends import get_backend
    backend = get_backend("auto")
    reason = backend.strip_unavailable_reason()
    if reason:
        print(f"cannot measure here: {reason}", file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="trtc-strip-") as tmp:
        for bundle in args.bundles:
            print(f"[strip] {bundle}", file=sys.stderr, flush=True)
            rows.append(measure(bundle, Path(tmp)))
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        print(f"weight-stripped bundles vs source params; builder {backend.name} {backend.version}")
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
