"""`trtc bench`: latency and throughput of model(**inputs), the origin tutorial's loop."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import numpy as np

__all__ = ["bench_bundle", "bundle_batch", "time_calls", "WARMUP", "ITERATIONS"]

# Defaults by execution path. The GPU path takes the origin tutorial's 1000 warmup + 10000 timed
# calls (a few seconds for an engine of a millisecond); on the CPU path one call of a ResNet-18
# takes tens of milliseconds, where 10000 calls would run for minutes.
WARMUP = {"cuda": 1000, "cpu": 10}
ITERATIONS = {"cuda": 10000, "cpu": 100}


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


def bundle_batch(manifest: Mapping[str, Any]) -> int:
    """The batch size a bundle was compiled for: the leading dimension of its first input."""
    inputs = manifest["inputs"]
    return int(inputs[0]["shape"][0]) if inputs and inputs[0]["shape"] else 1


def _check_batch(path: "str | Path", manifest: Mapping[str, Any], batch: int) -> None:
    from .runtime.errors import UsageError

    if batch < 1:
        raise UsageError("--batch must be at least 1")
    compiled = bundle_batch(manifest)
    if batch == compiled:
        return
    inputs = manifest["inputs"]
    specs = " ".join(f"--input {t['name']}:{'x'.join(map(str, [batch] + list(t['shape'][1:])))}"
                     for t in inputs if t["shape"])
    params = manifest.get("source", {}).get("params", {}).get("file", "PREFIX-0000.params")
    shapes = ", ".join(f"{t['name']} {'x'.join(map(str, t['shape']))}" for t in inputs)
    raise UsageError(f"--batch {batch}: {Path(path).name} was compiled for batch {compiled} "
                     f"({shapes}) and bundles have static shapes; compile one for batch {batch}: "
                     f"trtc compile {params} {specs}")


def bench_bundle(path: "str | Path", device: str = "auto", warmup: Optional[int] = None,
                 iterations: Optional[int] = None, batch: Optional[int] = None,
                 seed: int = 0) -> Dict[str, Any]:
    """Time a bundle on seeded random inputs.

    Args:
        path: the bundle.
        device: 'auto', 'cuda' or 'cpu' (as ``trtc.runtime.load``).
        warmup: untimed calls first (default: WARMUP of the path in use).
        iterations: timed calls (default: ITERATIONS of the path in use).
        batch: the batch size expected; a UsageError unless the bundle was compiled for it.
        seed: seed of the random inputs.

    Returns:
        bundle, device, batch, warmup, iterations, samples/s, p50/p99/mean latency in ms.

    Raises:
        UsageError: ``batch`` differs from the bundle's (the message says how to compile one).
    """
    from .runtime.bundle import read_bundle
    from .runtime.model import Model, select_device

    bundle = read_bundle(path)
    if batch is not None:
        _check_batch(path, bundle.manifest, batch)
    chosen, reason = select_device(bundle, device)
    model = Model(bundle, chosen, reason)
    warmup = WARMUP[model.device] if warmup is None else warmup
    iterations = ITERATIONS[model.device] if iterations is None else iterations
    rng = np.random.default_rng(seed)
    feeds = {name: rng.random(spec.shape).astype(spec.dtype) for name, spec in model.inputs.items()}
    batch = bundle_batch(bundle.manifest)
    times = time_calls(lambda: model(**feeds), warmup, iterations)
    return {
        "bundle": str(path), "device": model.device, "batch": batch,
        "warmup": warmup, "iterations": iterations,
        "samples_per_s": float(batch * iterations / times.sum()),
        "p50_ms": float(np.percentile(times, 50) * 1e3),
        "p99_ms": float(np.percentile(times, 99) * 1e3),
        "mean_ms": float(times.mean() * 1e3),
    }
