"""`trtc bench`: latency and throughput of model(**inputs), the origin tutorial's loop."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

__all__ = ["bench_bundle", "time_calls"]


def time_calls(fn: Any, warmup: int, iterations: int) -> np.ndarray:
    """Call ``fn()`` ``warmup`` times untimed, then ``iterations`` times; per-call seconds."""
    for _ in range(warmup):
        fn()
    times = np.empty(iterations, dtype=np.float64)
    for i in range(iterations):
        start = time.perf_counter()
        fn()  # returns numpy arrays: the results are complete when it returns
        times[i] = time.perf_counter() - start
    return times


def bench_bundle(path: "str | Path", device: str = "auto", warmup: int = 50,
                 iterations: int = 500, seed: int = 0) -> Dict[str, Any]:
    """Time a bundle on random inputs. Returns samples/s, p50/p99/mean latency in ms."""
    from .runtime import load

    model = load(path, device=device)
    rng = np.random.default_rng(seed)
    feeds = {name: rng.random(spec.shape).astype(spec.dtype) for name, spec in model.inputs.items()}
    batch = next(iter(model.inputs.values())).shape[0] if model.inputs else 1
    times = time_calls(lambda: model(**feeds), warmup, iterations)
    return {
        "bundle": str(path), "device": model.device, "batch": int(batch),
        "warmup": warmup, "iterations": iterations,
        "samples_per_s": float(batch * iterations / times.sum()),
        "p50_ms": float(np.percentile(times, 50) * 1e3),
        "p99_ms": float(np.percentile(times, 99) * 1e3),
        "mean_ms": float(times.mean() * 1e3),
    }
