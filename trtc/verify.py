"""The compile-time accuracy gate: run the bundle on the CPU path, compare with MXNet's forward.

Two comparisons per sample:
- **end to end**: the bundle runs stage after stage on the gate's inputs; every model output
  and every tensor crossing a stage boundary is compared with MXNet's forward of the model.
- **local**: every engine stage runs again on *MXNet's* values of its inputs, and its outputs are
  compared with MXNet's: the engine's own error, free of the noise its predecessors pass on.

Tensors computed after a discontinuous op (NMS, top-k, sort, argmax, comparisons) whose input
carries rounding noise can legitimately differ from MXNet: noise of 1e-7 reorders tied scores.
Such tensors are compared order-insensitively (sorted values); when they still differ, the
report says so and the gate does not fail on them, provided every stage passes locally on the
tensors before the discontinuity.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from .frontend import Graph
from .memory import note
from .runtime._native import quiet_native
from .runtime.bundle import range_text
from ._isolate import signal_text
from .runtime.errors import CompileError, UsageError
from ._defaults import FP16_TOLERANCE

__all__ = ["OutputCheck", "GateResult", "random_inputs", "gate_inputs", "gate_shapes", "load_verify_inputs",
           "mxnet_forward", "ReferenceFailed", "gate_memory", "compare", "recheck_in_fp64", "discontinuities", "run_gate",
           "fp16_tensors", "degenerate_outputs", "length_range", "tie_order_recheck"]

# A tensor that fails against MXNet's fp32 forward still passes when the model is
# ill-conditioned there (MXNet's own fp32 result is more than ILL_CONDITIONED off its fp64
# result, ~100 fp32 rounding steps) and, against MXNet's fp64 forward, trtc is within the
# tolerance or no further off than FP64_SLACK times MXNet's own fp32 error.
ILL_CONDITIONED = 1e-5
FP64_SLACK = 2.0

# Ops whose output jumps when their input moves by a rounding step.
DISCONTINUOUS_OPS = {
    "_contrib_box_nms", "box_nms", "_contrib_box_non_maximum_suppression", "topk", "argsort",
    "sort", "argmax", "argmin", "argmax_channel", "round", "rint", "floor", "ceil", "fix",
    "sign", "_contrib_MultiBoxDetection", "_contrib_Proposal", "_contrib_MultiProposal",
    "_greater", "_greater_equal", "_lesser", "_lesser_equal", "_equal", "_not_equal",
    "_greater_scalar", "_greater_equal_scalar", "_lesser_scalar", "_lesser_equal_scalar",
    "_equal_scalar", "_not_equal_scalar", "broadcast_greater", "broadcast_greater_equal",
    "broadcast_lesser", "broadcast_lesser_equal", "broadcast_equal", "broadcast_not_equal",
    "_contrib_bipartite_matching", "_contrib_box_encode",
}


@dataclass
class OutputCheck:
    """Error of one tensor: max |trtc - mxnet| and that divided by max |mxnet|.

    ``scope``: 'end_to_end' (the bundle's run) or 'local' (``stage`` run on MXNet's inputs).
    ``after``: the discontinuous op upstream of the tensor ('' if none); such a tensor is
    compared order-insensitively (``order_insensitive``) and does not fail the gate.
    ``fp64`` is set when the fp32 comparison failed and MXNet could run in float64:
    (trtc's relative error, MXNet fp32's relative error), both against MXNet's fp64 forward."""

    name: str
    max_abs: float
    relative: float
    tolerance: float
    fp64: Optional[Tuple[float, float]] = None
    kind: str = "output"  # 'output' | 'boundary'
    scope: str = "end_to_end"  # 'end_to_end' | 'local'
    stage: str = ""
    after: str = ""
    order_insensitive: bool = False
    only_nonfinite: bool = False
    half: str = ""  # computed in float16 inside the model, after this op: fp16 tolerance
    tie_order: bool = False  # index op output: other indices of equal values (tie_order_recheck)

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
    def blocking(self) -> bool:
        """Does this check fail the gate?"""
        return not self.ok and not self.after

    @property
    def boundary(self) -> bool:
        return self.kind == "boundary"

    @property
    def note(self) -> str:
        """One line on how the tensor was judged, or ''."""
        notes = []
        if self.after and (self.order_insensitive or not self.ok):
            how = "order-insensitively (sorted values)" if self.order_insensitive else "element-wise"
            notes.append(f"after {self.after}: compared {how}"
                         + ("" if self.ok else "; differs by tie order/selection, not counted"))
        if self.only_nonfinite:
            notes.append("MXNet's values are all NaN/Inf: only their positions were compared")
        if self.tie_order:
            notes.append("indices differ from MXNet's only among equal input values (ties in "
                         "another order): the same values selected")
        if self.half:
            notes.append(f"computed in float16 inside the model (after {self.half}): judged at "
                         f"the fp16 tolerance {self.tolerance:g}")
        if self.fp64 is not None:
            ours, theirs = self.fp64
            notes.append(f"against MXNet's fp64 forward: trtc {ours:.3g}, MXNet fp32 itself "
                         f"{theirs:.3g}" + (" (ill-conditioned: fp32 rounding, not trtc)" if self.ok else ""))
        return "; ".join(notes)

    def to_json(self) -> Dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "blocking": self.blocking, "note": self.note}


