"""benchmarks/precision.py --quick runs end to end (real MXNet, mxnet.onnx, TensorRT-RTX, ONNX
Runtime): an fp32, an fp16 and an int8 bundle of one small model, with sizes, error vs MXNet fp32,
CPU latency and compile time. No timing thresholds: the numbers are the script's output."""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "precision.py"


@functools.lru_cache(maxsize=None)
def _quick_doc() -> Dict[str, Any]:
    """One `--quick --json` run, shared by the tests of this file."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json"], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_precision_benchmark_quick_json():
    doc = _quick_doc()
    assert "random" in doc["note"] and "not representative" in doc["note"]
    assert doc["calibration_samples"] == 2 and doc["eval_samples"] == 4
    rows = {r["precision"]: r for r in doc["rows"]}
    assert [(r["model"], r["precision"]) for r in doc["rows"]] == [
        ("mobilenetv2_0.25", p) for p in ("fp32", "fp16", "int8")]
    for row in rows.values():
        assert row["engines"] >= 1 and 0 < row["engine_bytes"] < row["bundle_bytes"]
        assert row["compile_s"] > 0 and row["cpu_ms"] > 0 and len(row["cpu_round_ms"]) == 3
        assert math.isfinite(row["max_relative"]) and 0 <= row["top1_agreement"] <= 1
    # each precision within its accuracy-gate tolerance on held-out inputs (README: 1e-4, 2e-2, 0.15)
    assert rows["fp32"]["max_relative"] < 1e-4
    assert rows["fp16"]["max_relative"] < 2e-2
    assert rows["int8"]["max_relative"] < 0.15
    assert rows["fp32"]["engine_vs_fp32"] == 1.0 and rows["fp32"]["cpu_vs_fp32"] == 1.0
    assert rows["fp16"]["engine_bytes"] < rows["fp32"]["engine_bytes"]
    assert rows["int8"]["int8_layers"] > 0 and rows["fp32"]["int8_layers"] == 0


def test_precision_benchmark_quick_table():
    """The markdown table, printed in-process from one quick run's rows (a second run would
    double the test's time)."""
    spec = importlib.util.spec_from_file_location("trtc_precision_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    buffer = io.StringIO()
    script.print_table(_quick_doc()["rows"], buffer)
    lines = buffer.getvalue().splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == script.HEADER
    assert set(lines[1]) <= set("|-")
    cells = [[c.strip() for c in l.strip("|").split("|")] for l in lines[2:]]
    assert [c[:2] for c in cells] == [["mobilenetv2_0.25", p] for p in ("fp32", "fp16", "int8")]
    for c in cells:
        assert all(float(x) > 0 for x in c[3:7] + c[8:11]), c
        assert c[7].endswith("%")
