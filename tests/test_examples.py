"""Every example is a runnable script, run here as users run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(args, tmp_path):
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_wavenet_example(tmp_path):
    out = _run([str(EXAMPLES / "wavenet.py"), "--out", str(tmp_path / "wn")], tmp_path)
    assert "9 TensorRT engine(s)" in out and "sums to 1 over classes: True" in out
    assert (tmp_path / "wn" / "wavenet.svg").exists() or (tmp_path / "wn" / "wavenet.dot").exists()


def test_resnet18_tutorial(tmp_path):
    out = _run([str(EXAMPLES / "resnet18_tutorial.py"), "--warmup", "1", "--iterations", "3",
                "--out", str(tmp_path / "r18")], tmp_path)
    assert "MXNet (baseline)" in out and "trtc fp16" in out
