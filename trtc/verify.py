"""The compile-time accuracy gate: run the bundle on the CPU path, compare with MXNet's forward."""

from __future__ import annotations

import os

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .frontend import Graph

__all__ = ["OutputCheck", "random_inputs", "mxnet_forward", "compare", "recheck_in_fp64"]

# A tensor that fails against MXNet's fp32 forward still passes when the model is
# ill-conditioned there (MXNet's own fp32 result is more than ILL_CONDITIONED off its fp64
# result, ~100 fp32 rounding steps) and, against MXNet's fp64 forward, trtc is within the
# tolerance or no further off than FP64_SLACK times MXNet's own fp32 error.
ILL_CONDITIONED = 1e-5
FP64_SLACK = 2.0


@dataclass
class OutputCheck:
    """Error of one output: max |trtc - mxnet| and that divided by max |mxnet|.

    ``fp64`` is set when the fp32 comparison failed and MXNet could run in float64:
    (trtc's relative error, MXNet fp32's relative error), both against MXNet's fp64 forward."""

    name: str
    max_abs: float
    relative: float
    tolerance: float
    fp64: Optional[Tuple[float, float]] = None

    @property
    def ok(self) -> bool:
        if bool(np.isfinite(self.relative)) and self.relative <= self.tolerance:
            return True
        if self.fp64 is None:
            return False
        ours, theirs = self.fp64
        return (bool(np.isfinite(ours)) and theirs > ILL_CONDITIONED
                and ours <= max(self.tolerance, FP64_SLACK * theirs))

    @property
    def note(self) -> str:
        """One line on the fp64 cross-check, or ''."""
        if self.fp64 is None:
            return ""
        ours, theirs = self.fp64
        return (f"against MXNet's fp64 forward: trtc {ours:.3g}, MXNet fp32 itself {theirs:.3g}"
                + (" (ill-conditioned: fp32 rounding, not trtc)" if self.ok else ""))

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
                  tensors: Optional[List[str]] = None, float64: bool = False) -> Dict[str, np.ndarray]:
    """MXNet's own forward pass on the CPU; returns the model outputs, or ``tensors`` (any
    internal tensor names) when given. ``float64`` runs float32 params and inputs in float64."""
    import mxnet as mx

    def array(value: np.ndarray) -> Any:
        dtype = np.float64 if float64 and value.dtype == np.float32 else value.dtype
        return mx.nd.array(value, dtype=dtype)

    symbol = graph.mxnet_symbol()
    names = list(tensors) if tensors is not None else list(graph.outputs)
    if tensors is not None:
        internals = symbol.get_internals()
        symbol = mx.sym.Group([internals[name] for name in names])
    args = {k.split(":", 1)[1]: array(v) for k, v in graph.params.items() if k.startswith("arg:")}
    aux = {k.split(":", 1)[1]: array(v) for k, v in graph.params.items() if k.startswith("aux:")}
    for name, value in feeds.items():
        args[name] = array(value)
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


def _errors(got: np.ndarray, ref: np.ndarray) -> Tuple[float, float]:
    """(max |got - ref|, that / max |ref|) over the finite entries of ``ref``; (inf, inf) when
    the shapes differ or the non-finite entries (NaN, +-inf) are not the same in both; NaN when
    ``got`` is NaN where ``ref`` is finite (a failed check either way)."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return float("inf"), float("inf")
    finite = np.isfinite(ref)
    if not np.array_equal(got[~finite], ref[~finite], equal_nan=True):
        return float("inf"), float("inf")
    diff = np.abs(got[finite] - ref[finite])
    if not diff.size:
        return 0.0, 0.0
    max_abs, scale = float(diff.max()), float(np.abs(ref[finite]).max())
    return max_abs, max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))


def recheck_in_fp64(graph: Graph, feeds: Mapping[str, np.ndarray], checks: List[OutputCheck],
                    actual: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> None:
    """For each failed check, compare trtc and MXNet's fp32 result with MXNet's fp64 forward
    (sets ``check.fp64``). Ill-conditioned models (huge activations, cancellation before a
    saturating op) make fp32 results differ by rounding alone; this tells that apart from a
    wrong engine. Models MXNet cannot run in float64 keep the fp32 verdict."""
    failed = [c for c in checks if not c.ok]
    if not failed:
        return
    try:
        exact = mxnet_forward(graph, feeds, [c.name for c in failed], float64=True)
    except Exception:  # an op without float64 support, or a dtype-pinned graph
        return
    for check in failed:
        check.fp64 = (_errors(actual[check.name], exact[check.name])[1],
                      _errors(reference[check.name], exact[check.name])[1])


def compare(actual: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
            tolerance: float) -> List[OutputCheck]:
    """One OutputCheck per reference output."""
    return [OutputCheck(name, *_errors(actual[name], ref), tolerance)
            for name, ref in reference.items()]
