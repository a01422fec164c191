"""benchmarks/coverage.py runs as users run it: `--quick` compiles its models and writes a
markdown table with one numeric row per model and a totals line. No timing thresholds."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "coverage.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trtc_coverage_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cells(line: str):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_quick_writes_a_row_per_model_and_totals(tmp_path):
    coverage = _script()
    out = tmp_path / "docs" / "coverage.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert out.exists()
    text = out.read_text()
    assert text.startswith("# Model coverage")
    assert "benchmarks/coverage.py --quick" in text and "fp32" in text
    assert "`--verify-inputs`: `ops_block`" in text  # its real-looking ids fed the gate

    lines = text.splitlines()
    (header_at,) = [i for i, l in enumerate(lines) if l.startswith("| model |")]
    header = _cells(lines[header_at])
    assert header == [name for name, _ in coverage.COLUMNS]
    rows = {}
    for line in lines[header_at + 2:]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, _cells(line)))
        rows[cells["model"].strip("*`")] = cells
    assert sorted(rows) == sorted(coverage.QUICK_MODELS)
    for name, cells in rows.items():
        ops, in_engines, in_ort, in_mxnet = (
            int(cells[k]) for k in ("ops", "in engines", "in ONNX Runtime", "in MXNet"))
        assert ops > 0 and in_engines + in_ort + in_mxnet == ops, (name, cells)
        assert int(cells["engines"]) >= 1
        # the quick models run wholly in engines: nothing kept out, no MXNet at run time
        assert (in_ort, in_mxnet) == (0, 0), (name, cells)
        assert cells["runtime needs MXNet"] == "no", (name, cells)
        assert cells["kept out of engines because"] == "-", (name, cells)
        assert 0 <= float(cells["output err"]) <= 1e-4  # the fp32 gate's tolerance
        assert 0 <= float(cells["engine err"]) <= 1e-4
        assert float(cells["compile s"]) > 0 and float(cells["bundle MB"]) > 0
        if name in coverage.FAMILY_MODELS:  # an issue-10 model, in italics, typed inputs
            assert cells["model"] == f"*`{name}`*"
            assert cells["input"] == "1x16 int32, 1x16x32", cells["input"]
        else:
            assert re.fullmatch(r"\d+x3x\d+x\d+", cells["input"]), cells["input"]

    (totals,) = [l for l in lines if l.startswith("**Totals:**")]
    total_ops = sum(int(c["ops"]) for c in rows.values())
    engine_ops = sum(int(c["in engines"]) for c in rows.values())
    assert f"{len(rows)} models ok, 0 failed" in totals
    assert f"{engine_ops} of {total_ops} MXNet ops" in totals
    assert "0 in ONNX Runtime stages, 0 in MXNet stages" in totals
    assert f"models needing MXNet at run time: 0 of {len(rows)};" in totals
    assert "## Ops that run in MXNet" in text
    assert "None: no bundle in the table needs MXNet at run time." in text
    assert "## Failures" in text and "None." in text
    # the same table goes to stdout as it is made
    assert all(f"`{name}`" in proc.stdout for name in rows) and "**Totals:**" in proc.stdout


def test_issue10_models_are_known_and_exported_from_the_families_module(tmp_path):
    coverage = _script()
    fam = coverage.families_module()
    assert set(coverage.FAMILY_MODELS) == set(fam.MODELS)
    from trtc.zoo import available_models

    assert not set(coverage.FAMILY_MODELS) & set(available_models())  # no name is ambiguous
    exported = coverage.export_model("ops_block", tmp_path)
    assert exported["params"].exists() and exported["verify_inputs"].exists()
    assert exported["dtypes"] == ["int32", "float32"]
    assert coverage.export_model("reused_block", tmp_path)["verify_inputs"] is None


def test_error_cells_say_how_a_tensor_was_judged():
    coverage = _script()
    assert coverage._output_err({"output_err": 0.0, "input_independent": True}) == "0.0e+00 const"
    assert coverage._output_err({"output_err": 0.5, "output_ties": 1}) == "5.0e-01 ties"
    assert coverage._output_err({"output_err": 1e-7, "output_sorted": True}) == "1.0e-07 s"
    assert coverage._output_err({"output_err": None}) == "-"


def test_a_model_that_does_not_finish_is_a_failed_row(tmp_path):
    coverage = _script()
    row = coverage.run_one("squeezenet1.1", tmp_path / "work", timeout_s=0.5)
    assert row["ok"] is False and row["error"] == "timed out after 0.5 s"
    line = coverage.failure_line(row)
    assert line.startswith("- `squeezenet1.1` (SqueezeNet): timed out")


def test_reasons_are_counted_per_code_and_executor_with_their_op_types():
    from trtc.partition import Decision

    coverage = _script()
    ort = {"runs_in": "onnxruntime"}
    decisions = [Decision("n1", "tile", "parser_rejected", **ort),
                 Decision("n2", "tile", "parser_rejected", **ort),
                 Decision("n3", "where", "parser_rejected", **ort),
                 Decision("n4", "_contrib_box_nms", "onnx_export_differs", runs_in="mxnet",
                          mxnet_reason="no exact ONNX for it"),
                 Decision("n5", "Reshape", "parser_rejected", runs_in="mxnet",
                          mxnet_reason="its ONNX Runtime stage residual0 was 0.5 relative off")]
    assert coverage.reasons_summary(decisions) == (
        "3 parser_rejected (tile, where) -> ORT, 1 onnx_export_differs (_contrib_box_nms) -> "
        "MXNet, 1 parser_rejected (Reshape) -> MXNet")
    assert coverage.reasons_summary([]) == ""
    assert [(d["node"], d["op"], d["why_not_onnxruntime"])
            for d in coverage.mxnet_ops_detail(decisions)] == [
        ("n4", "_contrib_box_nms", "no exact ONNX for it"),
        ("n5", "Reshape", "its ONNX Runtime stage residual0 was 0.5 relative off")]


def test_a_model_needing_mxnet_says_yes_and_why():
    coverage = _script()
    row = {"model": "m", "family": "f", "ok": True, "input": [[1, 3]], "total_ops": 4,
           "engine_ops": 2, "onnx_ops": 1, "mxnet_ops": 1, "engines": 1, "needs_mxnet": True,
           "mxnet_op_types": ["_contrib_box_nms"], "reasons": "x",
           "mxnet_decisions": [{"node": "nms0", "op": "_contrib_box_nms",
                                "reason": "onnx_export_differs",
                                "why_not_onnxruntime": "no exact ONNX for it"}],
           "output_err": 0.0, "boundary_err": 0.0, "compile_s": 1.0, "bundle_mb": 1.0}
    header = [name for name, _ in coverage.COLUMNS]
    cells = dict(zip(header, _cells(coverage.table_row(row))))
    assert cells["runtime needs MXNet"] == "**yes** (_contrib_box_nms)"
    assert (cells["in ONNX Runtime"], cells["in MXNet"]) == ("1", "1")
    clean = dict(row, model="n", needs_mxnet=False, mxnet_ops=0, mxnet_decisions=[])
    t = coverage.totals([row, clean], 1.0)
    assert "models needing MXNet at run time: 1 of 2 (m)" in coverage.totals_line(t)
    assert coverage.mxnet_section([row, clean])[2] == (
        "- `m`: nms0 (`_contrib_box_nms`), onnx_export_differs; not in ONNX Runtime because: "
        "no exact ONNX for it")
