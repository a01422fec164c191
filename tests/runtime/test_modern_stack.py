"""A runtime that needs no MXNet (issue 20): ``pip install 'trtc[cpu]'`` runs engine and ONNX
Runtime bundles on Python 3.12 and 3.13 with numpy 2, and the CLI's runtime commands work there.

Each Python gets a runtime-only venv (conftest ``runtime_python``, tests/runtime_venvs.py: a
non-editable install of this checkout with the ``cpu`` and ``sign`` extras, made once and kept
across sessions); a Python that is not installed skips with the reason. Bundles run there must
give what they give here (the 3.11 dev venv, numpy 1.x) within 1e-6. The compile side in such an
install: one line saying what to install. The last tests need no other Python: the runtime
commands and the same messages with MXNet missing or broken in this venv.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pytest

import trtc.runtime as rt
from models import tiny
from runtime_venvs import clean_env, run_in_runtime_venv

VERSIONS = ["3.12", "3.13"]
DATA = Path(__file__).resolve().parents[1] / "data"
ENGINE_ONLY = ["tiny-fp32.trtb", "wide-fp32-cpu.trtb"]  # engine stages only (wide: --target cpu)
RESIDUAL = DATA / "pair-mixed-dyn.trtb"  # has a residual MXNet stage (BatchNorm)
COMPILE_SIDE = ["mxnet", "onnx", "onnx_graphsurgeon"]
INSTALL_COMPILER = "pip install 'trtc[compile]'"


@pytest.fixture(scope="module")
def onnx_stage_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pair`` compiled here with BatchNorm kept out of the engines (default --residual
    onnxruntime): engine, ONNX Runtime stage, engine; no MXNet needed to run it."""
    bundle = tiny.bundle("pair", tmp_path_factory, exclude_ops=("BatchNorm",),
                         residual="onnxruntime")
    kinds = [s["kind"] for s in rt.load(bundle, device="cpu").manifest["stages"]]
    assert kinds == ["engine", "onnx", "engine"], kinds
    return bundle


@pytest.fixture(scope="module", params=VERSIONS)
def python(request: pytest.FixtureRequest, runtime_python) -> Path:
    """The runtime-only venv's python of each version."""
    return runtime_python(request.param)


