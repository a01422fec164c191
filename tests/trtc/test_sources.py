"""Nothing lost, nothing silently wrong from the model's own files (issues 10 and 11): -o never
replaces the model or a file that is not a bundle; a missing weight, NaN weights, unreachable
nodes and bad --input specs are clear errors or reported decisions. Real MXNet and compiler."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import tiny
from trtc import CompileSettings, compile
from trtc.frontend import parse_input_spec
from trtc.runtime.errors import UsageError


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    """A private copy of the tiny model (tests edit it)."""
    src = tiny.export("tiny", tmp_path / "src")
    for suffix in ("-symbol.json", "-0000.params"):
        shutil.copy(src.with_name(f"tiny{suffix}"), tmp_path / f"tiny{suffix}")
    return tmp_path / "tiny-0000.params"


@pytest.mark.parametrize("target", ["tiny-0000.params", "tiny-symbol.json", "sub/../tiny-0000.params",
                                    "./tiny-symbol.json"])
def test_output_never_replaces_the_model(model: Path, target: str) -> None:
    (model.parent / "sub").mkdir(exist_ok=True)
    before = {p.name: p.read_bytes() for p in model.parent.glob("tiny-*")}
    cwd = os.getcwd()
    os.chdir(model.parent)
    try:
        with pytest.raises(UsageError, match="never overwrites its input"):
            compile(CompileSettings(params=model, output=Path(target)))
    finally:
        os.chdir(cwd)
    assert {p.name: p.read_bytes() for p in model.parent.glob("tiny-*")} == before


def test_output_never_replaces_a_file_that_is_not_a_bundle(model: Path) -> None:
    notes = model.parent / "notes.trtb"
    notes.write_text("my notes")
    with pytest.raises(UsageError, match="not a trtc bundle"):
        compile(CompileSettings(params=model, output=notes))
    assert notes.read_text() == "my notes"


def test_missing_weight_is_a_usage_error_naming_it(model: Path) -> None:
    import mxnet as mx

    params = mx.nd.load(str(model))
    dropped = sorted(k for k in params if k.endswith("_weight"))[1]
    del params[dropped]
    mx.nd.save(str(model), params)
    with pytest.raises(UsageError, match=f"lacks '{dropped.split(':', 1)[1]}'.*a weight, not an input"):
        compile(CompileSettings(params=model, output=model.parent / "m.trtb"))


def test_nonfinite_weights_are_refused_unless_allowed(model: Path) -> None:
    import mxnet as mx

    params = mx.nd.load(str(model))
    key = sorted(k for k in params if k.endswith("_bias"))[0]
    value = params[key].asnumpy()
    value[0] = np.nan
    params[key] = mx.nd.array(value)
    mx.nd.save(str(model), params)
    with pytest.raises(UsageError, match="NaN/Inf.*--allow-nonfinite-weights"):
        compile(CompileSettings(params=model, output=model.parent / "m.trtb"))
    result = compile(CompileSettings(params=model, output=model.parent / "m.trtb",
                                     allow_nonfinite_weights=True))
    assert result.output.exists()


def test_unreachable_nodes_are_ignored_and_reported(model: Path) -> None:
    symbol = model.with_name("tiny-symbol.json")
    doc = json.loads(symbol.read_text())
    conv = next(i for i, n in enumerate(doc["nodes"]) if n["op"] == "Convolution")
    doc["nodes"].append({"op": "relu", "name": "dangling_relu", "inputs": [[conv, 0, 0]]})
    doc["arg_nodes"] = [i for i, n in enumerate(doc["nodes"]) if n["op"] == "null"]
    doc.pop("node_row_ptr", None)
    symbol.write_text(json.dumps(doc))
    result = compile(CompileSettings(params=model, output=model.parent / "m.trtb"))
    assert any("dangling_relu" in note for note in result.report.notes)
    assert result.report.full


def test_malformed_symbol_is_a_usage_error_naming_the_file(model: Path) -> None:
    symbol = model.with_name("tiny-symbol.json")
    doc = json.loads(symbol.read_text())
    doc["nodes"][-1]["inputs"] = [[len(doc["nodes"]) + 5, 0, 0]]
    symbol.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match="tiny-symbol.json: node .* malformed"):
        compile(CompileSettings(params=model, output=model.parent / "m.trtb"))


@pytest.mark.parametrize("spec,expected", [
    ("data:1x3x224x224", ("data", (1, 3, 224, 224), None)),
    ("ids:1x128:int32", ("ids", (1, 128), "int32")),
    ("data:(1,3,8,8)", ("data", (1, 3, 8, 8), None)),
    ("x:2x4:float16", ("x", (2, 4), "float16")),
])
def test_input_spec_parses(spec, expected) -> None:
    assert parse_input_spec(spec) == expected


@pytest.mark.parametrize("spec,phrase", [
    ("data:1_6", "ASCII digits"), ("data:１x3", "ASCII digits"), ("data:1xx3", "ASCII digits"),
    ("data:", "ASCII digits"), ("data:0x3", "positive"), ("data:1x3:complex", "unknown dtype"),
    ("1x3", "NAME:SHAPE"), ("data:100000x100000x100000", "more than trtc verifies"),
])
def test_input_spec_errors(spec, phrase) -> None:
    with pytest.raises(UsageError, match=phrase):
        parse_input_spec(spec)


def test_cli_output_is_trtc_only(model: Path) -> None:
    """No MXNet/ONNX Runtime/graphsurgeon log line among trtc's; stdout holds the path only."""
    out = model.parent / "m.trtb"
    proc = subprocess.run([sys.executable, "-m", "trtc.cli", "compile", str(model), "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    foreign = [l for l in proc.stderr.splitlines()
               if l.strip() and not l.startswith(("[trtc]", "partition:", "  ", "ops kept"))]
    assert not foreign, foreign
