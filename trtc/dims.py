"""Dynamic input dimensions that must agree: which axes of a dynamic bundle's inputs MXNet's shape
inference ties together (two inputs added elementwise need the same batch), found at compile time
by asking MXNet, so that the runtime can refuse a call MXNet itself would refuse instead of
running the engines on mismatched shapes.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from .frontend import Graph

__all__ = ["dim_groups"]

Axis = Tuple[str, int]


def _infers(symbol: Any, fixed: Dict[str, Tuple[int, ...]],
            shapes: Dict[str, Tuple[int, ...]]) -> bool:
    """Does MXNet's shape inference accept these input shapes (weights at ``fixed``)?"""
    try:  # the _impl call: the public one prints its arguments on stdout on an error
        _, out, _ = symbol._infer_shape_impl(False, **shapes, **fixed)
    except Exception:  # MXNetError: the shapes contradict
        return False
    return out is not None and all(s is not None and 0 not in s for s in out)


def dim_groups(graph: Graph) -> List[List[Axis]]:
    """Groups of (input, axis) of a dynamic model whose sizes must be equal: an axis that MXNet
    refuses to change alone (others at their opt shape), and the fewest other axes that, changed
    to the same size, make it accept. Equality only: an axis tied by other arithmetic is left
    unchecked. Static models: none. Cost: a few shape inferences per dynamic axis."""
    if not graph.input_ranges:
        return []
    opt = {name: tuple(r[1]) for name, r in graph.input_ranges.items()}
    for name, shape, _ in graph.inputs:
        opt.setdefault(name, tuple(graph.shapes.get(name, ())))
    ranges = graph.input_ranges
    symbol = graph.mxnet_symbol()
    fixed = {k.split(":", 1)[1]: v.shape for k, v in graph.params.items()}
    axes: List[Axis] = [(n, a) for n, (lo, _, hi) in ranges.items()
                        for a in range(len(lo)) if lo[a] != hi[a]]

    def changed(values: Dict[Axis, int]) -> Dict[str, Tuple[int, ...]]:
        shapes = {n: list(s) for n, s in opt.items()}
        for (n, a), v in values.items():
            shapes[n][a] = v
        return {n: tuple(s) for n, s in shapes.items()}

    groups: List[List[Axis]] = []
    grouped = set()
    for axis in axes:
        if axis in grouped:
            continue
        name, a = axis
        lo, o, hi = ranges[name][0][a], ranges[name][1][a], ranges[name][2][a]
        value = lo if lo != o else hi
        if _infers(symbol, fixed, changed({axis: value})):
            continue  # free on its own
        partners = [e for e in axes if e != axis and e not in grouped
                    and ranges[e[0]][0][e[1]] <= value <= ranges[e[0]][2][e[1]]]
        members = [axis] + partners
        if not _infers(symbol, fixed, changed({e: value for e in members})):
            continue  # not an equality MXNet accepts: leave it unchecked
        for e in partners:  # drop the partners it does not need
            trial = [m for m in members if m != e]
            if _infers(symbol, fixed, changed({m: value for m in trial})):
                members = trial
        if len(members) > 1:
            groups.append(members)
            grouped.update(members)
    return groups