@dataclass
class GateResult:
    """Every check of the gate (worst over the samples) and how the inputs were made."""

    checks: List[OutputCheck] = field(default_factory=list)
    inputs: str = ""
    samples: int = 1
    # model outputs shaped (batch, classes): fraction of rows whose argmax agrees with MXNet's
    top1: Dict[str, float] = field(default_factory=dict)
    top1_rows: Dict[str, int] = field(default_factory=dict)  # rows compared, over all samples
    # float model output -> one (shape and bytes digest, all zeros) per sample of MXNet's output
    seen: Dict[str, List[Tuple[str, bool]]] = field(default_factory=dict)

    @property
    def failed(self) -> List[OutputCheck]:
        return [c for c in self.checks if c.blocking]


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------
_LENGTH_NAME = re.compile(r"(valid_?len|length|(^|_)lens?($|_|\d)|seq_?len)", re.IGNORECASE)
_MASK_NAME = re.compile(r"mask", re.IGNORECASE)
# ops an id tensor passes through unchanged on its way to an Embedding
_ID_PASSTHROUGH = {"Cast", "cast", "Reshape", "reshape", "expand_dims", "squeeze", "transpose",
                   "slice", "slice_axis", "slice_like", "_copy", "identity", "Flatten", "flatten",
                   "SwapAxis", "swapaxes"}


def _reached(graph: Graph, name: str) -> List[Tuple[Any, int]]:
    """(node, input position) of every op input that input ``name`` reaches unchanged (directly
    or through casts, reshapes and slices: ``_ID_PASSTHROUGH``)."""
    consumers: Dict[Tuple[int, int], List[Tuple[int, int]]] = {}
    for node in graph.op_nodes:
        for pos, entry in enumerate(node.inputs):
            consumers.setdefault(entry, []).append((node.index, pos))
    start = next((n.index for n in graph.nodes if not n.is_op and n.name == name), None)
    if start is None:
        return []
    reached: List[Tuple[Any, int]] = []
    frontier, seen = [(start, 0)], set()
    while frontier:
        entry = frontier.pop()
        if entry in seen:
            continue
        seen.add(entry)
        for idx, pos in consumers.get(entry, []):
            node = graph.nodes[idx]
            reached.append((node, pos))
            if node.op in _ID_PASSTHROUGH and pos == 0:
                frontier.extend((idx, o) for o in range(max(len(node.outputs), 1)))
    return reached


def id_range(graph: Graph, name: str, refused_only: bool = False) -> Optional[Tuple[int, str]]:
    """If input ``name`` (possibly through casts/reshapes) indexes an Embedding, ``take`` or
    ``one_hot``: (the number of valid ids, the node that bounds them). ``refused_only``: only
    ops whose ids outside that range the runtime refuses; not ``take`` in its modes 'clip' (its
    default) and 'wrap', which MXNet and its ONNX both clip or wrap."""
    bounds: List[Tuple[int, str]] = []
    for node, pos in _reached(graph, name):
        if node.op == "Embedding" and pos == 0 and "input_dim" in node.attrs:
            bounds.append((int(node.attrs["input_dim"]), node.name))
        elif node.op == "take" and pos == 1 and (
                not refused_only or node.attrs.get("mode", "clip") == "raise"):
            table = graph.shapes.get(graph.tensor(node.inputs[0]), ())
            axis = int(node.attrs.get("axis", "0"))
            if table:
                bounds.append((int(table[axis]), node.name))
        elif node.op == "one_hot" and "depth" in node.attrs:
            bounds.append((int(node.attrs["depth"]), node.name))
    return min(bounds) if bounds else None


def _true(value: Optional[str]) -> bool:
    return str(value).lower() in ("true", "1")


def _length_axis(node: Any, pos: int) -> Optional[int]:
    """The axis of ``node``'s data input that input ``pos`` gives lengths along, or None when
    that input is no sequence length: SequenceMask/Last/Reverse and the fused RNN with
    ``use_sequence_length``, softmax/log_softmax with ``use_length``."""
    attrs = node.attrs
    if node.op in ("SequenceMask", "SequenceLast", "SequenceReverse") and pos == 1:
        if _true(attrs.get("use_sequence_length")):
            return 0 if node.op == "SequenceReverse" else int(attrs.get("axis", "0"))
    elif node.op == "RNN" and pos == len(node.inputs) - 1 and _true(attrs.get("use_sequence_length")):
        return 0  # the fused RNN's data is TNC
    elif node.op in ("softmax", "log_softmax") and pos == 1 and _true(attrs.get("use_length")):
        return int(attrs.get("axis", "-1"))
    return None


def length_range(graph: Graph, name: str,
                 shapes: Optional[Mapping[str, Tuple[int, ...]]] = None) -> Optional[Tuple[int, str]]:
    """If input ``name`` reaches an op's sequence-length argument (issue 22: Gluon names it
    ``data1``, so its name says nothing): (the longest valid length L, that op's name), at the
    input ``shapes`` of this run (default: the graph's own). Lengths in [1, L] mask something and
    keep something; uniform [0, 1) floats truncate to 0 and mask everything."""
    found = [(node, axis) for node, pos in _reached(graph, name)
             if (axis := _length_axis(node, pos)) is not None]
    if not found:
        return None
    known = _shapes_at(graph, shapes)
    bounds = []
    for node, axis in found:
        data = known.get(graph.tensor(node.inputs[0]), ())
        if data:
            bounds.append((int(data[axis]), node.name))
    return min(bounds) if bounds else None


def _shapes_at(graph: Graph, shapes: Optional[Mapping[str, Tuple[int, ...]]]
               ) -> Mapping[str, Tuple[int, ...]]:
    """Every tensor's shape with the inputs at ``shapes`` (MXNet's shape inference over the
    whole graph); the graph's own shapes where those are the same (or no other is given)."""
    if not shapes or all(tuple(graph.shapes.get(n, ())) == tuple(s) for n, s in shapes.items()):
        return graph.shapes
    try:
        internals, out_shapes = graph.internal_shapes(shapes)
    except Exception:  # checked elsewhere (frontend.check_input_shapes)
        return graph.shapes
    return {n: tuple(s) for n, s in zip(internals.list_outputs(), out_shapes) if s is not None}


