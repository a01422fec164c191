"""benchmarks/runtime.py runs as users run it: a smoke test of its table and JSON, no timing
thresholds (CI machines are too noisy for those)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "runtime.py"
CPU_HEADER = ["model", "batch", "trtc ms", "ORT ms", "MXNet ms", "samples/s", "trtc/ORT",
              "trtc/MXNet"]
DYNAMIC_HEADER = ["dynamic model", "batch", "range", "static ms", "dynamic ms", "static/s",
                  "dynamic/s", "dyn/static", "ORT dyn/static"]


def _run(args: List[str], cwd: Path) -> str:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory) -> str:
    return _run(["--quick"], tmp_path_factory.mktemp("quick"))


def test_quick_prints_the_cpu_table(quick_out):
    out = quick_out
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


def test_quick_prints_the_dynamic_table(quick_out):
    """--quick includes the dynamic-vs-static table: one 1..2 bundle against static 1 and 2."""
    lines = quick_out.splitlines()
    (header_at,) = [i for i, line in enumerate(lines) if line.startswith("dynamic model ")]
    header = lines[header_at]
    positions = [header.index(title) for title in DYNAMIC_HEADER]
    assert positions == sorted(positions), header
    rows = [line.split() for line in lines[header_at + 1:header_at + 3]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("mobilenetv2_0.25", "1", "1..2"),
                                                   ("mobilenetv2_0.25", "2", "1..2")], rows
    for row in rows:
        batch = int(row[1])
        static_ms, dynamic_ms, static_rate, dynamic_rate, ratio, ort_ratio = map(float, row[3:9])
        for value in (static_ms, dynamic_ms, static_rate, dynamic_rate, ratio, ort_ratio):
            assert math.isfinite(value) and value > 0, row
        assert math.isclose(static_rate, batch * 1e3 / static_ms, rel_tol=0.01), row
        assert math.isclose(dynamic_rate, batch * 1e3 / dynamic_ms, rel_tol=0.01), row
        assert row[9] in ("ok", "over"), row


def test_dynamic_only_json(tmp_path):
    doc = json.loads(_run(["--quick", "--dynamic-only", "--json"], tmp_path))
    assert doc["cpu"] == [] and doc["gpu"] == [] and doc["dynamic_not_measured"] is None
    assert [(r["model"], r["batch"], r["range"], r["opt_batch"]) for r in doc["dynamic"]] == [
        ("mobilenetv2_0.25", 1, "1..2", 2), ("mobilenetv2_0.25", 2, "1..2", 2)]
    for row in doc["dynamic"]:
        assert row["static_ms"] > 0 and row["dynamic_ms"] > 0
        assert row["dynamic_vs_static"] > 0 and row["ort_dynamic_vs_static"] > 0
        assert row["iterations"] == {"static": 3, "dynamic": 3, "static ORT": 3,
                                     "dynamic ORT": 3} and row["rounds"] == 3
        # the same model, the same inputs: the dynamic bundle computes what the static one does
        assert max(row["dynamic_vs_static_max_rel"]) < 1e-4, row


def test_given_dynamic_bundle_runs_at_its_opt_batch(zoo_params, tmp_path):
    """A given dynamic bundle (-1 in its input shape) is fed at its opt shape."""
    from trtc import CompileSettings, compile

    bundle = tmp_path / "dyn.trtb"
    compile(CompileSettings(params=zoo_params("mobilenetv2_0.25"), output=bundle,
                            inputs={"data": ((1, 4), 3, 224, 224)},
                            opt_shapes={"data": (3, 3, 224, 224)}))
    doc = json.loads(_run([str(bundle), "--quick", "--device", "cpu", "--json"], tmp_path))
    (row,) = doc["cpu"]
    assert row["batch"] == 3 and row["trtc_ms"] > 0 and row["trtc_vs_ort"] > 0
    assert math.isclose(row["samples_per_s"], 3e3 / row["trtc_ms"], rel_tol=0.01)


def test_given_bundle_json(r18_bundle, tmp_path):
    doc = json.loads(_run([str(r18_bundle), "--quick", "--device", "cpu", "--json"], tmp_path))
    assert doc["gpu"] == [] and doc["gpu_not_measured"] is None
    # the dynamic table compiles from a source model: not for given bundles, and it says so
    assert doc["dynamic"] == [] and "given bundles" in doc["dynamic_not_measured"]
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


def test_quick_residual_only_compares_ort_and_mxnet_stages(tmp_path):
    """--quick --residual-only: the quick model compiled twice with its Flatten out of the
    engine, once in an ONNX Runtime stage and once in an MXNet stage; the residual table alone."""
    doc = json.loads(_run(["--quick", "--residual-only", "--json"], tmp_path))
    assert doc["cpu"] == [] and doc["gpu"] == [] and doc["dynamic"] == []
    assert doc["residual_not_measured"] is None
    (row,) = doc["residual"]
    assert row["model"] == "mobilenetv2_0.25" and row["rounds"] == 3
    assert row["iterations"] == {"ORT stages": 3, "MXNet stages": 3}
    assert row["stages_ort"]["onnx"] >= 1 and row["stages_ort"]["residual"] == 0
    assert row["stages_mxnet"]["residual"] >= 1 and row["stages_mxnet"]["onnx"] == 0
    assert row["ort_needs_mxnet"] is False and row["mxnet_needs_mxnet"] is True
    assert row["ort_ms"] > 0 and row["mxnet_ms"] > 0 and row["ort_vs_mxnet"] > 0
    assert len(row["ort_vs_mxnet_rounds"]) == 3 and row["verdict"] in ("ok", "noise", "over")
    assert row["outside_ort_ms"] > 0 and row["outside_mxnet_ms"] > 0
    assert max(row["ort_vs_mxnet_max_rel"]) < 1e-4  # Flatten: the same numbers either way

    # the printed table, from the same rows (one run: the test stays well under a minute)
    import importlib.util

    spec = importlib.util.spec_from_file_location("trtc_runtime_bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    header, line = bench.residual_table(doc["residual"]).splitlines()
    assert header.startswith("residual model ") and "goal ORT/MX <= 1.0" in header
    cells = line.split()
    assert cells[0] == "mobilenetv2_0.25" and cells[1] == "1E+1O" and cells[2] == "1E+1M", cells
    assert cells[-1] == row["verdict"], cells
