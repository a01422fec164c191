"""A compile killed at any moment leaves no file at the target path and never replaces a good
bundle there. The compiler writes ``.NAME.HOST-PID.RANDOM.partial`` beside the target and renames
it over the target only once it is complete and verified. SIGKILL can leave that hidden temp file
behind; the next compile to the same target removes it. SIGTERM unwinds and removes it at once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

from models import tiny
from trtc.runtime import load
from trtc.runtime.bundle import _HOST


def _partials(directory: Path) -> List[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".partial"))


def _start(params: Path, target: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "trtc.cli", "compile", str(params), "-o", str(target), "-q",
               *extra]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_partial(proc: subprocess.Popen, directory: Path, timeout: float = 180) -> int:
    """Wait until the compiler has started writing; returns the temp file's size then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in _partials(directory):
            try:
                return (directory / name).stat().st_size
            except FileNotFoundError:
                pass
        assert proc.poll() is None, "the compile ended before it started writing"
        time.sleep(0.002)
    raise AssertionError("the compile never started writing")


def _wait_until_written(directory: Path, timeout: float = 60) -> None:
    """Wait until the temp file is complete (its size stable over a few polls): the compile is
    then verifying it. Returns while the temp file is still there (the rename has not happened)."""
    deadline, last, stable = time.monotonic() + timeout, -1, 0
    while time.monotonic() < deadline and stable < 3:
        names = _partials(directory)
        assert names, "the temp file was renamed before the gate could be interrupted"
        try:
            size = (directory / names[0]).stat().st_size
        except FileNotFoundError:
            continue
        stable = stable + 1 if size == last and size > 0 else 0
        last = size
        time.sleep(0.005)


@pytest.fixture(scope="module")
def old_bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A good bundle's bytes, put at the target before each interrupted compile."""
    return tiny.bundle("tiny", tmp_path_factory).read_bytes()


@pytest.mark.parametrize("moment", ["0.5s", "2s", "write", "verify"])
def test_sigkill_never_replaces_a_good_bundle(tmp_path: Path, zoo_params, old_bundle: bytes,
                                              moment: str) -> None:
    params = zoo_params("resnet18_v2")
    target = tmp_path / "model.trtb"
    target.write_bytes(old_bundle)
    proc = _start(params, target)
    try:
        if moment.endswith("s"):
            time.sleep(float(moment[:-1]))
        else:
            size = _wait_for_partial(proc, tmp_path)
            if moment == "verify":  # the temp file is complete; the accuracy gate is running
                _wait_until_written(tmp_path)
            assert size >= 0
        assert proc.poll() is None, f"the compile finished before the kill ({moment})"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == old_bundle
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".partial")) == \
        ["model.trtb"]
    load(target, device="cpu")  # still the good bundle


def test_the_next_compile_removes_stale_partials(tmp_path: Path, zoo_params) -> None:
    """A SIGKILL mid-write on a fresh target leaves nothing at the target, but may leave the temp
    file; the next compile to the same target removes it (its process is gone)."""
    params = zoo_params("resnet18_v2")
    target = tmp_path / "model.trtb"
    proc = _start(params, target)
    try:
        _wait_for_partial(proc, tmp_path)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert not target.exists()
    stale = _partials(tmp_path)
    assert stale, "SIGKILL mid-write leaves the temp file (nothing can run after SIGKILL)"
    assert all(name.startswith(".model.trtb.") for name in stale)
    # a temp file of a live writer (this process) and another target's are left alone
    mine = tmp_path / f".model.trtb.{_HOST}-{os.getpid()}.live.partial"
    mine.write_bytes(b"")
    other = tmp_path / ".other.trtb.somehost-1.x.partial"
    other.write_bytes(b"")

    done = subprocess.run([sys.executable, "-m", "trtc.cli", "compile", str(params), "-o",
                           str(target), "--no-verify"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "left by an interrupted compile" in done.stderr
    assert _partials(tmp_path) == sorted([mine.name, other.name])
    assert load(target, device="cpu").inputs["data"].shape == (1, 3, 224, 224)


def test_sigterm_cleans_up_its_temp_file(tmp_path: Path, zoo_params, old_bundle: bytes) -> None:
    target = tmp_path / "model.trtb"
    target.write_bytes(old_bundle)
    proc = _start(zoo_params("resnet18_v2"), target)
    try:
        _wait_for_partial(proc, tmp_path)
        proc.send_signal(signal.SIGTERM)
    finally:
        _, stderr = proc.communicate(timeout=120)
    assert b"Traceback" not in stderr and _partials(tmp_path) == []
    if proc.returncode == 0:  # Python ran the handler only after the rename (the main thread
        # was in native code until then): the new bundle is in place and the command succeeded,
        # as documented; the temp file is gone all the same
        assert b"after the output was written: finishing" in stderr, stderr
        assert target.read_bytes() != old_bundle and target.read_bytes()[:2] == b"PK"
        return
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert b"terminated" in stderr
    assert target.read_bytes() == old_bundle


def test_a_failed_compile_keeps_the_old_bundle_and_no_temp_file(
        tmp_path: Path, old_bundle: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The accuracy gate refusing the result (an impossible tolerance) writes nothing."""
    params = tiny.export("tiny", tmp_path / "src")
    target = tmp_path / "model.trtb"
    target.write_bytes(old_bundle)
    done = subprocess.run([sys.executable, "-m", "trtc.cli", "compile", str(params), "-o",
                           str(target), "--tolerance", "1e-30", "-q"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr
    assert "accuracy gate failed" in done.stderr
    assert target.read_bytes() == old_bundle
    assert _partials(tmp_path) == [] and _partials(tmp_path / "src") == []


def test_an_unwritable_directory_is_a_usage_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    params = tiny.export("tiny", tmp_path / "src")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        done = subprocess.run([sys.executable, "-m", "trtc.cli", "compile", str(params), "-o",
                               str(locked / "m.trtb"), "-q"], capture_output=True, text=True)
    finally:
        locked.chmod(0o755)
        shutil.rmtree(locked)
    assert done.returncode == 2 and "cannot write" in done.stderr
