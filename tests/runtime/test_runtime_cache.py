"""TensorRT-RTX runtime cache files (issue 23 part 3): one per engine and GPU model / driver /
TensorRT-RTX version, written atomically, read back only when every part of that identity and
the blob's checksum match; anything stale or damaged is ignored with a warning, never handed to
TensorRT-RTX. The TensorRT-RTX calls around it (IRuntimeConfig, IRuntimeCache) are checked by
test_trt_contract.py; they run only on a GPU TensorRT-RTX supports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trtc.runtime.runtime_cache import ENV_VAR, CacheFile, cache_dir_from

IDENTITY = {"engine_sha256": "ab" * 32, "backend": "tensorrt_rtx", "backend_version": "1.7.1.116",
            "gpu": "NVIDIA RTX 4090", "compute_capability": "8.9", "driver": "13000"}


def test_round_trip_and_nothing_left_behind(tmp_path: Path) -> None:
    cache = CacheFile(tmp_path / "cache", IDENTITY)
    assert cache.read() is None  # no file yet: silently nothing
    blob = os.urandom(5000)
    cache.write(blob)
    assert CacheFile(tmp_path / "cache", dict(IDENTITY)).read() == blob
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache.path.name]


@pytest.mark.parametrize("key", sorted(IDENTITY))
def test_another_engine_gpu_driver_or_version_gets_its_own_file(tmp_path: Path, key: str) -> None:
    CacheFile(tmp_path, IDENTITY).write(b"kernels")
    other = CacheFile(tmp_path, {**IDENTITY, key: "something else"})
    assert other.path != CacheFile(tmp_path, IDENTITY).path and other.read() is None


def test_a_stale_file_under_the_name_is_ignored_with_a_warning(tmp_path: Path) -> None:
    cache = CacheFile(tmp_path, IDENTITY)
    CacheFile(tmp_path, {**IDENTITY, "driver": "12000"}).write(b"old kernels")
    os.replace(CacheFile(tmp_path, {**IDENTITY, "driver": "12000"}).path, cache.path)
    with pytest.warns(RuntimeWarning, match="written for another engine, GPU, driver"):
        assert cache.read() is None


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
def test_a_damaged_file_is_ignored_with_a_warning(tmp_path: Path, damage: str) -> None:
    cache = CacheFile(tmp_path, IDENTITY)
    cache.write(b"x" * 1000)
    data = bytearray(cache.path.read_bytes())
    if damage == "flip":
        data[-10] ^= 1
    elif damage == "truncate":
        data = data[:-100]
    elif damage == "garbage":
        data = bytearray(b"\x00" * 64)
    else:
        data = bytearray()
    cache.path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="ignored, compiling kernels again"):
        assert cache.read() is None


def test_an_unwritable_directory_is_a_warning(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.warns(RuntimeWarning, match="cannot write it"):
        CacheFile(blocker / "cache", IDENTITY).write(b"kernels")


def test_the_directory_comes_from_the_argument_else_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert cache_dir_from(None) is None
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert cache_dir_from(None) == tmp_path / "env"
    assert cache_dir_from(tmp_path / "arg") == tmp_path / "arg"
