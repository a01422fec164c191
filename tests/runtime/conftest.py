"""The tiny real bundles the runtime's hardening tests take apart (``tests/models/tiny.py``),
compiled once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import tiny


@pytest.fixture(scope="session")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny``: one engine stage, target all (a plan and its ONNX)."""
    return tiny.bundle("tiny", tmp_path_factory)


@pytest.fixture(scope="session")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pair`` with BatchNorm kept in MXNet: two engines, a residual MXNet stage and residual
    params."""
    return tiny.bundle("pair", tmp_path_factory, exclude_ops=("BatchNorm",))
