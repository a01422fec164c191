"""benchmarks/serve.py --quick runs as users run it, against the real tritonserver: one run (JSON),
its rows and goals checked for shape and sanity, and the printed table made from that result. No
timing thresholds (a shared CPU machine is too noisy for those). Skips with the script's exact
reason where no tritonserver can start here."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serve.py"
HEADER = ["path", "protocol", "batching", "conc", "samples/s", "p50 ms", "p99 ms", "avg batch",
          "requests", "vs direct b4", "dyn/off"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json"], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path_factory.mktemp("serve-bench"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    if doc.get("not_measured"):
        pytest.skip(doc["not_measured"])
    return doc


def _module() -> Any:
    module = sys.modules.get("trtc_bench_serve")
    if module is None:  # registered first: its dataclasses look their module up
        spec = importlib.util.spec_from_file_location("trtc_bench_serve", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def test_quick_measures_direct_and_triton_rows(quick):
    direct = [r for r in quick["rows"] if r["path"] == "direct"]
    assert [(r["batching"], r["concurrency"]) for r in direct] == [("b1", 1), ("b4", 1)]
    assert direct[1]["samples_per_call"] == 4 and direct[1]["vs_direct_batched"] == 1.0
    for row in direct:
        assert row["samples_per_s"] > 0 and row["requests"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
    if quick["triton_not_measured"]:
        pytest.skip(quick["triton_not_measured"])
    triton = [r for r in quick["rows"] if r["path"] == "Triton"]
    assert sorted((r["protocol"], r["batching"], r["concurrency"]) for r in triton) == sorted(
        (p, b, c) for p in ("HTTP", "gRPC") for b in ("dynamic", "off") for c in (1, 4))
    for row in triton:
        assert row["requests"] > 0, row
        for key in ("samples_per_s", "p50_ms", "p99_ms", "avg_batch", "vs_direct_batched"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
        assert row["p99_ms"] >= row["p50_ms"]
        if row["batching"] == "off":  # max_batch_size 0: every request runs alone
            assert row["avg_batch"] == 1.0 and row["dynamic_vs_off"] == 1.0
        else:
            assert 1.0 <= row["avg_batch"] <= 4.0 and row["dynamic_vs_off"] > 0
    assert quick["server"]["startup_s"] > 0
    goals = quick["goals"]
    assert goals["vs_direct_batched"] == {}  # --quick runs no concurrency 8
    assert set(goals["dynamic_beats_batch1"]) == {"HTTP c4", "gRPC c4"}
    assert all(isinstance(g["ok"], bool) for g in goals["dynamic_beats_batch1"].values())


def test_quick_table(quick):
    text = _module().table(quick)
    lines = text.splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.startswith("path ")]
    positions = [lines[at].index(title) for title in HEADER]
    assert positions == sorted(positions), lines[at]
    body = lines[at + 1:at + 1 + len(quick["rows"])]
    assert [line.split()[0] for line in body] == [r["path"] for r in quick["rows"]]
    for line, row in zip(body, quick["rows"]):
        assert math.isclose(float(line.split()[4]), row["samples_per_s"], abs_tol=0.06), line
    if quick["triton_not_measured"]:
        assert lines[-1] == f"Triton not measured: {quick['triton_not_measured']}"
    else:
        assert any(line.startswith("goal 1, ") and "not run (no concurrency 8)" in line
                   for line in lines)
        assert any(line.startswith("goal 2, ") and "HTTP c4" in line and "gRPC c4" in line
                   for line in lines)
