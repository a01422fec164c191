"""benchmarks/runtime.py runs as users run it: a smoke test of its table and JSON, no timing
thresholds (CI machines are too noisy for those)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import List

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "runtime.py"
CPU_HEADER = ["model", "batch", "trtc ms", "ORT ms", "MXNet ms", "samples/s", "trtc/ORT",
              "trtc/MXNet"]


def _run(args: List[str], cwd: Path) -> str:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stdout


def test_quick_prints_the_cpu_table(tmp_path):
    out = _run(["--quick"], tmp_path)
    lines = out.splitlines()
    (header_at,) = [i for i, line in enumerate(lines) if line.startswith("model ")]
    header = lines[header_at]
    positions = [header.index(title) for title in CPU_HEADER]
    assert positions == sorted(positions), header
    row = lines[header_at + 1].split()
    assert row[0] == "mobilenetv2_0.25" and row[1] == "1", row
    trtc_ms, ort_ms, mxnet_ms, rate, vs_ort, vs_mxnet = map(float, row[2:8])
    for value in (trtc_ms, ort_ms, mxnet_ms, rate, vs_ort, vs_mxnet):
        assert math.isfinite(value) and value > 0, row
    assert row[8] in ("ok", "over")
    assert math.isclose(rate, 1e3 / trtc_ms, rel_tol=0.01)
    # the GPU part either ran or says why not, and the exit status is 0 either way
    assert "GPU path (TensorRT)" in out or "GPU path not measured: " in out


def test_given_bundle_json(r18_bundle, tmp_path):
    doc = json.loads(_run([str(r18_bundle), "--quick", "--device", "cpu", "--json"], tmp_path))
    assert doc["gpu"] == [] and doc["gpu_not_measured"] is None
    (row,) = doc["cpu"]
    assert row["model"] == r18_bundle.name and row["batch"] == 1
    assert row["mxnet_ms"] is None and row["trtc_vs_mxnet"] is None  # no source model given
    assert row["trtc_ms"] > 0 and row["ort_ms"] > 0 and row["trtc_vs_ort"] > 0
    assert row["iterations"] == {"trtc": 3, "ORT": 3} and row["rounds"] == 3


def test_gpu_only_exits_0_with_the_reason(tmp_path):
    from trtc.runtime import cuda

    reason = cuda.gpu_unavailable_reason(0)
    out = _run(["--quick", "--device", "cuda"], tmp_path)
    if reason:
        assert out.strip() == f"runtime: not measured: GPU path: {reason}"
    else:  # a GPU machine: the table, or why this GPU cannot run the engines
        assert "bare ms" in out or "not measured: " in out
