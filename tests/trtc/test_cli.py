"""The CLI's main flows through typer's CliRunner (issue 2 commands, issue 3 flags)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trtc.cli import app

runner = CliRunner()


def test_example_compile_inspect(tmp_path):
    result = runner.invoke(app, ["example", "resnet18_v2", "-o", str(tmp_path / "models")])
    assert result.exit_code == 0, result.output
    params = tmp_path / "models" / "resnet18_v2-0000.params"
    assert params.exists() and (tmp_path / "models" / "resnet18_v2-symbol.json").exists()
    out = tmp_path / "r18.trtb"
    result = runner.invoke(app, ["compile", str(params), "--fp16", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists()
    assert "partition: 69/69 MXNet ops in 1 TensorRT engine(s)" in result.output
    result = runner.invoke(app, ["inspect", str(out)])
    assert result.exit_code == 0 and "tensorrt_rtx" in result.output and "fp16" in result.output
    result = runner.invoke(app, ["inspect", str(out), "--json"])
    doc = json.loads(result.stdout)
    assert doc["format_version"] == 1
    assert doc["inputs"] == [{"name": "data", "shape": [1, 3, 224, 224], "dtype": "float32"}]
    (stage,) = doc["stages"]
    for key in ("kind", "name", "inputs", "outputs", "backend", "backend_version", "precision",
                "compute_capabilities", "bytes", "sha256"):
        assert key in stage
    result = runner.invoke(app, ["run", str(out), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outputs"]
    # issue 21: run says which inputs it made up
    assert json.loads(result.stdout)["inputs"] == {
        "data": "random uniform [0, 1), 1x3x224x224 float32 (seed 0)"}
    result = runner.invoke(app, ["run", str(out), "--device", "cpu"])
    assert "input data: random uniform [0, 1), 1x3x224x224 float32 (seed 0)" in result.stderr


def test_compile_json_and_dry_run(zoo_params):
    result = runner.invoke(app, ["compile", str(zoo_params("resnet18_v2")), "--dry-run",
                                 "--exclude-op", "Pooling", "--json", "-q"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["output"] is None
    assert doc["partition"]["engine_segments"] == 2
    reasons = {d["reason"] for d in doc["partition"]["residual"]}
    assert reasons == {"excluded", "below_min_segment_size"}


def test_require_full_fails_with_report(zoo_params):
    result = runner.invoke(app, ["compile", str(zoo_params("resnet18_v2")), "--dry-run",
                                 "--exclude-op", "Pooling", "--require-full", "-q"])
    assert result.exit_code == 1
    assert "ops kept out of engines" in result.output and "error: --require-full" in result.output
    assert "Traceback" not in result.output


def test_inspect_graph_svg(compiled, tmp_path):
    bundle = compiled("resnet18_v2", exclude_ops=("Pooling",))
    svg = tmp_path / "r18.svg"
    dot = tmp_path / "r18.dot"
    assert runner.invoke(app, ["inspect", str(bundle), "--graph", str(dot)]).exit_code == 0
    text = dot.read_text()
    assert "engine0" in text and "engine1" in text and "Pooling" in text
    result = runner.invoke(app, ["inspect", str(bundle), "--graph", str(svg)])
    if result.exit_code == 2 and "needs Graphviz" in result.output:
        pytest.skip("no dot program (install graphviz or graphviz-pure)")
    assert result.exit_code == 0, result.output
    assert svg.read_text().lstrip().startswith("<?xml") or "<svg" in svg.read_text()


def test_bench_batch_must_be_in_the_bundles_range(r18_bundle):
    result = runner.invoke(app, ["bench", str(r18_bundle), "--batch", "8", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: --batch 8: ") and "takes data batch 1;" in line
    assert "trtc compile resnet18_v2-0000.params --input data:1..8x3x224x224" in line
    assert runner.invoke(app, ["bench", str(r18_bundle), "--batch", "0"]).exit_code == 2


def test_bench_json(r18_bundle):
    result = runner.invoke(app, ["bench", str(r18_bundle), "--batch", "1", "--device", "cpu",
                                 "--warmup", "1", "--iterations", "4", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["device"], doc["batch"], doc["warmup"], doc["iterations"]) == ("cpu", 1, 1, 4)
    assert 0 < doc["p50_ms"] <= doc["p99_ms"] and doc["samples_per_s"] > 0
    result = runner.invoke(app, ["bench", str(r18_bundle), "--device", "cpu", "--warmup", "0",
                                 "--iterations", "2"])
    assert result.exit_code == 0, result.output
    assert "device cpu  batch 1  " in result.output and "samples/s  p50 " in result.output
    # issue 21/23: not silent while it works, and the first call (one-time costs) shown apart
    assert "[trtc] cpu: first call " in result.stderr and "first call " in result.stdout
    assert doc["first_call_ms"] > 0


def test_no_verify_leaves_a_trace(zoo_params, tmp_path):
    """Issue 21: --no-verify was recorded nowhere. Now: a warning at compile time, verified:
    false in the manifest and in --json, and a line in inspect."""
    out = tmp_path / "nv.trtb"
    result = runner.invoke(app, ["compile", str(zoo_params("resnet18_v2")), "-o", str(out),
                                 "--no-verify", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verified"] is False
    assert "--no-verify: the bundle was not compared with MXNet" in result.stderr
    shown = runner.invoke(app, ["inspect", str(out)])
    assert "verified: NO" in shown.stdout
    assert json.loads(runner.invoke(app, ["inspect", str(out), "--json"]).stdout)["verified"] is False


def test_version():
    from trtc import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"trtc {__version__}"
