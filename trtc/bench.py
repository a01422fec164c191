"""`trtc bench`: latency and throughput of model(**inputs), the origin tutorial's loop."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

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
    """The batch size a bundle is timed at by default: the leading dimension of its first input
    (a dynamic bundle: of its opt shape)."""
    inputs = manifest["inputs"]
    if not inputs or not inputs[0]["shape"]:
        return 1
    return int((inputs[0].get("opt_shape") or inputs[0]["shape"])[0])


def input_shapes(manifest: Mapping[str, Any], batch: Optional[int] = None) -> Dict[str, Tuple[int, ...]]:
    """The shape to feed each input: its opt shape, with the leading axis set to ``batch``."""
    shapes = {}
    for t in manifest["inputs"]:
        shape = list(t.get("opt_shape") or t["shape"])
        if batch is not None and shape:
            shape[0] = batch
        shapes[t["name"]] = tuple(shape)
    return shapes


def _check_batch(path: "str | Path", manifest: Mapping[str, Any], batch: int) -> None:
    from .runtime.errors import UsageError

    if batch < 1:
        raise UsageError("--batch must be at least 1")
    inputs = [t for t in manifest["inputs"] if t["shape"]]
    lows = [int((t.get("min_shape") or t["shape"])[0]) for t in inputs]
    highs = [int((t.get("max_shape") or t["shape"])[0]) for t in inputs]
    if all(lo <= batch <= hi for lo, hi in zip(lows, highs)):
        return
    params = manifest.get("source", {}).get("params", {}).get("file", "PREFIX-0000.params")
    specs = " ".join(f"--input {t['name']}:{'x'.join(map(str, [f'1..{max(batch, hi)}'] + list((t.get('opt_shape') or t['shape'])[1:])))}"
                     for t, hi in zip(inputs, highs))
    ranges = ", ".join(f"{t['name']} batch {lo}" + (f"..{hi}" if hi != lo else "")
                       for t, lo, hi in zip(inputs, lows, highs))
    raise UsageError(f"--batch {batch}: {Path(path).name} takes {ranges}; compile one whose range "
                     f"covers it: trtc compile {params} {specs}")


def bench_bundle(path: "str | Path", device: str = "auto", warmup: Optional[int] = None,
                 iterations: Optional[int] = None, batch: Optional[int] = None,
                 seed: int = 0, progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Time a bundle on seeded random inputs.

    Args:
        path: the bundle.
        device: 'auto', 'cuda' or 'cpu' (as ``trtc.runtime.load``).
        warmup: untimed calls first (default: WARMUP of the path in use).
        iterations: timed calls (default: ITERATIONS of the path in use).
        batch: the batch size to time (inside the bundle's range; default its opt batch).
        seed: seed of the random inputs.
        progress: called with a line before each step that takes time.

    Returns:
        bundle, device, batch, warmup, iterations, samples/s, p50/p99/mean latency in ms, and
        the first call's latency (``first_call_ms``: one-time costs such as a JIT or a graph
        capture show there, not in the steady numbers).

    Raises:
        UsageError: ``batch`` is outside the bundle's range (the message says how to compile one).
    """
    from .runtime.bundle import read_bundle
    from .runtime.model import Model, gpu_index, select_device

    with read_bundle(path, verify=False) as bundle:  # like load(): only the path's members, checked
        if batch is not None:
            _check_batch(path, bundle.manifest, batch)
        chosen, reason = select_device(bundle, device)
        model = Model(bundle, chosen, reason, gpu=gpu_index(device) if chosen == "cuda" else 0)
    warmup = WARMUP[model.device] if warmup is None else warmup
    iterations = ITERATIONS[model.device] if iterations is None else iterations
    rng = np.random.default_rng(seed)
    shapes = input_shapes(bundle.manifest, batch)
    feeds = {name: (rng.integers(*spec.index_range, size=shapes[name]) if spec.index_range
                    else rng.random(shapes[name])).astype(spec.dtype)
             for name, spec in model.inputs.items()}
    batch = batch if batch is not None else bundle_batch(bundle.manifest)
    say = progress or (lambda _: None)
    start = time.perf_counter()
    model(**feeds)
    first = time.perf_counter() - start
    say(f"{model.device}: first call {first * 1e3:.1f} ms; {warmup} warmup and {iterations} timed "
        f"calls take about {first * (warmup + iterations):.0f} s")
    times = time_calls(lambda: model(**feeds), warmup, iterations)
    return {
        "first_call_ms": float(first * 1e3),
        "bundle": str(path), "device": model.device, "batch": batch,
        "warmup": warmup, "iterations": iterations,
        "samples_per_s": float(batch * iterations / times.sum()),
        "p50_ms": float(np.percentile(times, 50) * 1e3),
        "p99_ms": float(np.percentile(times, 99) * 1e3),
        "mean_ms": float(times.mean() * 1e3),
    }
