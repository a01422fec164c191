"""Runtime-only venvs on newer Pythons (issue 20): the runtime and the CLI's runtime commands
without MXNet, on Python 3.12 / 3.13 with numpy 2, and a way to run a bundle there.

The fixtures are in tests/conftest.py (``runtime_python``, ``run_in_runtime_venv``); this module
holds the machinery, importable from any test (``from runtime_venvs import ...``: tests/ is on
sys.path like ``models``).

    def test_detector_on_313(runtime_python, compiled):
        python = runtime_python("3.13")                     # skips if Python 3.13 is missing
        bundle = compiled("yolo3_mobilenet1.0_voc")         # compiled here, Python 3.11 + MXNet
        feeds = {"data": np.random.default_rng(0).random((1, 3, 416, 416), np.float32)}
        got = run_in_runtime_venv(python, bundle, feeds)    # run there, numpy 2, no MXNet
        expected = trtc.runtime.load(bundle, device="cpu")(**feeds)   # here, numpy 1.23

(``run_in_runtime_venv`` is also a fixture, for tests that prefer not to import.) A venv is made
the first time a session asks for its version (~10-15 s: venv + pip install, numpy 2 comes in)
and kept in ``.pytest_cache/d/trtc-runtime-venvs/VERSION``; later sessions reuse it as it is,
reinstalling trtc alone (a few seconds) when trtc/, runtime/ or README.md changed and remaking it
when pyproject.toml or the base Python did.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import pytest

__all__ = ["RUNTIME_EXTRAS", "RuntimeVenvs", "clean_env", "find_python", "run_in_runtime_venv",
           "save_npz", "cache_dir"]

REPO = Path(__file__).resolve().parents[1]
# What a runtime venv installs: `pip install 'trtc[cpu,sign]'` (ONNX Runtime, the CLI's typer,
# cryptography for `trtc verify`), from a wheel of this checkout, never editable: no
# compile-side package (mxnet, onnx, onnx-graphsurgeon) can leak in from the repository.
RUNTIME_EXTRAS = "cpu,sign"
# The files the wheel is built from (a copy of them: the build's own build/ and egg-info stay
# out of the checkout, and edits made while the session runs do not change the installed trtc).
_WHEEL_SOURCES = ("pyproject.toml", "README.md", "trtc", "runtime")
_STAMP = "trtc-runtime-venv.json"


def clean_env(**extra: str) -> Dict[str, str]:
    """os.environ without what would make a venv's Python import something other than what is
    installed in it (PYTHONPATH, PYTHONHOME, an activated venv, the user site)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE",
                        "VIRTUAL_ENV", "__PYVENV_LAUNCHER__", "PYTHONSAFEPATH")}
    env.update(PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    env.update(extra)
    return env


def _python_version_of(executable: Path) -> Optional[str]:
    """'3.12' if ``executable`` runs as a Python, else None (a pyenv shim that refuses, a
    broken link)."""
    try:
        proc = subprocess.run([str(executable), "-c",
                               "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=60, env=clean_env())
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def find_python(version: str) -> Tuple[Optional[Path], str]:
    """(an interpreter of Python ``version``, e.g. '3.12', or None; where it was looked for).

    Looks in pyenv's versions (``$PYENV_ROOT``, ``pyenv root``, ~/.pyenv: the newest
    ``VERSION.N``) and then for ``pythonVERSION`` on PATH; each candidate must actually run and
    report that version (pyenv's shims on PATH refuse versions that are not selected).
    """
    roots: List[Path] = []
    if os.environ.get("PYENV_ROOT"):
        roots.append(Path(os.environ["PYENV_ROOT"]))
    if shutil.which("pyenv"):
        try:
            out = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=30)
            if out.returncode == 0 and out.stdout.strip():
                roots.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    roots.append(Path.home() / ".pyenv")
    candidates: List[Path] = []
    looked: List[str] = []
    for root in dict.fromkeys(roots):
        versions = root / "versions"
        looked.append(f"{versions}/{version}.*/bin")
        found = [d for d in (versions.glob(f"{version}*") if versions.is_dir() else ())
                 if re.fullmatch(rf"{re.escape(version)}(\.\d+)?", d.name)]
        found.sort(key=lambda d: [int(p) for p in d.name.split(".")], reverse=True)
        candidates += [d / "bin" / f"python{version}" for d in found]
    on_path = shutil.which(f"python{version}")
    looked.append(f"python{version} on PATH")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.exists() and _python_version_of(candidate) == version:
            return candidate, ", ".join(looked)
    return None, ", ".join(looked)


def _tree_hash(root: Path) -> str:
    """sha256 over the relative paths and bytes of every file under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


class _NoPython(Exception):
    """The Python version asked for is not installed (the test skips)."""


class RuntimeVenvs:
    """One venv per Python version with ``pip install 'trtc[cpu,sign]'`` from a wheel of this
    checkout, kept in ``cache_dir`` across test sessions.

    A venv is reused when its stamp says it was made from the same base Python and the same
    pyproject.toml (the dependencies); when only trtc's sources changed, trtc alone is
    reinstalled (``--no-deps --force-reinstall``, seconds); otherwise it is made afresh. A lock
    file per version serializes concurrent test sessions.
    """

    def __init__(self, cache_dir: Path, work_dir: Path) -> None:
        self.cache_dir = cache_dir
        self.work_dir = work_dir
        self._source: Optional[Tuple[Path, str]] = None
        self._wheel: Optional[Path] = None
        self._outcome: Dict[str, Tuple[str, Any]] = {}

    def source(self) -> Tuple[Path, str]:
        """(a copy of the files the wheel is built from, its hash), made once per session."""
        if self._source is None:
            src = self.work_dir / "trtc-src"
            for name in _WHEEL_SOURCES:
                if (REPO / name).is_dir():
                    shutil.copytree(REPO / name, src / name,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    src.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(REPO / name, src / name)
            self._source = (src, _tree_hash(src))
        return self._source

    def wheel(self) -> Path:
        """trtc's wheel, built once per session (only when some venv needs it)."""
        if self._wheel is None:
            src, _ = self.source()
            out = self.work_dir / "trtc-wheel"
            self._pip_run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                           str(src)], "building trtc's wheel")
            wheels = sorted(out.glob("trtc-*.whl"))
            assert len(wheels) == 1, wheels
            self._wheel = wheels[0]
        return self._wheel

    @staticmethod
    def _pip_run(cmd: List[str], what: str) -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=clean_env(),
                              cwd=tempfile.gettempdir())
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
            raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")

    def python(self, version: str) -> Path:
        """The venv's python for Python ``version`` (made or updated as needed); skips the test
        when that Python is not installed, fails it when it is but the install fails."""
        if version not in self._outcome:
            try:
                self._outcome[version] = ("ok", self._make(version))
            except _NoPython as exc:
                self._outcome[version] = ("skip", str(exc))
            except Exception as exc:  # noqa: BLE001  pip, venv or network failed: a real failure
                self._outcome[version] = ("fail", f"runtime venv for Python {version}: {exc}")
        kind, value = self._outcome[version]
        if kind == "skip":
            pytest.skip(value)
        if kind == "fail":
            pytest.fail(value, pytrace=False)
        return value

    def _make(self, version: str) -> Path:
        base, looked = find_python(version)
        if base is None:
            raise _NoPython(f"Python {version} is not installed (looked in {looked})")
        src, source_hash = self.source()
        deps_key = hashlib.sha256((src / "pyproject.toml").read_bytes() + RUNTIME_EXTRAS.encode()
                                  + str(base.resolve()).encode()).hexdigest()
        venv = self.cache_dir / version
        python = venv / "bin" / "python"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / f"{version}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                stamp = json.loads((venv / _STAMP).read_text())
            except (OSError, ValueError):
                stamp = {}
            if stamp.get("deps") != deps_key or _python_version_of(python) != version:
                shutil.rmtree(venv, ignore_errors=True)
                self._pip_run([str(base), "-m", "venv", str(venv)], f"python{version} -m venv")
                self._pip_run([str(python), "-m", "pip", "install", "-q",
                               f"{self.wheel()}[{RUNTIME_EXTRAS}]"],
                              f"pip install 'trtc[{RUNTIME_EXTRAS}]' on Python {version}")
            elif stamp.get("source") != source_hash:
                (venv / _STAMP).unlink()
                self._pip_run([str(python), "-m", "pip", "install", "-q", "--no-deps",
                               "--force-reinstall", str(self.wheel())],
                              f"reinstalling trtc on Python {version}")
            else:
                return python
            (venv / _STAMP).write_text(json.dumps({"deps": deps_key, "source": source_hash,
                                                   "base_python": str(base)}))
        return python


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """np.savez without its keyword clash (an array named ``file`` or ``allow_pickle``)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)


_RUN_BUNDLE = r"""
import sys, zipfile, numpy as np, trtc.runtime as rt
bundle, inputs, outputs, device = sys.argv[1:5]
with np.load(inputs, allow_pickle=False) as f:
    feeds = {k: f[k] for k in f.files}