def gate_shapes(graph: Graph) -> List[Dict[str, Tuple[int, ...]]]:
    """The input shapes the gate runs: the only one of a static model; for a dynamic one the
    range's min, opt and max, and one odd size in between (e.g. batch 1, 8, 32 and 13)."""
    if not graph.is_dynamic:
        return [{n: tuple(s) for n, s, _ in graph.inputs}]
    picks: List[Dict[str, Tuple[int, ...]]] = []
    for which in ("min", "opt", "max", "odd"):
        shapes = {}
        for name, shape, _ in graph.inputs:
            lo, opt, hi = graph.shape_range(name)
            if which == "odd":
                chosen = []
                for a, o, b in zip(lo, opt, hi):
                    mid = (a + b) // 2 | 1
                    while mid in (a, o, b) and mid < b:
                        mid += 1
                    chosen.append(min(max(mid, a), b))
                shapes[name] = tuple(chosen)
            else:
                shapes[name] = {"min": lo, "opt": opt, "max": hi}[which]
        if shapes not in picks:
            picks.append(shapes)
    return picks


def gate_memory(graph: Graph, runs: Sequence[Mapping[str, Tuple[int, ...]]]) -> Tuple[int, str]:
    """A lower bound of the memory the accuracy gate needs to run MXNet's forward at each of
    ``runs`` (input shapes), and what dominates it. All samples' inputs are held at once; at
    the worst run, MXNet must hold that run's inputs and, at some op, the op's activation inputs
    and outputs together. Real use is higher (MXNet's pools, ONNX Runtime's own run, copies)."""
    source = graph.reference or graph
    weights = {k.split(":", 1)[1] for k in source.params}
    held, worst, what = 0, 0, ""
    for shapes in runs:
        try:
            internals, out_shapes = source.internal_shapes(shapes)
        except Exception:  # checked elsewhere (frontend.check_input_shapes)
            continue
        size = {n: int(np.prod(s, dtype=np.int64)) * np.dtype(source.dtypes.get(n, "float32")).itemsize
                for n, s in zip(internals.list_outputs(), out_shapes) if s is not None}
        inputs = {n: size.get(n, 0) for n in shapes}
        held += sum(inputs.values())
        for node in source.op_nodes:
            live = dict(inputs)
            live.update({t: size.get(t, 0) for t in map(source.tensor, node.inputs) if t not in weights})
            live.update({t: size.get(t, 0) for t in node.outputs})
            extra = sum(live.values()) - sum(inputs.values())
            if extra > worst:
                shape_text = ", ".join(f"{n}:{'x'.join(map(str, s))}" for n, s in shapes.items())
                worst, what = extra, f"{node.op} '{node.name}' at {shape_text}"
    return held + worst, what


def gate_inputs(graph: Graph, seed: int, shapes: Optional[Mapping[str, Tuple[int, ...]]] = None
                ) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """Seeded inputs that mean something to the model, and one line per input saying how it was
    made. The rules (documented in the README):

    - an input that indexes an Embedding / take / one_hot (directly or through casts and
      reshapes): integer ids uniform in [0, size), whatever its dtype;
    - an input that reaches a sequence-length argument (SequenceMask/Last/Reverse, the fused
      RNN, softmax with ``use_length``; directly or through casts and reshapes): integers in
      [1, L], L the length of that op's sequence axis at this run's shapes;
    - an input named like a length (``valid_length``, ``seq_len``, ``lengths``...): integers in
      [1, L], L the largest non-batch dimension among the other inputs (a sequence length);
    - an input named like a mask: ones (nothing masked);
    - other integer inputs: integers in [0, 4); other float inputs: uniform [0, 1).
    """
    rng = np.random.default_rng(seed)
    feeds: Dict[str, np.ndarray] = {}
    how: List[str] = []
    shapes = dict(shapes or {})
    inputs = [(n, tuple(shapes.get(n, s)), d) for n, s, d in graph.inputs]
    for name, shape, dtype in inputs:
        dt = np.dtype(dtype)
        ids = id_range(graph, name)
        others = [s for n, s, _ in inputs if n != name and len(s) >= 2]
        lengths = None if ids is not None else length_range(graph, name, shapes)
        if ids is not None:
            feeds[name] = rng.integers(0, ids[0], size=shape).astype(dt)
            how.append(f"{name}: ids in [0, {ids[0]}) (indexes {ids[1]})")
        elif lengths is not None:
            feeds[name] = rng.integers(1, lengths[0] + 1, size=shape).astype(dt)
            how.append(f"{name}: lengths in [1, {lengths[0]}] (the sequence length of {lengths[1]})")
        elif _LENGTH_NAME.search(name) and others:
            limit = max(max(s[1:]) for s in others)
            feeds[name] = rng.integers(1, limit + 1, size=shape).astype(dt)
            how.append(f"{name}: lengths in [1, {limit}] (named like a length)")
        elif _MASK_NAME.search(name):
            feeds[name] = np.ones(shape, dtype=dt)
            how.append(f"{name}: ones (named like a mask)")
        elif dt.kind == "f":
            feeds[name] = rng.random(shape).astype(dt)
            how.append(f"{name}: uniform [0, 1)")
        else:
            feeds[name] = rng.integers(0, 4, size=shape).astype(dt)
            how.append(f"{name}: integers in [0, 4)")
    return feeds, how


