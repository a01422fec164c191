"""Shared fixtures: real models exported with seeded random weights and real bundles compiled by
trtc (TensorRT-RTX builder, ONNX Runtime CPU path), made once per test session; runtime-only
venvs on newer Pythons (``runtime_python``, ``run_in_runtime_venv``), kept across sessions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict

import pytest

os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


_EXPORTED: Dict[str, Path] = {}


@pytest.fixture(scope="session")
def zoo_params(models_dir: Path):
    """zoo_params(name) -> path of NAME-0000.params (exported once per session)."""
    from trtc.zoo import export_example

    def make(name: str) -> Path:
        if name not in _EXPORTED:
            _, params = export_example(name, models_dir)
            _EXPORTED[name] = params
        return _EXPORTED[name]

    return make


_COMPILED: Dict[tuple, Path] = {}


@pytest.fixture(scope="session")
def compiled(models_dir: Path, zoo_params):
    """compiled(name, fp16=False, **settings) -> path of a bundle compiled once per session."""
    from trtc import CompileSettings, compile

    def make(name: str, fp16: bool = False, **kwargs) -> Path:
        key = (name, fp16, tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                        for k, v in kwargs.items())))
        if key not in _COMPILED:
            out = models_dir / f"{name}-{len(_COMPILED)}{'-fp16' if fp16 else ''}.trtb"
            compile(CompileSettings(params=zoo_params(name), fp16=fp16, output=out, **kwargs))
            _COMPILED[key] = out
        return _COMPILED[key]

    return make


@pytest.fixture(scope="session")
def r18_bundle(compiled) -> Path:
    """resnet18_v2, fp32, whole model in one engine."""
    return compiled("resnet18_v2")


# ----------------------------------------------------------------------------------------------
# Runtime-only venvs on newer Pythons (tests/runtime_venvs.py)
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def runtime_python(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """runtime_python('3.12') -> the python of a runtime-only venv on Python 3.12.

    That venv has ``pip install 'trtc[cpu,sign]'`` of this checkout (a wheel, non-editable) and
    nothing compile-side: numpy 2, ONNX Runtime, typer, cryptography; no MXNet, onnx or
    onnx-graphsurgeon. Made once and kept in pytest's cache directory
    (``.pytest_cache/d/trtc-runtime-venvs/VERSION``, git-ignored) for later sessions; trtc alone
    is reinstalled when its sources changed, the venv remade when pyproject.toml did. The test
    skips (with where it looked) when that Python is not installed (pyenv's versions, PATH), and
    fails when it is but making the venv fails. ``python.parent / "trtc"`` is its CLI.
    """
    from runtime_venvs import RuntimeVenvs, cache_dir

    return RuntimeVenvs(cache_dir(request.config), tmp_path_factory.mktemp("runtime-venvs")).python


@pytest.fixture(scope="session")
def run_in_runtime_venv() -> Callable[..., Dict[str, object]]:
    """run_in_runtime_venv(python, bundle, inputs, device="cpu") -> outputs: runs a bundle once
    in a runtime_python venv (see tests/runtime_venvs.py)."""
    from runtime_venvs import run_in_runtime_venv as run

    return run
