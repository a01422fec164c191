"""Segments: a cycle-free group of op nodes that runs as one stage, and what crosses its border.

The shared piece below partitioning (which decides the segments) and export (which writes each
one's ONNX): both import it from here, neither imports the other at module level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

from .frontend import Graph

__all__ = ["Segment", "describe_nodes"]


@dataclass
class Segment:
    """A cycle-free group of op nodes that runs as one stage."""

    kind: str  # 'engine' (TensorRT) | 'onnx' (ONNX Runtime) | 'residual' (MXNet)
    nodes: List[int]  # op node indices, topologically ordered
    inputs: List[str] = field(default_factory=list)  # tensors consumed from outside
    outputs: List[str] = field(default_factory=list)  # tensors used outside or model outputs
    params: List[str] = field(default_factory=list)  # param keys its nodes use
    name: str = ""

    @property
    def key(self) -> Tuple[Tuple[int, ...], Tuple[str, ...]]:
        return tuple(self.nodes), tuple(self.outputs)


def describe_nodes(graph: Graph, nodes: List[int], kind: str) -> Segment:
    """A Segment for ``nodes``: the tensors it reads from outside, the params it uses, and the
    tensors it produces that are used outside or are model outputs."""
    inside = set(nodes)
    consumers = graph.consumers()
    heads = set(graph.heads)
    inputs: List[str] = []
    params: List[str] = []
    outputs: List[str] = []
    for idx in nodes:
        for src, out in graph.nodes[idx].inputs:
            producer = graph.nodes[src]
            if producer.is_op and src in inside:
                continue
            if not producer.is_op and producer.param_key is not None:
                if producer.param_key not in params:
                    params.append(producer.param_key)
                continue
            name = graph.tensor((src, out))
            if name not in inputs:
                inputs.append(name)
    for idx in nodes:
        node = graph.nodes[idx]
        used_outside = {c for c in consumers[idx] if c not in inside}
        for out, name in enumerate(node.outputs):
            external = (idx, out) in heads or any(
                (idx, out) in graph.nodes[c].inputs for c in used_outside)
            if external and name not in outputs:
                outputs.append(name)
    return Segment(kind=kind, nodes=list(nodes), inputs=inputs, outputs=outputs, params=params)
