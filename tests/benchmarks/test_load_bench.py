"""benchmarks/load.py --quick runs end to end on the tiny test models (real compiler, ONNX Runtime,
MXNet; every measurement in its own process) and prints its rows. No memory thresholds: on models
of a few kilobytes the megabytes are noise; what is checked is what must hold whatever the
machine."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "load.py"


def test_load_benchmark_quick(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json"], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout)
    assert [(r["bundle"], r["path"]) for r in rows] == [
        ("tiny.trtb", "cpu"), ("tiny.trtb", "gpu"), ("pair-mixed.trtb", "cpu"),
        ("pair-mixed.trtb", "gpu")]
    for row in rows:
        readers = set(row["peak_bytes"])
        assert readers == {"trtc", "executor", "old reader"}, row
        assert 0 < row["needed_bytes"] < row["file_bytes"], row
        for value in (row["trtc_vs_needed"], row["old_vs_needed"], row["over_executor_vs_needed"]):
            assert math.isfinite(value), row
        read = row["read_bytes"]
        if read["trtc"] is not None:  # /proc/self/io: every byte the loader read
            assert read["trtc"] >= row["needed_bytes"], row  # each needed member, once
            assert read["old reader"] >= row["file_bytes"], row  # the whole file
    cpu = rows[0]
    if cpu["read_bytes"]["trtc"] is not None:  # the CPU path reads the ONNX, not the plan
        assert cpu["read_bytes"]["trtc"] < cpu["file_bytes"] / 2, cpu

    spec = importlib.util.spec_from_file_location("trtc_load_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = module.table(rows).splitlines()
    assert lines[0].split()[:4] == ["bundle", "path", "file", "MB"] and len(lines) == 5
    assert all(line.split()[-1] in ("met", "MISSED") for line in lines[1:])
