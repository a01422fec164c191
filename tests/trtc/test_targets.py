"""Bundles for the targets you deploy to (issue 15, part 1): --target gpu holds the engines only
(verified on their ONNX first), --target cpu the ONNX only (no TensorRT needed to compile or run),
the default both. Real compiler, real ONNX Runtime; the GPU path's member selection is checked
without executing engines."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from models import tiny
from trtc import CompileSettings, compile
from trtc.frontend import load_graph, resolve_model_files
from trtc.runtime import load
from trtc.runtime.bundle import read_bundle
from trtc.runtime.errors import IncompatibleError, UsageError
from trtc.verify import mxnet_forward


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Path:
    return tiny.export("pair", tmp_path_factory.mktemp("targets"))


def _members(path: Path) -> list:
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()


@pytest.mark.parametrize("target", ["gpu", "cpu", "all"])
def test_each_target_holds_what_its_path_needs(pair, tmp_path, target):
    out = tmp_path / f"{target}.trtb"
    result = compile(CompileSettings(params=pair, output=out, exclude_ops=("BatchNorm",), target=target,
                                     residual="mxnet"))
    names = _members(out)
    manifest = read_bundle(out).manifest
    plans = [n for n in names if n.startswith("engines/")]
    onnx = [n for n in names if n.startswith("onnx/")]
    assert "residual/params.npz" in names  # residual MXNet stages travel with every target
    if target == "gpu":
        assert manifest["paths"] == ["gpu"] and plans and not onnx
        assert all(c.ok for c in result.checks)  # verified on the ONNX before it was dropped
        with pytest.raises(IncompatibleError, match="no CPU path .*--target all or --target cpu"):
            load(out, device="cpu")
    elif target == "cpu":
        assert manifest["paths"] == ["cpu"] and onnx and not plans
        assert not manifest["requires"]["gpu_path"]
        with pytest.raises(IncompatibleError, match="no GPU path .*--target all or --target gpu"):
            load(out, device="cuda")
    else:
        assert manifest["paths"] == ["cpu", "gpu"] and plans and onnx
    if target != "gpu":
        feeds = tiny.random_feeds("pair", 4)
        graph = load_graph(*resolve_model_files(pair))
        ref = mxnet_forward(graph, feeds)[graph.outputs[0]]
        got = load(out, device="auto")(**feeds)[graph.outputs[0]]
        assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_gpu_target_stores_the_weights_once(zoo_params, compiled, tmp_path):
    params = zoo_params("resnet18_v1")
    out = tmp_path / "gpu.trtb"
    compile(CompileSettings(params=params, output=out, target="gpu"))
    both = compiled("resnet18_v1").stat().st_size
    assert out.stat().st_size < 0.55 * both
    assert out.stat().st_size < 1.05 * params.stat().st_size


def test_cpu_target_compiles_without_tensorrt(pair, tmp_path):
    out = tmp_path / "cpu.trtb"
    code = (
        "import sys; sys.modules['tensorrt'] = None; sys.modules['tensorrt_rtx'] = None\n"
        "from pathlib import Path; from trtc import CompileSettings, compile\n"
        f"compile(CompileSettings(params=Path({str(pair)!r}), output=Path({str(out)!r}), target='cpu'))\n"
        "import trtc.runtime as rt, numpy as np\n"
        f"m = rt.load({str(out)!r})\n"
        "print(m.device, sorted(m(**{n: np.zeros(s.shape, s.dtype) for n, s in m.inputs.items()})))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("cpu ")


def test_bad_target_is_a_usage_error(pair, tmp_path):
    with pytest.raises(UsageError, match="--target 'tpu': choose all"):
        compile(CompileSettings(params=pair, output=tmp_path / "x.trtb", target="tpu"))


def test_inspect_shows_paths_and_weight_bytes(pair, tmp_path):
    from typer.testing import CliRunner

    from trtc.cli import app

    out = tmp_path / "g.trtb"
    compile(CompileSettings(params=pair, output=out, target="gpu"))
    result = CliRunner().invoke(app, ["inspect", str(out)])
    assert result.exit_code == 0, result.output
    assert "paths:   gpu (engine plans," in result.output
