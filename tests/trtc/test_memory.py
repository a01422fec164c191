"""Issue 22 part 3: the compiler's memory. Real MXNet, ONNX Runtime and TensorRT-RTX; each compile
runs in a subprocess (its exit code and stderr are what a user sees; its peak is the kernel's)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trtc import memory
from trtc.verify import _CHUNK, _errors

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from models import tiny  # noqa: E402


CLI = [sys.executable, "-c", "from trtc.cli import main; main()"]


def _trtc(*args: str, env: dict = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_gate_too_big_for_memory_is_one_usage_line(tmp_path: Path) -> None:
    """With less memory than the gate needs (TRTC_MEMORY_LIMIT lowers what trtc sees as
    available), compile refuses before building anything: exit 2, one line naming the need and
    what to do; --no-verify compiles."""
    params = tiny.export("tiny", tmp_path)
    out = tmp_path / "tiny.trtb"
    done = _trtc("compile", str(params), "-o", str(out), env={memory.LIMIT_ENV: "1"})
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if not line.startswith("[trtc]")]
    assert len(errors) == 1, done.stderr
    assert "accuracy gate needs" in errors[0] and "available here" in errors[0], errors[0]
    assert "--no-verify" in errors[0] and "--verify-inputs" in errors[0], errors[0]
    assert "building" not in done.stderr and not out.exists()

    done = _trtc("compile", str(params), "-o", str(out), "--no-verify",
                 env={memory.LIMIT_ENV: "1"})
    assert done.returncode == 0, done.stderr
    assert out.exists()


def test_memory_limit_setting_caps_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(memory.LIMIT_ENV, raising=False)
    unlimited = memory.available_memory()
    monkeypatch.setenv(memory.LIMIT_ENV, "1G")
    capped = memory.available_memory()
    rss = memory.resident()["rss"]
    assert capped == max(2**30 - rss, 0) and (unlimited is None or capped <= unlimited)
    assert memory.parse_size("512M") == 512 * 2**20 and memory.parse_size("2GiB") == 2 * 2**30
    assert memory.parse_size("1048576") == 2**20 and memory.parse_size("1000") == 2**20  # >= 1 MiB
    monkeypatch.setenv(memory.LIMIT_ENV, "0")  # no bound, as for the runtime's arena
    assert unlimited is None or (memory.available_memory() or 0) > capped


def test_chunked_errors_match_whole_tensor_errors() -> None:
    """The gate compares a chunk at a time (no float64 copy of a whole tensor): the same numbers,
    NaN and non-finite handling as comparing all at once."""
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(2 * _CHUNK + 17).astype(np.float32)
    got = ref + rng.standard_normal(ref.size).astype(np.float32) * 1e-3
    diff = np.abs(got.astype(np.float64) - ref)
    scale = np.abs(ref.astype(np.float64)).max()
    assert _errors(got, ref) == (float(diff.max()), float(diff.max() / scale))
    ref[5], got[5] = np.inf, np.inf  # the same non-finite entry: skipped
    assert np.isfinite(_errors(got, ref)[1])
    got[_CHUNK + 3] = np.nan  # NaN where MXNet is finite, in the second chunk: a failed check
    assert np.isnan(_errors(got, ref)[1])
    got[_CHUNK + 3], got[5] = ref[_CHUNK + 3], 1.0  # finite where MXNet is inf
    assert _errors(got, ref) == (float("inf"), float("inf"))


def _memory_benchmark():
    spec = importlib.util.spec_from_file_location("trtc_memory_benchmark",
                                                  ROOT / "benchmarks" / "memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mid_size_compile_peak_near_goal(tmp_path: Path) -> None:
    """resnet18_v1 (45 MB of params): `trtc compile`'s peak (process tree, fresh wrapper) against
    the goal, 1.5 x a plain MXNet forward's peak + 2 x the params' bytes. The goal is missed
    today (1.45x on 2026-12-03: the compiler's ~600 MB of imported libraries alone exceed it; see
    the README's compile-memory table), so this guards against regressions: at most 1.6x."""
    row = _memory_benchmark().model_row("resnet18_v1", tmp_path, 512)
    assert row["compile_peak"] > 0 and row["forward_peak"] > 0
    ratio = row["compile_peak"] / row["goal_bytes"]
    assert ratio <= 1.6, (f"compile peak {row['compile_peak'] / 2**20:.0f} MB is {ratio:.2f} x the "
                          f"goal {row['goal_bytes'] / 2**20:.0f} MB")