def trtc_cli(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``trtc ARGS`` with the venv's console script, in a clean environment."""
    return subprocess.run([str(python.parent / "trtc"), *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=clean_env(), cwd=cwd)


def one_error_line(proc: subprocess.CompletedProcess, code: int) -> str:
    """The command exited with ``code`` and its stderr is one ``error:`` line (no traceback)."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


def feeds_for(bundle: Path, seed: int = 0) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    model = rt.load(bundle, device="cpu")
    return {name: rng.random(spec.shape).astype(spec.dtype) for name, spec in model.inputs.items()}


def assert_same(got: Dict[str, np.ndarray], expected: Dict[str, np.ndarray]) -> None:
    assert list(got) == list(expected)
    for name in expected:
        assert got[name].shape == expected[name].shape and got[name].dtype == expected[name].dtype
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-6, err_msg=name)


# ----------------------------------------------------------------------------------------------
# on Python 3.12 / 3.13 with numpy 2
# ----------------------------------------------------------------------------------------------
def test_runtime_only_environment(python: Path, tmp_path: Path) -> None:
    """numpy 2, trtc installed (not this checkout), nothing compile-side; typer is there."""
    script = textwrap.dedent(
        """
        import importlib.util, json, sys, numpy, trtc, trtc.runtime, trtc.cli
        print(json.dumps({
            "python": "%d.%d" % sys.version_info[:2], "numpy": numpy.__version__,
            "prefix": sys.prefix, "trtc": trtc.__file__,
            "found": {m: importlib.util.find_spec(m) is not None for m in
                      ("mxnet", "onnx", "onnx_graphsurgeon", "typer", "onnxruntime", "cryptography")},
            "imported": sorted(m for m in sys.modules if m.split(".")[0] in ("mxnet", "onnx")),
        }))
        """
    )
    proc = subprocess.run([str(python), "-I", "-c", script], capture_output=True, text=True,
                          timeout=120, env=clean_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert python.parent.parent.name == info["python"]
    assert int(info["numpy"].split(".")[0]) >= 2, info["numpy"]
    assert Path(info["trtc"]).is_relative_to(info["prefix"]), info  # the install, not the repo
    assert info["found"] == {"mxnet": False, "onnx": False, "onnx_graphsurgeon": False,
                             "typer": True, "onnxruntime": True, "cryptography": True}
    assert info["imported"] == []


@pytest.mark.parametrize("name", ENGINE_ONLY)
def test_engine_bundle_gives_what_it_gives_here(python: Path, name: str) -> None:
    bundle = DATA / name
    feeds = feeds_for(bundle)
    expected = rt.load(bundle, device="cpu")(**feeds)
    assert_same(run_in_runtime_venv(python, bundle, feeds), expected)


def test_onnx_runtime_stage_bundle_gives_what_it_gives_here(python: Path, onnx_stage_bundle: Path,
                                                             tmp_path: Path) -> None:
    feeds = feeds_for(onnx_stage_bundle)
    expected = rt.load(onnx_stage_bundle, device="cpu")(**feeds)
    assert_same(run_in_runtime_venv(python, onnx_stage_bundle, feeds), expected)
    inspect = trtc_cli(python, "inspect", onnx_stage_bundle, "--json", cwd=tmp_path)
    assert inspect.returncode == 0, inspect.stderr
    assert [s["kind"] for s in json.loads(inspect.stdout)["stages"]] == ["engine", "onnx", "engine"]
    run = trtc_cli(python, "run", onnx_stage_bundle, "--device", "cpu", cwd=tmp_path)
    assert run.returncode == 0, run.stderr


def test_cli_runtime_commands(python: Path, tmp_path: Path) -> None:
    bundle = DATA / "tiny-fp32.trtb"
    help_ = trtc_cli(python, "--help", cwd=tmp_path)
    assert help_.returncode == 0 and "inspect" in help_.stdout, help_.stderr

    inspect = trtc_cli(python, "inspect", bundle, cwd=tmp_path)
    assert inspect.returncode == 0, inspect.stderr
    assert "trtc bundle format v" in inspect.stdout and "engine0" in inspect.stdout
    summary = json.loads(trtc_cli(python, "inspect", bundle, "--json", cwd=tmp_path).stdout)
    assert [s["kind"] for s in summary["stages"]] == ["engine"]

    feeds = feeds_for(bundle, seed=1)
    np.save(tmp_path / "data.npy", feeds["data"])
    run = trtc_cli(python, "run", bundle, "--device", "cpu", "--input",
                   f"data={tmp_path / 'data.npy'}", "--save", tmp_path / "out.npz", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "tiny_conv2_fwd_output: shape (1, 4, 16, 16) float32" in run.stdout
    with np.load(tmp_path / "out.npz") as saved:
        assert_same({k: saved[k] for k in saved.files}, rt.load(bundle, device="cpu")(**feeds))

    bench = trtc_cli(python, "bench", bundle, "--device", "cpu", "--iterations", "3",
                     "--warmup", "1", "--json", cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr
    result = json.loads(bench.stdout)
    assert result["device"] == "cpu" and result["iterations"] == 3 and result["samples_per_s"] > 0


def test_cli_verify(python: Path, tmp_path: Path) -> None:
    """A bundle signed here verifies there (exit 0), an unsigned one is refused (exit 3); a key
    made and a bundle signed there verify here. Without cryptography: one line, exit 4."""
    rt.generate_keypair(tmp_path / "here.pem", tmp_path / "here.pub")
    signed, unsigned = tmp_path / "signed.trtb", tmp_path / "unsigned.trtb"
    shutil.copy(DATA / "tiny-fp32.trtb", signed)
    shutil.copy(DATA / "tiny-fp32.trtb", unsigned)
    fingerprint = rt.sign_bundle(signed, tmp_path / "here.pem")

    ok = trtc_cli(python, "verify", signed, "--key", tmp_path / "here.pub", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"{signed}: signature OK, ed25519 key {fingerprint}"
    assert "unsigned" in one_error_line(
        trtc_cli(python, "verify", unsigned, "--key", tmp_path / "here.pub", cwd=tmp_path), 3)

    there = tmp_path / "there.trtb"
    shutil.copy(DATA / "tiny-fp32.trtb", there)
    for args in (["keygen", tmp_path / "there.pem", tmp_path / "there.pub"],
                 ["sign", there, "--key", tmp_path / "there.pem"]):
        proc = trtc_cli(python, *args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert rt.verify_bundle(there, [tmp_path / "there.pub"])

    blocked = subprocess.run(
        [str(python), "-I", "-c", _BLOCK.format(blocked=["cryptography"]) + _CLI,
         "verify", str(signed), "--key", str(tmp_path / "here.pub")],
        capture_output=True, text=True, timeout=120, env=clean_env(), cwd=tmp_path)
    assert "pip install 'trtc[sign]'" in one_error_line(blocked, 4)


def test_compile_side_commands_say_what_to_install(python: Path, tmp_path: Path) -> None:
    line = one_error_line(trtc_cli(python, "compile", "x", cwd=tmp_path), 4)
    assert line == ("error: trtc compile needs the compiler (mxnet, onnx, onnx_graphsurgeon not "
                    f"installed): {INSTALL_COMPILER} (Python <= 3.11 with numpy < 1.24: MXNet 1.9.1)")
    example = trtc_cli(python, "example", "resnet18_v2", "-o", tmp_path, cwd=tmp_path)
    line = one_error_line(example, 4)
    assert line.startswith("error: trtc example needs the compiler (mxnet not installed)")
    assert INSTALL_COMPILER in line
    assert list(tmp_path.iterdir()) == []


def test_residual_mxnet_bundle_is_refused_in_one_line(python: Path, tmp_path: Path) -> None:
    """pair-mixed-dyn.trtb runs BatchNorm in MXNet: no MXNet there, so one line, exit 4."""
    line = one_error_line(trtc_cli(python, "run", RESIDUAL, "--device", "cpu", cwd=tmp_path), 4)
    assert "MXNet" in line
    with pytest.raises(AssertionError, match="IncompatibleError: .*MXNet"):
        run_in_runtime_venv(python, RESIDUAL, {"a": np.zeros((1, 3, 8, 8), np.float32),
                                               "b": np.zeros((1, 3, 8, 8), np.float32)})


# ----------------------------------------------------------------------------------------------
# here (Python 3.11): the same messages when the compile side is missing or broken
# ----------------------------------------------------------------------------------------------
# Makes the listed top-level packages look uninstalled (importing or finding them fails).
_BLOCK = textwrap.dedent(
    """
    import sys, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {blocked!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
    sys.meta_path.insert(0, Block())
    """
)
_CLI = "\nsys.argv[0] = 'trtc'\nfrom trtc.cli import main\nmain()\n"


def _dev_cli(args: List[str], cwd: Path, blocked: Sequence[str] = (),
             path: Sequence[Path] = ()) -> subprocess.CompletedProcess:
    """``trtc ARGS`` on this venv's Python with ``blocked`` packages made uninstalled and
    ``path`` directories put first on sys.path."""
    prefix = "".join(f"sys.path.insert(0, {str(p)!r})\n" for p in path)
    script = _BLOCK.format(blocked=list(blocked)) + prefix + _CLI
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_runtime_commands_here_without_the_compile_side(tmp_path: Path) -> None:
    bundle = DATA / "tiny-fp32.trtb"
    for args in (["inspect", str(bundle)], ["run", str(bundle), "--device", "cpu"],
                 ["bench", str(bundle), "--device", "cpu", "--iterations", "3", "--warmup", "1"]):
        proc = _dev_cli(args, tmp_path, blocked=COMPILE_SIDE)
        assert proc.returncode == 0, (args, proc.stderr)


def test_compile_here_without_the_compiler(tmp_path: Path) -> None:
    proc = _dev_cli(["compile", "x"], tmp_path, blocked=["mxnet", "onnx_graphsurgeon"])
    line = one_error_line(proc, 4)
    assert line.startswith("error: trtc compile needs the compiler (mxnet, onnx_graphsurgeon not "
                           "installed)")
    assert INSTALL_COMPILER in line


def test_compile_with_an_mxnet_that_fails_to_import(tmp_path: Path) -> None:
    """MXNet installed beside numpy >= 1.24 (pip install mxnet on Python 3.12) fails to import
    with an AttributeError: one line saying so, before any argument is looked at."""
    fake = tmp_path / "site"
    (fake / "mxnet").mkdir(parents=True)
    (fake / "mxnet" / "__init__.py").write_text(
        "import warnings\nwarnings.warn('np.bool', FutureWarning)\n"
        "raise AttributeError(\"module 'numpy' has no attribute 'bool'.\\n`np.bool` was a "
        "deprecated alias\")\n")
    for args in (["compile", "x"], ["example", "resnet18_v2", "-o", str(tmp_path)]):
        line = one_error_line(_dev_cli(args, tmp_path, path=[fake]), 4)
        assert (f"needs the compiler, and MXNet fails to import here (AttributeError: module "
                f"'numpy' has no attribute 'bool'; this is Python {sys.version_info[0]}."
                f"{sys.version_info[1]} with numpy {np.__version__}): "
                f"{INSTALL_COMPILER}") in line, line
