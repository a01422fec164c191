"""Shared fixtures: real models exported with seeded random weights and real bundles compiled by
trtc (TensorRT-RTX builder, ONNX Runtime CPU path), made once per test session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

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
