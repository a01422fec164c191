"""One loaded model shared by many threads on the CPU path: every call returns exactly what the
same call returns single-threaded (ONNX Runtime stages run concurrently, MXNet residual stages
serialize on their lock)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from models import tiny
from trtc.runtime import Model, load


def _hammer(model: Model, feeds: List[Dict[str, np.ndarray]],
            expected: List[Dict[str, np.ndarray]], threads: int, calls: int) -> None:
    """``threads`` threads each make ``calls`` calls, cycling through ``feeds`` from a different
    starting point, and check every output against ``expected``."""
    start = threading.Barrier(threads)
    failures: List[str] = []
    done = [0] * threads

    def work(worker: int) -> None:
        try:
            start.wait()
            for call in range(calls):
                k = (worker * 7 + call) % len(feeds)
                outputs = model(**feeds[k])
                for name, value in expected[k].items():
                    if not np.array_equal(outputs[name], value):
                        failures.append(f"thread {worker} call {call}: output '{name}' differs "
                                        f"(max abs {np.abs(outputs[name] - value).max():.3g})")
                        return
                done[worker] += 1
        except Exception as exc:  # reported below, with the thread that saw it
            failures.append(f"thread {worker}: {type(exc).__name__}: {exc}")

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=600)
    assert not any(t.is_alive() for t in pool), "a thread hung"
    assert not failures, failures[:5]
    assert done == [calls] * threads


def _references(model: Model, name: str, count: int):
    feeds = [tiny.random_feeds(name, seed=k) for k in range(count)]
    expected = [model(**f) for f in feeds]
    # the inputs differ, so a call answered with another call's result would be caught
    first = next(iter(expected[0]))
    assert not np.array_equal(expected[0][first], expected[1][first])
    return feeds, expected


def test_eight_threads_share_one_engine_model(tmp_path_factory: pytest.TempPathFactory) -> None:
    model = load(tiny.bundle("tiny", tmp_path_factory), device="cpu")
    feeds, expected = _references(model, "tiny", 16)
    _hammer(model, feeds, expected, threads=8, calls=200)


def test_eight_threads_through_a_residual_mxnet_stage(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """engine -> MXNet (BatchNorm) -> engine, two inputs."""
    model = load(tiny.bundle("pair", tmp_path_factory, exclude_ops=("BatchNorm",)), device="cpu")
    assert [s["kind"] for s in model.manifest["stages"]] == ["engine", "residual", "engine"]
    feeds, expected = _references(model, "pair", 16)
    _hammer(model, feeds, expected, threads=8, calls=200)


def test_resnet18_with_residual_pooling_from_eight_threads(compiled) -> None:
    path: Path = compiled("resnet18_v2", exclude_ops=["Pooling"], residual="mxnet")
    model = load(path, device="cpu")
    assert "residual" in [s["kind"] for s in model.manifest["stages"]]
    rng = np.random.default_rng(0)
    feeds = [{"data": rng.random((1, 3, 224, 224), dtype=np.float32)} for _ in range(4)]
    expected = [model(**f) for f in feeds]
    _hammer(model, feeds, expected, threads=8, calls=6)


def test_loading_from_many_threads_at_once(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tiny.bundle("pair", tmp_path_factory, exclude_ops=("BatchNorm",))
    feeds = tiny.random_feeds("pair")
    expected = load(path, device="cpu")(**feeds)
    results: List[Dict[str, np.ndarray]] = []
    errors: List[BaseException] = []

    def work() -> None:
        try:
            results.append(load(path, device="cpu")(**feeds))
        except BaseException as exc:  # noqa: B902 (reported below)
            errors.append(exc)

    pool = [threading.Thread(target=work) for _ in range(8)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=300)
    assert not errors, errors
    assert len(results) == 8
    for result in results:
        for name, value in expected.items():
            np.testing.assert_array_equal(result[name], value)