model = rt.load(bundle, device=device)
result = model(**feeds)
with zipfile.ZipFile(outputs, "w") as zf:
    for name, array in result.items():
        with zf.open(name + ".npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, np.asarray(array), allow_pickle=False)
"""


def run_in_runtime_venv(python: Path, bundle: Path, inputs: Mapping[str, np.ndarray],
                        device: str = "cpu", timeout: float = 600) -> Dict[str, np.ndarray]:
    """Run ``bundle`` once in another Python (a :func:`runtime_python` venv) and return its
    outputs.

    ``trtc.runtime.load(bundle, device=device)(**inputs)`` runs in a fresh process of
    ``python`` (isolated mode, a clean environment, a temporary working directory: only what is
    installed in that venv is imported); the inputs go there and the outputs come back as .npz
    files. Typical use: a bundle compiled in this (3.11, MXNet) venv, run on Python 3.13 with
    numpy 2, compared with ``trtc.runtime.load(bundle, device="cpu")(**inputs)`` here.

    Raises:
        AssertionError: the run failed; the message holds its exit code and stderr (a trtc
            error is one ``TypeName: message`` line at its end).
    """
    with tempfile.TemporaryDirectory(prefix="trtc-run-") as tmp:
        feeds, outs = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        save_npz(feeds, inputs)
        proc = subprocess.run([str(python), "-I", "-c", _RUN_BUNDLE, str(Path(bundle).resolve()),
                               str(feeds), str(outs), device],
                              capture_output=True, text=True, timeout=timeout, env=clean_env(),
                              cwd=tmp)
        if proc.returncode != 0:
            raise AssertionError(f"running {bundle} on {python} failed (exit {proc.returncode}):\n"
                                 + "\n".join(proc.stderr.strip().splitlines()[-20:]))
        with np.load(outs, allow_pickle=False) as f:
            return {name: f[name] for name in f.files}


def cache_dir(config: Any) -> Path:
    """Where the venvs are kept: pytest's cache (``.pytest_cache/d/trtc-runtime-venvs``,
    git-ignored; ``pytest --cache-clear`` removes them), else ``.pytest_cache`` in the repo."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("trtc-runtime-venvs"))
    return REPO / ".pytest_cache" / "trtc-runtime-venvs"