def random_inputs(graph: Graph, seed: int) -> Dict[str, np.ndarray]:
    """The gate's seeded inputs (``gate_inputs`` without the description)."""
    return gate_inputs(graph, seed)[0]


def load_verify_inputs(graph: Graph, path: Path, flag: str = "--verify-inputs",
                       notes: Optional[List[str]] = None) -> List[Dict[str, np.ndarray]]:
    """Samples from ``--verify-inputs FILE.npz``: one array per model input, of the input's shape
    (one sample) or with one extra leading axis (that many samples). ``notes`` receives a line
    for each conversion made (an integer array feeding a float input: taken as is, unscaled).

    Raises:
        UsageError: unreadable file, a missing or unknown input, a wrong shape or dtype kind.
    """
    from .frontend import path_problem

    path = Path(path)
    problem = path_problem(path)
    if problem:
        problem = ": no such file" if problem == "does not exist" else f" {problem}"
        raise UsageError(f"{flag} {path}{problem} (an .npz holding one array per model input, "
                         "by input name)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as exc:
        raise UsageError(f"{flag} {path}: not a readable .npz ({type(exc).__name__}: "
                         f"{str(exc)[:120]})") from None
    expected = graph.input_names
    unknown = [n for n in arrays if n not in expected]
    missing = [n for n in expected if n not in arrays]
    if unknown or missing:
        what = f"has no array '{missing[0]}'" if missing else f"has '{unknown[0]}', not an input"
        raise UsageError(f"{flag} {path.name} {what}; the model's inputs are: "
                         f"{', '.join(expected)}")
    def fits(name: str, shape: Tuple[int, ...]) -> bool:
        lo, _, hi = graph.shape_range(name)
        return len(shape) == len(lo) and all(a <= d <= b for a, d, b in zip(lo, shape, hi))

    counts = set()
    for name, shape, dtype in graph.inputs:
        value = arrays[name]
        if fits(name, tuple(value.shape)):
            counts.add(1)
        elif value.ndim == len(shape) + 1 and fits(name, tuple(value.shape[1:])) and value.shape[0] > 0:
            counts.add(int(value.shape[0]))
        else:
            lo, _, hi = graph.shape_range(name)
            want = range_text(lo, hi)
            raise UsageError(f"{flag} {path.name}: '{name}' has shape {tuple(value.shape)}; "
                             f"expected {want} (one sample) or N x {want}")
        have = value.dtype.kind  # numbers only; integers may feed a float input, not the reverse
        if have not in "fiub" or (have == "f" and np.dtype(dtype).kind != "f"):
            raise UsageError(f"{flag} {path.name}: '{name}' is {value.dtype}; the input is {dtype}")
        if have in "iub" and np.dtype(dtype).kind == "f" and notes is not None:
            span = f"{value.min()}..{value.max()}" if value.size else "empty"
            notes.append(f"{flag} {path.name}: '{name}' is {value.dtype} (values {span}) for a "
                         f"{dtype} input: converted as is, not scaled; if the model expects "
                         "normalized inputs, normalize them in the file")
    counts.discard(1)
    if len(counts) > 1:
        raise UsageError(f"{flag} {path.name}: inputs hold different numbers of samples "
                         f"({sorted(counts)})")
    n = counts.pop() if counts else 1
    samples = []
    for i in range(n):
        sample = {}
        for name, shape, dtype in graph.inputs:
            value = arrays[name]
            value = value if fits(name, tuple(value.shape)) else value[i]
            sample[name] = np.ascontiguousarray(value.astype(dtype, copy=False))
        samples.append(sample)
    return samples


# ----------------------------------------------------------------------------------------------
# MXNet's reference
# ----------------------------------------------------------------------------------------------
def mxnet_forward(graph: Graph, feeds: Mapping[str, np.ndarray],
                  tensors: Optional[List[str]] = None, float64: bool = False,
                  spill: Optional[str] = None) -> Mapping[str, np.ndarray]:
    """MXNet's own forward pass of the model as exported (before constant folding) on the CPU;
    returns the model outputs, or ``tensors`` (any internal tensor names) when given.
    ``float64`` runs float32 params and inputs in float64. ``spill``: a directory; each tensor
    is written there as it is read off MXNet and the result is a :class:`SpilledTensors` that
    loads one when asked (the accuracy gate's reference of every stage boundary, gigabytes for
    a detector, is never in memory at once, neither here nor in the child).

    It runs in a forked child process (trtc/_isolate.py): MXNet's CPU operators crash the
    process on some inputs (SIGSEGV, SIGFPE, abort), and the compiler must survive that.

    Raises:
        ReferenceFailed: MXNet crashed, or raised, running the model on these inputs.
        MemoryError: MXNet (or the kernel) ran out of memory.
    """
    from ._isolate import NativeCrash, in_child

    try:
        found = in_child("MXNet's forward", _mxnet_forward_here, graph, feeds, tensors, float64,
                         spill)
    except NativeCrash as crash:
        if crash.signum == signal.SIGKILL:
            raise MemoryError(f"MXNet's forward was killed (SIGKILL) at {_shapes_text(feeds)}, "
                              "most likely by the kernel for lack of memory") from None
        raise ReferenceFailed(f"MXNet's own forward crashed ({signal_text(crash.signum) if crash.signum else crash}) "
                              f"at {_shapes_text(feeds)}", feeds) from None
    return SpilledTensors(spill, found) if spill is not None else found


class SpilledTensors(Mapping[str, np.ndarray]):
    """Tensors :func:`mxnet_forward` wrote to a directory (``0.npy``, ``1.npy``... in order),
    each loaded from disk whenever it is looked up; the caller owns the directory."""

    def __init__(self, directory: str, names: Sequence[str]):
        self._paths = {name: os.path.join(directory, f"{i}.npy") for i, name in enumerate(names)}

    def __getitem__(self, name: str) -> np.ndarray:
        return np.load(self._paths[name])

    def __iter__(self) -> Any:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


class ReferenceFailed(CompileError):
    """MXNet's own forward (the reference of the accuracy gate, of fp16 and int8 calibration)
    crashed or raised on these inputs: MXNet cannot run the model there."""

    def __init__(self, message: str, feeds: Optional[Mapping[str, np.ndarray]] = None):
        super().__init__(message)
        self.shapes = {n: tuple(v.shape) for n, v in (feeds or {}).items()}

    def __reduce__(self) -> Any:  # raised in the child process, re-raised in the compiler
        return (_rebuild_reference_failed, (str(self), self.shapes))


def _rebuild_reference_failed(message: str, shapes: Dict[str, Tuple[int, ...]]) -> "ReferenceFailed":
    error = ReferenceFailed(message)
    error.shapes = shapes
    return error


def _shapes_text(feeds: Mapping[str, np.ndarray]) -> str:
    return ", ".join(f"{n}:{'x'.join(map(str, np.shape(v)))}" for n, v in feeds.items()) or "no inputs"


# How MXNet, ONNX Runtime (its BFC arena) and numpy say an allocation failed.
_OUT_OF_MEMORY = re.compile(r"bad_alloc|out of memory|(failed|unable) to allocate|cannot allocate|"
                            r"bfc_arena", re.I)


def _mxnet_forward_here(graph: Graph, feeds: Mapping[str, np.ndarray],
                        tensors: Optional[List[str]], float64: bool,
                        spill: Optional[str] = None) -> Any:
    """:func:`mxnet_forward` in the calling process (with ``spill``: the names written)."""
    import mxnet as mx

    graph = graph.reference or graph

    def array(value: np.ndarray) -> Any:
        dtype = np.float64 if float64 and value.dtype == np.float32 else value.dtype
        return mx.nd.array(value, dtype=dtype)

    symbol = graph.mxnet_symbol()
    names = list(tensors) if tensors is not None else list(graph.outputs)
    if tensors is not None:
        internals = symbol.get_internals()
        symbol = mx.sym.Group([internals[name] for name in names])
    wanted = set(symbol.list_arguments()) | set(symbol.list_auxiliary_states())
    args = {k.split(":", 1)[1]: array(v) for k, v in graph.params.items()
            if k.startswith("arg:") and k.split(":", 1)[1] in wanted}
    aux = {k.split(":", 1)[1]: array(v) for k, v in graph.params.items()
           if k.startswith("aux:") and k.split(":", 1)[1] in wanted}
    for name, value in feeds.items():
        if name in wanted:
            args[name] = array(value)
    # oneDNN's subgraph fusion (conv + sum in place) overwrites intermediate tensors that a
    # Group of internals reads: the reference runs unfused.
    previous = os.environ.get("MXNET_SUBGRAPH_BACKEND")
    os.environ["MXNET_SUBGRAPH_BACKEND"] = "NONE"
    try:
        with quiet_native():  # MXNet logs "MXNET_SUBGRAPH_BACKEND=NONE is detected" at bind
            executor = symbol.bind(mx.cpu(), args, aux_states=aux, grad_req="null")
            outputs = executor.forward(is_train=False)
            if spill is None:
                return {name: out.asnumpy() for name, out in zip(names, outputs)}
            for i, out in enumerate(outputs):  # one host copy at a time
                np.save(os.path.join(spill, f"{i}.npy"), out.asnumpy())
            return names
    except MemoryError:
        raise
    except Exception as exc:  # MXNetError (bind's shape checks, an operator's own check)
        from .runtime.stages.residual import mxnet_error_text

        text = mxnet_error_text(exc, 300)
        if _OUT_OF_MEMORY.search(str(exc)):
            raise MemoryError(f"MXNet's forward at {_shapes_text(feeds)}: {text}") from None
        raise ReferenceFailed(f"MXNet's own forward fails at {_shapes_text(feeds)}: {text}",
                              feeds) from None
    finally:
        if previous is None:
            del os.environ["MXNET_SUBGRAPH_BACKEND"]
        else:
            os.environ["MXNET_SUBGRAPH_BACKEND"] = previous


# ----------------------------------------------------------------------------------------------
# Comparison
# ----------------------------------------------------------------------------------------------
# Elements compared at a time: float64 copies of a chunk, never of a whole tensor (a detector's
# 766 MB ROIAlign output took 9 GB of temporaries compared at once).
_CHUNK = 1 << 20


def _errors(got: np.ndarray, ref: np.ndarray) -> Tuple[float, float]:
    """(max |got - ref|, that / max |ref|) over the finite entries of ``ref``; (inf, inf) when
    the shapes differ or the non-finite entries (NaN, +-inf) are not the same in both; NaN when
    ``got`` is NaN where ``ref`` is finite (a failed check either way). In float64, a chunk of
    ``_CHUNK`` elements at a time."""
    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape:
        return float("inf"), float("inf")
    got, ref = got.reshape(-1), ref.reshape(-1)
    max_abs, scale, compared, nan = 0.0, 0.0, False, False
    for start in range(0, ref.size, _CHUNK):
        g = got[start:start + _CHUNK].astype(np.float64)
        r = ref[start:start + _CHUNK].astype(np.float64)
        finite = np.isfinite(r)
        if not finite.all():
            if not np.array_equal(g[~finite], r[~finite], equal_nan=True):
                return float("inf"), float("inf")
            g, r = g[finite], r[finite]
        if not r.size:
            continue
        diff = float(np.abs(g - r).max())
        nan = nan or diff != diff
        max_abs, scale, compared = max(max_abs, diff), max(scale, float(np.abs(r).max())), True
    if not compared:
        return 0.0, 0.0
    if nan:
        max_abs = float("nan")
    return max_abs, max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))


