"""benchmarks/compile.py --quick runs end to end (real mxnet.onnx, TensorRT-RTX, ONNX Runtime) and
prints both tables with numeric cells. No timing thresholds: the numbers are the script's output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_compile_benchmark_quick():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compile.py"), "--quick",
                           "--json"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout)
    assert [(r["model"], r["precision"]) for r in rows] == [("resnet18_v2", "fp32")]
    row = rows[0]
    trtc, bare = row["trtc"], row["bare"]
    phases = ["load", "export", "partition", "build", "verify", "write"]
    assert all(trtc[k] >= 0 for k in phases) and trtc["total"] >= sum(trtc[k] for k in phases) * 0.99
    assert bare["export"] > 0 and bare["build"] > 0
    assert row["ratio"] == trtc["total"] / bare["total"]
    # one engine, no residual stage: the bundle is the plan plus its ONNX plus small metadata
    assert trtc["engines"] == 1 and trtc["residual_bytes"] == 0
    assert trtc["engine_bytes"] + trtc["onnx_bytes"] < trtc["bundle_bytes"] < (
        trtc["engine_bytes"] + trtc["onnx_bytes"] + 1_000_000)


def test_compile_benchmark_table():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compile.py"), "--quick"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    header = next(l for l in lines if l.startswith("model") and "ratio" in l)
    row = lines[lines.index(header) + 2].split()
    assert row[0] == "resnet18_v2" and row[1] == "fp32"
    assert all(float(x) >= 0 for x in row[2:12])
    assert any(l.startswith("model") and "bundle / source" in l for l in lines)


def test_compile_benchmark_sizes_per_target():
    """Table 3's numbers: --target gpu and cpu bundles each hold the weights about once."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compile.py"), "--quick",
                           "--targets", "all,gpu,cpu", "--json"],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(done.stdout)
    sizes, params = row["target_bytes"], row["source_params_bytes"]
    assert sizes["all"] == row["trtc"]["bundle_bytes"]
    assert params < sizes["gpu"] < 1.05 * params and params < sizes["cpu"] < 1.05 * params
    assert sizes["all"] > sizes["gpu"] + sizes["cpu"] - 1_000_000
