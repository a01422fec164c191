"""The compile-time accuracy gate: run the bundle on the CPU path, compare with MXNet's forward."""

from __future__ import annotations

import os

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from .frontend import Graph

__all__ = ["OutputCheck", "random_inputs", "mxnet_forward", "compare"]


@dataclass
class OutputCheck:
    """Error of one output: max |trtc - mxnet| and that divided by max |mxnet|."""

    name: str
    max_abs: float
    relative: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.relative)) and self.relative <= self.tolerance

    def to_json(self) -> Dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def random_inputs(graph: Graph, seed: int) -> Dict[str, np.ndarray]:
    """Seeded inputs: uniform [0, 1) for float inputs, small integers for integer inputs."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, shape, dtype in graph.inputs:
        if np.dtype(dtype).kind == "f":
            feeds[name] = rng.random(shape).astype(dtype)
        else:
            feeds[name] = rng.integers(0, 4, size=shape).astype(dtype)
    return feeds


def mxnet_forward(graph: Graph, feeds: Mapping[str, np.ndarray],
                  tensors: Optional[List[str]] = None) -> Dict[str, np.ndarray]:
    """MXNet's own forward pass on the CPU; returns the model outputs, or ``tensors`` (any
    internal tensor names) when given."""
    import mxnet as mx

    symbol = graph.mxnet_symbol()
    names = list(tensors) if tensors is not None else list(graph.outputs)
    if tensors is not None:
        internals = symbol.get_internals()
        symbol = mx.sym.Group([internals[name] for name in names])
    args = {k.split(":", 1)[1]: mx.nd.array(v, dtype=v.dtype) for k, v in graph.params.items()
            if k.startswith("arg:")}
    aux = {k.split(":", 1)[1]: mx.nd.array(v, dtype=v.dtype) for k, v in graph.params.items()
           if k.startswith("aux:")}
    for name, value in feeds.items():
        args[name] = mx.nd.array(value, dtype=value.dtype)
    # oneDNN's subgraph fusion (conv + sum in place) overwrites intermediate tensors that a
    # Group of internals reads: the reference runs unfused.
    previous = os.environ.get("MXNET_SUBGRAPH_BACKEND")
    os.environ["MXNET_SUBGRAPH_BACKEND"] = "NONE"
    try:
        executor = symbol.bind(mx.cpu(), args, aux_states=aux, grad_req="null")
    finally:
        if previous is None:
            del os.environ["MXNET_SUBGRAPH_BACKEND"]
        else:
            os.environ["MXNET_SUBGRAPH_BACKEND"] = previous
    outputs = executor.forward(is_train=False)
    return {name: out.asnumpy() for name, out in zip(names, outputs)}


def compare(actual: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
            tolerance: float) -> List[OutputCheck]:
    """One OutputCheck per reference output."""
    checks = []
    for name, ref in reference.items():
        got = np.asarray(actual[name], dtype=np.float64)
        ref64 = np.asarray(ref, dtype=np.float64)
        if got.shape != ref64.shape:
            checks.append(OutputCheck(name, float("inf"), float("inf"), tolerance))
            continue
        if np.any(np.isnan(got) != np.isnan(ref64)):
            checks.append(OutputCheck(name, float("nan"), float("inf"), tolerance))
            continue
        finite = np.isfinite(ref64)
        if np.any(got[~finite] != ref64[~finite]) and np.any(~np.isnan(ref64[~finite])):
            checks.append(OutputCheck(name, float("inf"), float("inf"), tolerance))
            continue
        diff = np.abs(got[finite] - ref64[finite])
        max_abs = float(diff.max()) if diff.size else 0.0
        scale = float(np.abs(ref64[finite]).max()) if diff.size else 0.0
        rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
        checks.append(OutputCheck(name, max_abs, rel, tolerance))
    return checks