def _sorted_errors(got: np.ndarray, ref: np.ndarray) -> Tuple[float, float]:
    """``_errors`` on the sorted values of each batch item (order-insensitive)."""
    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape:
        return float("inf"), float("inf")
    lead = got.shape[0] if got.ndim > 1 else 1
    return _errors(np.sort(got.reshape(lead, -1), axis=1), np.sort(ref.reshape(lead, -1), axis=1))


def recheck_in_fp64(graph: Graph, feeds: Mapping[str, np.ndarray], checks: List[OutputCheck],
                    actual: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> None:
    """For each failed check, compare trtc and MXNet's fp32 result with MXNet's fp64 forward
    (sets ``check.fp64``). Ill-conditioned models (huge activations, cancellation before a
    saturating op) make fp32 results differ by rounding alone; this tells that apart from a
    wrong engine. Models MXNet cannot run in float64 keep the fp32 verdict."""
    failed = [c for c in checks if not c.ok and not c.after]
    if not failed:
        return
    try:
        exact = mxnet_forward(graph, feeds, sorted({c.name for c in failed}), float64=True)
    except Exception:  # an op without float64 support, or a dtype-pinned graph
        return
    for check in failed:
        check.fp64 = (_errors(actual[check.name], exact[check.name])[1],
                      _errors(reference[check.name], exact[check.name])[1])


def compare(actual: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
            tolerance: float, after: Optional[Mapping[str, str]] = None,
            half: Optional[Mapping[str, str]] = None, **fields: Any) -> List[OutputCheck]:
    """One OutputCheck per reference tensor; tensors in ``after`` (name -> discontinuous op) are
    compared order-insensitively when the element-wise comparison fails; tensors in ``half``
    (name -> the float16 op upstream: ``fp16_tensors``) at least at the fp16 tolerance."""
    after = after or {}
    half = half or {}
    checks = []
    for name, ref in reference.items():
        tol = max(tolerance, FP16_TOLERANCE) if name in half else tolerance
        check = OutputCheck(name, *_errors(actual[name], ref), tol, after=after.get(name, ""),
                            half=half.get(name, "") if tol > tolerance else "", **fields)
        if check.after and not check.ok:
            sorted_check = OutputCheck(name, *_sorted_errors(actual[name], ref), tol)
            check.max_abs, check.relative = sorted_check.max_abs, sorted_check.relative
            check.order_insensitive = True
        ref_arr = np.asarray(ref)
        check.only_nonfinite = bool(ref_arr.size) and ref_arr.dtype.kind == "f" and \
            not np.isfinite(ref_arr).any()
        checks.append(check)
    return checks


# ----------------------------------------------------------------------------------------------
# Discontinuities
# ----------------------------------------------------------------------------------------------
def fp16_tensors(graph: Graph, within: Optional[Sequence[int]] = None) -> Dict[str, str]:
    """Tensor -> the first op that made a float16 tensor on its way, for every tensor computed
    from float16 values inside the model (a ``Cast`` to float16 in an fp32 model): MXNet and
    trtc both round to float16 there, in different orders, so such tensors are judged at the
    fp16 tolerance. ``within``: only paths through these op nodes count (as in
    ``discontinuities``)."""
    allowed: Optional[Set[int]] = set(within) if within is not None else None
    source: Dict[Tuple[int, int], str] = {}
    for node in graph.op_nodes:
        if allowed is not None and node.index not in allowed:
            continue
        upstream = next((source[e] for e in node.inputs if e in source), "")
        for out, name in enumerate(node.outputs):
            if upstream:
                source[(node.index, out)] = upstream
            elif graph.dtypes.get(name) == "float16":
                source[(node.index, out)] = f"{node.name} ({node.op})"
    return {graph.tensor(e): op for e, op in source.items()}


def discontinuities(graph: Graph, within: Optional[Sequence[int]] = None) -> Dict[str, str]:
    """Tensor -> the discontinuous op it is computed after, for every tensor downstream of a
    discontinuous op one of whose inputs carries rounding noise (depends on a weight). Ops on
    inputs alone (``arange < valid_length`` masks) round identically everywhere: not counted.

    ``within``: only paths through these op nodes count (a stage's own ops; its inputs are then
    exact MXNet values)."""
    allowed: Optional[Set[int]] = set(within) if within is not None else None
    noisy: Dict[Tuple[int, int], bool] = {}
    after: Dict[Tuple[int, int], str] = {}
    for node in graph.nodes:
        if not node.is_op:
            noisy[(node.index, 0)] = node.param_key is not None
            continue
        inside = allowed is None or node.index in allowed
        in_noisy = inside and any(noisy.get(e, False) for e in node.inputs)
        upstream = next((after[e] for e in node.inputs if e in after), "") if inside else ""
        for out in range(len(node.outputs)):
            entry = (node.index, out)
            noisy[entry] = in_noisy
            if node.op in DISCONTINUOUS_OPS and in_noisy:
                after[entry] = f"{node.name} ({node.op})"
            elif upstream:
                after[entry] = upstream
    return {graph.tensor(e): op for e, op in after.items()}


# ----------------------------------------------------------------------------------------------
# The gate
# ----------------------------------------------------------------------------------------------
def _merge_worst(into: Dict[Tuple[str, str, str], OutputCheck], checks: List[OutputCheck]) -> None:
    for check in checks:
        key = (check.scope, check.stage, check.name)
        old = into.get(key)
        if old is None or (old.ok and not check.ok) or (old.ok == check.ok and not
                                                          check.relative <= old.relative):
            into[key] = check


def run_gate(graph: Graph, model: Any, segments: Sequence[Any],
             samples: List[Dict[str, np.ndarray]], tolerance: float) -> GateResult:
    """Run ``model`` (a CPU-path trtc.runtime Model of ``segments``) on each sample stage by
    stage; compare end to end and locally (each engine and ONNX Runtime stage on MXNet's own
    inputs) with MXNet.

    Memory: the gate holds one stage's worth of tensors, not the whole model's. MXNet's
    reference tensors are written to disk by the child that computes them and loaded per stage;
    each stage's outputs are compared as soon as it has run, and every tensor is dropped after
    its last reader. ``model`` should be loaded with ``memory_arena=False`` (each ONNX Runtime
    stage then frees its buffers when its run returns)."""
    outputs = set(graph.outputs)
    stages = list(model.stages)
    by_name = {seg.name: seg for seg in segments}
    produced = [t for stage in stages for t in stage.outputs]
    # a random op's own draws differ from any other run's, MXNet's reference included: not
    # compared (what depends on them downstream still is)
    from .partition import is_random_op
    draws = {t for n in graph.op_nodes if is_random_op(n.op) for t in n.outputs}
    names = [t for t in dict.fromkeys(graph.outputs + produced) if t not in draws]
    unproduced = [t for t in names if t not in set(produced)]  # an output that is an input
    last_read = {t: i for i, stage in enumerate(stages) for t in stage.inputs}
    last_read.update({t: len(stages) for t in unproduced})
    after_e2e = discontinuities(graph)
    judged = ("engine", "onnx")  # stages judged locally: what MXNet runs is the reference itself
    after_local = {seg.name: discontinuities(graph, seg.nodes) for seg in segments
                   if seg.kind in judged}
    half_e2e = fp16_tensors(graph)
    half_local = {seg.name: fp16_tensors(graph, seg.nodes) for seg in segments
                  if seg.kind in judged}
    positions = {t for n in graph.op_nodes if n.op in INDEX_OPS for t in n.outputs}
    worst: Dict[Tuple[str, str, str], OutputCheck] = {}
    agree: Dict[str, List[bool]] = {}
    gate_seen: Dict[str, List[Tuple[str, bool]]] = {}

    def end_to_end(sample: Mapping[str, np.ndarray], actual: Dict[str, np.ndarray],
                   reference: Dict[str, np.ndarray], stage: str) -> None:
        for name in actual:
            ref = reference[name]
            if name in outputs and ref.dtype.kind == "f":
                gate_seen.setdefault(name, []).append(_digest(ref))
            if name in outputs and ref.ndim == 2 and ref.shape[1] > 1 \
                    and actual[name].shape == ref.shape and name not in positions:
                agree.setdefault(name, []).extend(  # (batch, classes) scores, not indices
                    (np.argmax(actual[name], axis=1) == np.argmax(ref, axis=1)).tolist())
        e2e = compare(actual, reference, tolerance, after_e2e, half_e2e, stage=stage)
        for check in e2e:
            check.kind = "output" if check.name in outputs else "boundary"
        recheck_in_fp64(graph, sample, e2e, actual, reference)
        _merge_worst(worst, e2e)

    import tempfile

    for sample in samples:
        tensors: Dict[str, np.ndarray] = model.validate_inputs(sample)
        with tempfile.TemporaryDirectory(prefix="trtc-gate-") as spill:
            # MXNet first, in its child process: where it crashes, the bundle's MXNet stages
            # (run here, in-process) would crash too, and the error names MXNet's forward
            reference = mxnet_forward(graph, sample, names, spill=spill)
            note("MXNet's reference forward")
            for index, stage in enumerate(stages):
                out = stage.run(tensors)
                tensors.update(out)
                mine = [t for t in stage.outputs if t in reference]
                expected = {t: reference[t] for t in mine}
                end_to_end(sample, {t: tensors[t] for t in mine}, expected, stage.name)
                seg = by_name.get(stage.name)
                if seg is not None and seg.kind in judged:
                    exact = {t: reference[t] for t in stage.inputs if t in reference}
                    stage_inputs = {t: exact.get(t, tensors[t]) for t in stage.inputs}
                    if not all(np.array_equal(tensors[t], v) for t, v in exact.items()):
                        out = stage.run(stage_inputs)
                    del exact
                    local_out = {t: v for t, v in out.items() if t not in draws}
                    local = compare(local_out, {t: expected[t] for t in local_out}, tolerance,
                                    after_local[stage.name], half_local[stage.name],
                                    scope="local", stage=stage.name)
                    for check in local:
                        check.kind = "output" if check.name in outputs else "boundary"
                    tie_order_recheck(graph, local, local_out, expected, stage_inputs)
                    recheck_in_fp64(graph, sample, local, local_out, expected)
                    _merge_worst(worst, local)
                    del local_out, stage_inputs
                del out, expected
                for t in [t for t in tensors if last_read.get(t, -1) <= index]:
                    del tensors[t]  # read by no later stage: compared already
                note(f"gate: {stage.name}")
            if unproduced:
                end_to_end(sample, {t: tensors[t] for t in unproduced},
                           {t: reference[t] for t in unproduced}, "")
            del tensors
    return GateResult(checks=list(worst.values()), samples=len(samples),
                      top1={n: float(np.mean(v)) for n, v in agree.items() if v},
                      top1_rows={n: len(v) for n, v in agree.items() if v}, seen=gate_seen)


# ops whose output is positions in their input (topk: with ret_typ 'indices' or 'both')
INDEX_OPS = {"argsort", "topk", "argmax", "argmin"}


def tie_order_recheck(graph: Graph, checks: List[OutputCheck], got: Mapping[str, np.ndarray],
                      reference: Mapping[str, np.ndarray],
                      inputs: Mapping[str, np.ndarray]) -> None:
    """A failed local check of an index op's output (argsort, topk's indices, argmax/argmin)
    that only orders equal input values differently passes: both are valid answers (ONNX TopK
    puts the lower index first among equal values, MXNet's CPU sort does not promise an order;
    Mask R-CNN's argsort over scores with many ties failed its ONNX Runtime stage). Judged on
    the op's own input, where it is a stage input (``inputs``, MXNet's exact values): trtc's
    indices must be valid and distinct and select exactly the values MXNet's select."""
    producers = {t: node for node in graph.op_nodes for t in node.outputs}
    for check in checks:
        node = producers.get(check.name)
        if check.ok or node is None or node.op not in INDEX_OPS:
            continue
        data = inputs.get(graph.tensor(node.inputs[0]))
        if data is None or check.name not in got or check.name not in reference:
            continue
        if _same_selection(node, node.outputs.index(check.name), np.asarray(data),
                           np.asarray(got[check.name]), np.asarray(reference[check.name])):
            check.max_abs, check.relative, check.tie_order = 0.0, 0.0, True


def _same_selection(node: Any, output: int, data: np.ndarray, got: np.ndarray,
                    ref: np.ndarray) -> bool:
    """Do index arrays ``got`` and ``ref`` (output ``output`` of ``node``) pick the same values
    of ``data`` in the same order, ``got`` holding valid, distinct positions?"""
    attrs = node.attrs
    if got.shape != ref.shape or data.size == 0:
        return False
    if node.op == "topk":
        kind = attrs.get("ret_typ", "indices")
        if not ((kind == "indices" and output == 0) or (kind == "both" and output == 1)):
            return False
    if node.op in ("argmax", "argmin"):
        axis_text = attrs.get("axis", "None")
        if axis_text in ("None", ""):
            data, axis = data.reshape(-1), 0
            got, ref = got.reshape(1), ref.reshape(1)
        else:
            axis = int(axis_text) % data.ndim
            if got.ndim < data.ndim:  # keepdims=False
                got, ref = np.expand_dims(got, axis), np.expand_dims(ref, axis)
    else:
        axis = int(attrs.get("axis", "-1")) % data.ndim
    if not (np.all(np.isfinite(got)) and np.array_equal(got, np.round(got))):
        return False
    mine, theirs = got.astype(np.int64), ref.astype(np.int64)
    if mine.min() < 0 or mine.max() >= data.shape[axis]:
        return False
    ordered = np.sort(mine, axis=axis)
    if ordered.shape[axis] > 1 and np.any(np.diff(ordered, axis=axis) == 0):
        return False  # a position picked twice
    try:
        picked = np.take_along_axis(data, mine, axis=axis)
        wanted = np.take_along_axis(data, theirs, axis=axis)
    except (ValueError, IndexError):
        return False
    return bool(np.array_equal(picked, wanted, equal_nan=picked.dtype.kind == "f"))


def _digest(value: np.ndarray) -> Tuple[str, bool]:
    """(shape and a digest of the bytes, all zeros) of one output."""
    array = np.ascontiguousarray(value)
    return (f"{array.shape}:{hashlib.blake2b(array.tobytes(), digest_size=16).hexdigest()}",
            array.size > 0 and not np.any(array))


def degenerate_outputs(graph: Graph, gate: GateResult, samples: Sequence[Mapping[str, np.ndarray]],
                       seed: int) -> Dict[str, str]:
    """Float model outputs on which the gate's comparison proves little (issue 22: a length
    input fed uniform [0, 1) masked every position, the outputs were all zeros, and the gate
    said "max abs err 0 ok"): output -> why, for an output that is all zeros on every sample,
    or the same for two different inputs of one shape. Where no two samples share a shape,
    MXNet runs once more on inputs of another seed at the first sample's shapes."""
    keys = [_digest(np.concatenate([np.ascontiguousarray(sample[n]).view(np.uint8).ravel()
                                    for n in sorted(sample)]))[0] for sample in samples]
    seen = {name: list(zip(keys, digests)) for name, digests in gate.seen.items()}
    shapes = [tuple(sorted((n, v.shape) for n, v in sample.items())) for sample in samples]
    if seen and samples and len(set(shapes)) == len(shapes):  # no two samples of one shape
        first = {n: tuple(v.shape) for n, v in samples[0].items()}
        other, _ = gate_inputs(graph, seed + 1, first)
        if all(np.array_equal(other[n], samples[0][n]) for n in other):
            other = {n: v + 1 if v.dtype.kind == "f" else v for n, v in other.items()}
        extra = mxnet_forward(graph, other, list(seen))
        for name in seen:
            seen[name].append(("another seed", _digest(extra[name])))
    found: Dict[str, str] = {}
    for name, entries in seen.items():
        if entries and all(zero for _, (_, zero) in entries):
            found[name] = f"all zeros on all {len(entries)} gate inputs"
            continue
        inputs_of: Dict[str, Set[str]] = {}
        for key, (digest, _) in entries:
            inputs_of.setdefault(digest, set()).add(key)
        if any(len(keys_) > 1 for keys_ in inputs_of.values()):
            found[name] = "the same for two different gate inputs"
    return found
