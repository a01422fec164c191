"""Export: an engine segment of the MXNet graph -> ONNX (mxnet.onnx), with provenance and fp16.

Each ONNX node is tagged (``doc_string``) with the MXNet node it came from, so a parser or build
error on an ONNX node is traced back to the MXNet op that must stay in MXNet.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from . import _defaults
from .converters import STATIC_RANKS
from .frontend import Graph, mxnet_said
from .segments import Segment, describe_nodes

__all__ = ["ExportError", "ExportedSegment", "WholeExport", "export_nodes", "cut_segment",
           "onnx_from_segment", "convert_to_fp16", "subgraph_symbol_json"]

_PATCH_LOCK = threading.Lock()
_TAG_PREFIX = "mxnet:"
# mxnet.onnx's newest converters are for opset 13, but export_model declares onnx's newest opset
# (21 with onnx 1.16): a Split without 'num_outputs' is then invalid (opset 18) and ONNX Runtime
# refuses it. The export runs with the opset its converters implement.
ONNX_OPSET = _defaults.ONNX_OPSET


class ExportError(Exception):
    """mxnet.onnx failed; ``node`` names the MXNet node whose converter raised (if known)."""

    def __init__(self, message: str, node: Optional[str] = None, unfaithful: bool = False,
                 nodes: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.node = node
        self.unfaithful = unfaithful
        # every MXNet node known to fail, with its own message (ONNX's checker finds them all)
        self.nodes: Dict[str, str] = dict(nodes or ({node: message} if node else {}))


@dataclass
class ExportedSegment:
    """A segment as ONNX, ready for the parser."""

    model: Any  # onnx.ModelProto
    onnx_bytes: bytes
    node_origin: List[str]  # ONNX node index -> MXNet node name
    kept_fp32: List[str]  # tensors kept in fp32 inside an fp16 segment (reported)
    fp32_layers: List[str] = field(default_factory=list)  # MXNet nodes run in fp32 (fp16 segment)
    int8_layers: List[str] = field(default_factory=list)  # MXNet nodes quantized to int8
    settled: bool = False  # fp16: its fp32 layers decided (trtc/precision.py)
    # fp16: MXNet nodes whose ONNX must stay float32 whatever the error (name -> reason)
    required_fp32: Dict[str, str] = field(default_factory=dict)


def subgraph_symbol_json(graph: Graph, nodes: List[int], inputs: List[str],
                         outputs: List[str]) -> Tuple[str, List[str]]:
    """An MXNet symbol JSON holding ``nodes``; external tensors become variables named after them.

    Returns:
        (symbol JSON text, param variable names used).
    """
    out_nodes: List[Dict[str, Any]] = []
    new_index: Dict[Tuple[int, int], Tuple[int, int]] = {}  # old entry -> new entry
    var_index: Dict[str, int] = {}
    params: List[str] = []

    def variable(name: str) -> int:
        if name not in var_index:
            var_index[name] = len(out_nodes)
            out_nodes.append({"op": "null", "name": name, "inputs": []})
        return var_index[name]

    for tensor in inputs:
        variable(tensor)
    inside = set(nodes)
    for idx in nodes:
        node = graph.nodes[idx]
        new_inputs = []
        for src, out in node.inputs:
            producer = graph.nodes[src]
            if producer.is_op and src in inside:
                new_src, new_out = new_index[(src, out)]
                new_inputs.append([new_src, new_out, 0])
            elif not producer.is_op and producer.param_key is not None:
                if producer.name not in params:
                    params.append(producer.name)
                new_inputs.append([variable(producer.name), 0, 0])
            else:
                new_inputs.append([variable(graph.tensor((src, out))), 0, 0])
        entry = {"op": node.op, "name": node.name, "inputs": new_inputs}
        if node.attrs:
            entry["attrs"] = dict(node.attrs)
        position = len(out_nodes)
        out_nodes.append(entry)
        for out in range(max(len(node.outputs), 1)):
            new_index[(idx, out)] = (position, out)
    producer_of = {name: (idx, out) for idx in nodes
                   for out, name in enumerate(graph.nodes[idx].outputs)}
    heads = [[*new_index[producer_of[name]], 0] for name in outputs]
    symbol = {
        "nodes": out_nodes,
        "arg_nodes": [i for i, n in enumerate(out_nodes) if n["op"] == "null"],
        "node_row_ptr": list(range(len(out_nodes) + 1)),
        "heads": heads,
        "attrs": {"mxnet_version": ["int", 10901]},
    }
    return json.dumps(symbol, ensure_ascii=False), params


@contextlib.contextmanager
def _provenance() -> Iterator[Dict[str, Any]]:
    """Wrap mx2onnx's per-node converter to tag the ONNX nodes and catch the failing node."""
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
    from onnx import NodeProto

    from .converters import canonical_attrs, register
    register()  # trtc's exact converters (box_nms) over mxnet.onnx's
    state: Dict[str, Any] = {"failed": None, "unfaithful": {}, "mx_graph": None, "lookup": None,
                             "invalid": {}}
    original = MXNetGraph.__dict__["convert_layer"]
    convert = original.__func__
    records: List[logging.LogRecord] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                records.append(record)

    def tagged(node: Dict[str, Any], **kwargs: Any) -> Any:
        del records[:]
        # mx2onnx's own per-node table of ONNX output names (filled as it goes)
        state["mx_graph"] = kwargs.get("mx_graph", state["mx_graph"])
        state["lookup"] = kwargs.get("outputs_lookup", state["lookup"])
        if node.get("op") != "null":
            node = dict(node, attrs=canonical_attrs(node["op"], node.get("attrs") or {}))
        try:
            result = convert(node, **kwargs)
        except Exception:
            state["failed"] = node.get("name")
            raise
        for record in records:
            # Converters warn when ONNX cannot express what MXNet computes (box_nms, dot > 2-D).
            text = record.getMessage()
            if "different" in text.lower():
                state["unfaithful"].setdefault(node["name"], text)
        converted = result[0] if isinstance(result, tuple) else result
        for item in converted or []:
            if isinstance(item, NodeProto):
                item.doc_string = _TAG_PREFIX + node["name"]
        return result

    import onnx.checker
    import onnx.defs
    import onnx.helper

    check_graph = onnx.checker.check_graph
    make_tensor = onnx.helper.make_tensor

    def checked(graph: Any, *args: Any, **kwargs: Any) -> Any:
        """mx2onnx's final check of the whole graph names no node when it fails: find every
        node ONNX's checker refuses, by its provenance tag."""
        try:
            return check_graph(graph, *args, **kwargs)
        except Exception:
            for node in graph.node:
                try:
                    onnx.checker.check_node(node, onnx.checker.DEFAULT_CONTEXT)
                except Exception as exc:  # onnx.checker.ValidationError
                    tag = node.doc_string[len(_TAG_PREFIX):] if node.doc_string.startswith(_TAG_PREFIX) else ""
                    if tag:
                        text = " ".join(str(exc).split())
                        text = text.split("==>")[0].strip()
                        state["invalid"].setdefault(tag, f"ONNX {node.op_type} is invalid at opset "
                                                         f"{ONNX_OPSET}: {text}"[:300])
            raise

    handler = _Collect()
    root = logging.getLogger()
    with _PATCH_LOCK:
        root_level = root.level
        # converters warn through the root logger; make sure those records exist (restored after)
        if root.getEffectiveLevel() > logging.WARNING:
            root.setLevel(logging.WARNING)
        newest = onnx.defs.onnx_opset_version
        saved_opsets = dict(onnx.checker.DEFAULT_CONTEXT.opset_imports)
        MXNetGraph.convert_layer = staticmethod(tagged)
        onnx.checker.check_graph = checked
        onnx.helper.make_tensor = _fp16_from_bit_patterns(make_tensor)
        # The opset the model declares (read by export_model at call time) and the one mx2onnx's
        # `checker.check_graph` validates against (onnx.checker.DEFAULT_CONTEXT) must agree, or
        # every opset-13 node whose schema changed later (ReduceMean's `axes`, ...) is refused.
        onnx.defs.onnx_opset_version = lambda: ONNX_OPSET
        onnx.checker.DEFAULT_CONTEXT.opset_imports = {"": ONNX_OPSET}
        root.addHandler(handler)
        printed = io.StringIO()
        try:
            # mxnet.onnx print()s node names (_rminus_scalar, _rdiv_scalar): kept off the
            # user's streams (logged at debug level: shown with --debug)
            with contextlib.redirect_stdout(printed):
                yield state
        finally:
            if printed.getvalue().strip():
                logging.getLogger("trtc").debug("mxnet.onnx printed: %s", printed.getvalue())
            MXNetGraph.convert_layer = original
            onnx.checker.check_graph = check_graph
            onnx.helper.make_tensor = make_tensor
            onnx.defs.onnx_opset_version = newest
            onnx.checker.DEFAULT_CONTEXT.opset_imports = saved_opsets
            root.removeHandler(handler)
            root.setLevel(root_level)


class _HostWeight:
    """A weight as mxnet.onnx reads its params (``.shape``, ``.dtype``, ``.asnumpy()``: it
    only reads them), over trtc's own numpy array: no NDArray copy for the export and no
    ``asnumpy`` copy inside it (two copies of every weight less at the export's peak)."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray):
        self.array = array

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> Any:
        return self.array.dtype.type  # as NDArray.dtype: a numpy scalar type

    def asnumpy(self) -> np.ndarray:
        return self.array


def _static_ranks(graph: Graph, inputs: Sequence[str]) -> Dict[Tuple[str, int], int]:
    """(MXNet node name, output index) -> rank, for converters that need it (converters.py
    STATIC_RANKS): every op output of ``graph`` and every variable of the sub-symbol (named
    after the trtc tensor it stands for)."""
    ranks: Dict[Tuple[str, int], int] = {}
    for node in graph.nodes:
        for index, tensor in enumerate(node.outputs if node.is_op else [node.name]):
            if tensor in graph.shapes:
                ranks[(node.name, index)] = len(graph.shapes[tensor])
    for tensor in inputs:
        if tensor in graph.shapes:
            ranks[(tensor, 0)] = len(graph.shapes[tensor])
    return ranks


@contextlib.contextmanager
def _reset(var: Any, token: Any) -> Iterator[None]:
    """Undo ``var.set()`` (its ``token``) when the block ends."""
    try:
        yield
    finally:
        var.reset(token)


def _fp16_from_bit_patterns(make_tensor: Callable[..., Any]) -> Callable[..., Any]:
    """mx2onnx gives ``make_tensor`` every float16 value as its uint16 bit pattern (what onnx
    before 1.15 wanted); newer onnx converts the values themselves, so 0.5 became 14336.0 (issue
    22: a model casting to float16 failed the gate 1e4 off). Where this onnx converts values,
    integer values of a non-raw FLOAT16 tensor are read as bit patterns again. mx2onnx writes no
    float16 tensor of integers meant as numbers (under old onnx they were bit patterns too)."""
    import onnx
    import onnx.numpy_helper

    FLOAT16 = onnx.TensorProto.FLOAT16
    probe = make_tensor("probe", FLOAT16, [1], [np.uint16(0x3C00)])  # the bits of 1.0
    if float(onnx.numpy_helper.to_array(probe)[0]) == 1.0:
        return make_tensor  # an onnx that takes bit patterns: nothing to undo

    def make(name: str, data_type: int, dims: Any, vals: Any, *args: Any, **kwargs: Any) -> Any:
        raw = bool(args[0] if args else kwargs.get("raw", False))
        if data_type == FLOAT16 and not raw:
            values = np.asarray(vals)
            if values.dtype.kind in "ui":
                vals = values.astype(np.uint16).view(np.float16)
        return make_tensor(name, data_type, dims, vals, *args, **kwargs)

    return make


def _benign_warning(graph: Graph, idx: int) -> bool:
    """`dot` warns on every export, but differs from MXNet only for inputs above 2-D."""
    node = graph.nodes[idx]
    if node.op == "dot":
        return all(len(graph.shapes.get(graph.tensor(e), ())) <= 2 for e in node.inputs)
    return False


def _apply_fix_gamma(graph: Graph, segment: Segment, arg_params: Dict[str, Any]) -> None:
    """MXNet's BatchNorm ignores gamma when fix_gamma is true (the op's default); mxnet.onnx
    exports gamma as stored. Export ones instead, so the ONNX computes what MXNet computes."""
    import mxnet as mx

    for idx in segment.nodes:
        node = graph.nodes[idx]
        if node.op != "BatchNorm" or len(node.inputs) < 2:
            continue
        if node.attrs.get("fix_gamma", "True").lower() not in ("true", "1"):
            continue
        gamma = graph.nodes[node.inputs[1][0]]
        if gamma.name in arg_params:
            arg_params[gamma.name] = mx.nd.ones(arg_params[gamma.name].shape,
                                                dtype=arg_params[gamma.name].dtype)


def _onnx_output_name(mx_output: str) -> str:
    # mx2onnx names graph outputs after the MXNet output, with the '_output' suffix removed, and
    # an RNN's state outputs '<node>1' (hy) and '<node>2' (cy) (MXNetGraph.get_outputs).
    import re

    for suffix, index in (("_state_output", "1"), ("_statecell_output", "2")):
        if mx_output.endswith(suffix):
            return mx_output[: -len(suffix)] + index
    if mx_output.endswith("_output"):
        return mx_output[: -len("_output")]
    if re.search(r"_output[0-9]$", mx_output):
        return mx_output[: -len("_output0")] + mx_output[-1]
    return mx_output


def _export_symbol(graph: Graph, segment: Segment
                   ) -> Tuple[Any, List[str], Dict[str, str], Dict[str, str]]:
    """mxnet.onnx on the sub-symbol of ``segment``; ONNX nodes named ``<mxnet node>#<i>``.

    Returns:
        (onnx ModelProto, MXNet output names of the sub-symbol, trtc tensor -> ONNX tensor name
        for every output of every exported MXNet node as mx2onnx recorded them, and the nodes
        whose converter warned that its ONNX computes something else: name -> warning).
    """
    import mxnet as mx
    import mxnet.onnx as mx_onnx
    import onnx

    text, params = subgraph_symbol_json(graph, segment.nodes, segment.inputs, segment.outputs)
    symbol = mx.sym.load_json(text)
    arg_params: Dict[str, Any] = {}
    for name in params:
        key = f"arg:{name}" if f"arg:{name}" in graph.params else f"aux:{name}"
        arg_params[name] = _HostWeight(graph.params[key])
    _apply_fix_gamma(graph, segment, arg_params)
    data_names = [n for n in symbol.list_inputs() if n not in arg_params]
    in_shapes = [graph.shapes[n] for n in data_names]
    in_types = [np.dtype(graph.dtypes.get(n, "float32")) for n in data_names]
    if not data_names:
        raise ExportError("segment has no tensor inputs (only constants); it is kept in MXNet")

    ranks_set = STATIC_RANKS.set(_static_ranks(graph, segment.inputs))
    with tempfile.TemporaryDirectory(prefix="trtc-export-") as tmp, _provenance() as state, \
            _reset(STATIC_RANKS, ranks_set):
        path = os.path.join(tmp, "segment.onnx")
        try:
            dynamic = any(graph.dynamic_axes(n) for n in data_names)
            extra = ({"dynamic": True,
                      "dynamic_input_shapes": [tuple(graph.onnx_dims(n)) for n in data_names]}
                     if dynamic else {})
            mx_onnx.export_model(symbol, arg_params, in_shapes=in_shapes, in_types=in_types,
                                 onnx_file_path=path, **extra)
        except Exception as exc:
            first = mxnet_said(exc, 300)
            if state["invalid"]:
                first_node = next(iter(state["invalid"]))
                raise ExportError(state["invalid"][first_node], node=first_node,
                                  nodes=state["invalid"]) from None
            raise ExportError(f"{type(exc).__name__}: {first}", node=state["failed"]) from None
        model = onnx.load(path)
    unfaithful = {}
    for name, text in state["unfaithful"].items():
        idx = next((i for i in segment.nodes if graph.nodes[i].name == name), None)
        if idx is not None and not _benign_warning(graph, idx):
            unfaithful[name] = text
    # onnx-graphsurgeon keeps node names but not doc strings: carry the tag in the (unique) name.
    for i, node in enumerate(model.graph.node):
        tag = node.doc_string[len(_TAG_PREFIX):] if node.doc_string.startswith(_TAG_PREFIX) else ""
        node.name = f"{tag or 'node'}#{i}"
    onnx_names: Dict[str, str] = {}
    mx_graph, lookup = state["mx_graph"], state["lookup"]
    if mx_graph is not None and lookup is not None and len(mx_graph) == len(lookup):
        by_name = {graph.nodes[i].name: i for i in segment.nodes}
        for entry, outputs in zip(mx_graph, lookup):
            idx = by_name.get(entry["name"])
            if idx is None:
                continue
            for tensor, out in zip(graph.nodes[idx].outputs, outputs):
                onnx_names[tensor] = out.name
    return model, symbol.list_outputs(), onnx_names, unfaithful


def onnx_from_segment(graph: Graph, segment: Segment, fp16: bool = False,
                      keep_fp32: Sequence[str] = ()) -> ExportedSegment:
    """Export ``segment`` to ONNX with mxnet.onnx; graph IO named after trtc's tensor names.

    Raises:
        ExportError: the export failed (``.node`` names the MXNet node if it is known).
    """
    model, mx_outputs, _, unfaithful = _export_symbol(graph, segment)
    if unfaithful:
        name, text = next(iter(unfaithful.items()))
        raise ExportError(f"mxnet.onnx says its ONNX differs from MXNet: {text}", node=name,
                          unfaithful=True)
    by_trtc_name = {trtc_name: _onnx_output_name(mx_name)
                    for mx_name, trtc_name in zip(mx_outputs, segment.outputs)}
    return _finish(graph, model, segment, by_trtc_name, fp16, keep_fp32=keep_fp32)


@dataclass
class WholeExport:
    """One mxnet.onnx export of many MXNet nodes (every engine candidate at once), from which
    each engine segment's ONNX is cut: exporting is the slow part of a compile (weights are
    converted to ONNX tensors node by node), so it is done once, not once per segment and round.

    Large weights are also written once to ``weights.bin`` in a temp directory, so the cuts the
    partition loop parses again and again (``light=True``) reference them as ONNX external data
    instead of copying them. Call ``close()`` when done."""

    model: Any  # onnx ModelProto; node names "<mxnet node>#<i>"
    nodes: Set[int]  # MXNet node indices exported
    onnx_names: Dict[str, str]  # trtc tensor name -> ONNX tensor name
    unfaithful: Dict[str, str]  # MXNet node name -> the converter's warning that ONNX differs
    directory: Optional[str] = None  # holds weights.bin for light cuts
    light_initializers: Dict[str, Any] = field(default_factory=dict)

    def covers(self, segment: Segment) -> bool:
        return set(segment.nodes) <= self.nodes

    @property
    def model_path(self) -> Optional[str]:
        """Where the parser resolves external weights of a light cut from."""
        return os.path.join(self.directory, "model.onnx") if self.directory else None

    @property
    def has_light(self) -> bool:
        return self.directory is not None

    def make_light(self, threshold: int = 1 << 16) -> None:
        """Write the large weights to ``weights.bin`` once (enables ``light`` cuts)."""
        from onnx import TensorProto, numpy_helper

        if self.directory is not None:
            return
        self.directory = tempfile.mkdtemp(prefix="trtc-weights-")
        offset = 0
        with open(os.path.join(self.directory, "weights.bin"), "wb") as f:
            for init in self.model.graph.initializer:
                data = numpy_helper.to_array(init).tobytes()
                if len(data) < threshold:
                    continue
                light = TensorProto(name=init.name, data_type=init.data_type, dims=init.dims,
                                    data_location=TensorProto.EXTERNAL)
                for key, value in (("location", "weights.bin"), ("offset", str(offset)),
                                   ("length", str(len(data)))):
                    entry = light.external_data.add()
                    entry.key, entry.value = key, value
                f.write(data)
                offset += len(data)
                self.light_initializers[init.name] = light

    def close(self) -> None:
        if self.directory:
            import shutil

            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


# Passes of static shape folding at most (each must remove nodes to be followed by another).
FOLD_PASSES = 8


def fold_static_shapes(model: Any) -> Any:
    """Compute shape arithmetic on static shapes once (onnx-graphsurgeon's constant folding
    with shape folding): mx2onnx expresses ``Reshape(reverse=True)``, ``tile`` and friends as
    Shape -> Slice -> Concat chains that TensorRT's parser refuses ("Only support constant zero
    padding for slicing a shape tensor") though every input shape is known at compile time.
    Node names (provenance tags) are kept; on any failure the model is returned unchanged.

    Memory: the large weights never take part. Folding works on a copy of the graph in which
    they are typed graph inputs (their shapes are all shape arithmetic needs; folding skips
    large tensors anyway), and the result is written back into ``model`` itself, whose large
    initializers stay where they are: no copy of them is made (onnx-graphsurgeon's import and
    export and ``make_model`` copied every weight each pass: BERT-base's export peaked at 10x
    its params)."""
    import onnx_graphsurgeon as gs

    if not any(node.op_type == "Shape" for node in model.graph.node):
        return model
    large = {init.name for init in model.graph.initializer
             if _tensor_bytes(init) > _FOLD_LARGE_BYTES}
    logger = gs.logger.G_LOGGER
    severity = logger.severity
    logger.severity = logger.CRITICAL  # its hints go to stdout; trtc reports what matters
    light = _without_initializers(model, large)
    result = light
    try:
        # to a fixed point: a chain whose shapes become known only once an earlier part folded
        # (Shape -> Gather -> Concat -> Reshape -> Shape ...) folds in the next pass, after shape
        # inference has run again; bounded, and each pass must remove nodes
        for _ in range(FOLD_PASSES):
            g = gs.import_onnx(_with_inferred_shapes(result))
            outputs = [t.name for t in g.outputs]
            shields = _shield_inexact_cast_elision(g)
            # shape arithmetic only: no large folded tensor (a zeros_like of a feature map)
            g.fold_constants(fold_shapes=True, error_ok=True, size_threshold=1 << 16)
            _remove_shields(g, shields)
            g.cleanup(remove_unused_graph_inputs=False).toposort()
            if [t.name for t in g.outputs] != outputs:
                break
            folded = gs.export_onnx(g)
            done = len(folded.graph.node) >= len(result.graph.node)
            result = folded
            if done or not any(node.op_type == "Shape" for node in folded.graph.node):
                break
    except Exception:  # folding is an optimization: never a reason to fail the export
        pass
    finally:
        logger.severity = severity
    if result is light:
        return model
    return _write_back(model, result, large)


# ops onnx-graphsurgeon's cast elision rewrites (onnx_graphsurgeon/ir/graph.py, run_cast_elision)
_CAST_ELISION_OPS = frozenset("Add Sub Mul Div Max Min Equal Greater Less Concat".split())


def _shield_inexact_cast_elision(g: Any) -> List[Any]:
    """onnx-graphsurgeon's ``fold_constants(fold_shapes=True)`` first rewrites every
    ``Cast(int -> float) -> op(float constants) -> Cast(-> int)`` as the op on integers, casting
    its float constants with ``astype``: mxnet.onnx's ``int(dim * 1.5)`` became ``dim * 1`` and
    ``dim * 0.5`` became ``dim * 0`` (a resize to the wrong size, or to 0, built into an engine).
    Where that is not exact (a constant that is not a whole number, or a Div, whose float and
    integer results differ), an Identity is put between the op and its Casts, which the
    elision requires to be its only consumers; :func:`_remove_shields` takes them out after.
    Returns the Identity nodes added."""
    import onnx_graphsurgeon as gs

    shields = []
    for node in list(g.nodes):
        if node.op not in _CAST_ELISION_OPS or not node.outputs:
            continue
        inexact = node.op == "Div" or any(
            isinstance(t, gs.Constant) and np.issubdtype(t.values.dtype, np.floating)
            and not np.array_equal(np.asarray(t.values), np.trunc(np.asarray(t.values)))
            for t in node.inputs)
        if not inexact:
            continue
        for out in node.outputs:
            if out.outputs and all(consumer.op == "Cast" for consumer in out.outputs):
                shielded = gs.Variable(f"{out.name}__trtc_shield", dtype=out.dtype,
                                       shape=out.shape)
                for consumer in list(out.outputs):
                    consumer.inputs[consumer.inputs.index(out)] = shielded
                shield = gs.Node("Identity", name=f"{out.name}__trtc_shield",
                                 inputs=[out], outputs=[shielded])
                g.nodes.append(shield)
                shields.append(shield)
    return shields


def _remove_shields(g: Any, shields: List[Any]) -> None:
    """Undo :func:`_shield_inexact_cast_elision` where folding left a shield in the graph."""
    for shield in shields:
        if shield not in g.nodes or not shield.inputs or not shield.outputs:
            continue
        source, shielded = shield.inputs[0], shield.outputs[0]
        for consumer in list(shielded.outputs):
            consumer.inputs[consumer.inputs.index(shielded)] = source
        shield.inputs.clear()
        shield.outputs.clear()
        g.nodes.remove(shield)


# Initializers above this size are left out of shape folding (set aside, never copied).
_FOLD_LARGE_BYTES = 1 << 16


def _tensor_bytes(init: Any) -> int:
    """An initializer's size in bytes, from its dims (whatever field holds its data)."""
    count = 1
    for dim in init.dims:
        count *= int(dim)
    return count * 4 if not init.raw_data else len(init.raw_data)


def _without_initializers(model: Any, names: Set[str]) -> Any:
    """A new ModelProto of ``model``'s graph in which the initializers ``names`` are typed graph
    inputs instead (their bytes are not copied)."""
    import onnx
    from onnx import helper

    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    graph = light.graph
    graph.name = model.graph.name
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    graph.value_info.extend(model.graph.value_info)
    for init in model.graph.initializer:
        if init.name in names:
            graph.input.append(helper.make_tensor_value_info(init.name, init.data_type,
                                                             list(init.dims)))
        else:
            graph.initializer.append(init)
    return light


def _write_back(model: Any, folded: Any, large: Set[str]) -> Any:
    """``model`` with ``folded``'s nodes, value_info, small initializers and inputs; of its own
    large initializers it keeps, in place, those the folded graph still uses."""
    graph = model.graph
    used = {name for node in folded.graph.node for name in node.input}
    used |= {out.name for out in folded.graph.output}
    for index in reversed(range(len(graph.initializer))):
        name = graph.initializer[index].name
        if name not in large or name not in used:
            del graph.initializer[index]
    graph.initializer.extend(folded.graph.initializer)
    del graph.node[:]
    graph.node.extend(folded.graph.node)
    del graph.value_info[:]
    graph.value_info.extend(folded.graph.value_info)
    del graph.input[:]
    graph.input.extend(i for i in folded.graph.input if i.name not in large)
    return model


def _with_inferred_shapes(model: Any, threshold: int = 1 << 16) -> Any:
    """``model`` with ONNX's inferred shapes as its value_info (in place). Shape inference reads
    weights' dims only, yet ``infer_shapes`` copies the whole model to C++ and back (3 copies of
    every weight at once: 4 GB of BERT-base's export peak): it runs on the model with the bytes
    of its large initializers set aside, then put back."""
    import onnx

    aside = {}
    for init in model.graph.initializer:
        if len(init.raw_data) >= threshold:
            aside[init.name] = init.raw_data
            init.ClearField("raw_data")
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    finally:
        for init in model.graph.initializer:
            if init.name in aside:
                init.raw_data = aside.pop(init.name)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    return model


def export_nodes(graph: Graph, nodes: List[int]) -> WholeExport:
    """Export ``nodes`` (any set of op nodes, connected or not) in one mxnet.onnx call.

    Nodes whose converter warns that its ONNX differs from MXNet are listed in ``.unfaithful``
    (the caller keeps them in MXNet; cuts never include them).

    Raises:
        ExportError: a converter failed (``.node`` names it if known).
    """
    pseudo = describe_nodes(graph, sorted(nodes), "engine")
    model, _, onnx_names, unfaithful = _export_symbol(graph, pseudo)
    model = fold_static_shapes(model)
    for tensor in pseudo.inputs:  # the sub-symbol's variables are named after trtc tensors
        onnx_names.setdefault(tensor, tensor)
    return WholeExport(model=model, nodes=set(nodes), onnx_names=onnx_names, unfaithful=unfaithful)


def cut_segment(whole: WholeExport, graph: Graph, segment: Segment, fp16: bool = False,
                light: bool = False, keep_fp32: Sequence[str] = ()) -> Optional[ExportedSegment]:
    """The ONNX of ``segment`` cut out of a whole export: its ONNX nodes (by provenance tag),
    the initializers they read, its boundary tensors as graph inputs and outputs named after
    trtc's tensors. ``light``: large weights as external data in ``whole.directory`` (fp32; for
    parsing with ``path=whole.model_path``).

    Returns None when the cut cannot be made exactly (a boundary tensor mx2onnx did not name, a
    node reading a tensor from outside the segment); the caller then exports the segment alone.
    """
    import onnx
    from onnx import helper

    if not segment.inputs:
        raise ExportError("segment has no tensor inputs (only constants); it is kept in MXNet")
    if not whole.covers(segment):
        return None
    if light:
        whole.make_light()
    names = {graph.nodes[i].name for i in segment.nodes}
    src = whole.model.graph
    nodes = [n for n in src.node if n.name.rsplit("#", 1)[0] in names]
    try:
        rename = {whole.onnx_names[t]: t for t in segment.inputs}
        outputs = {whole.onnx_names[t]: t for t in segment.outputs}
    except KeyError:
        return None
    produced = {o for n in nodes for o in n.output}
    read = {i for n in nodes for i in n.input if i}
    initializers = [i for i in src.initializer if i.name in read]
    outside = read - produced - set(rename) - {i.name for i in initializers}
    if outside or set(rename) & produced or not set(outputs) <= produced:
        return None
    rename.update(outputs)

    def value_info(tensor: str) -> Any:
        dtype = helper.np_dtype_to_tensor_dtype(np.dtype(graph.dtypes.get(tensor, "float32")))
        return helper.make_tensor_value_info(tensor, dtype, graph.onnx_dims(tensor))

    model = onnx.ModelProto(ir_version=min(whole.model.ir_version, 10),
                            producer_name=whole.model.producer_name)
    model.opset_import.extend(whole.model.opset_import)
    g = model.graph
    g.name = segment.name or "segment"
    for node in nodes:
        copy = g.node.add()
        copy.CopyFrom(node)
        for i, name in enumerate(copy.input):
            copy.input[i] = rename.get(name, name)
        for i, name in enumerate(copy.output):
            copy.output[i] = rename.get(name, name)
    if light:
        g.initializer.extend(whole.light_initializers.get(i.name, i) for i in initializers)
    else:
        g.initializer.extend(initializers)
    g.input.extend(value_info(t) for t in segment.inputs)
    g.output.extend(value_info(t) for t in segment.outputs)
    return _segment_result(model, fp16 and not light, keep_fp32)


def _finish(graph: Graph, model: Any, segment: Segment, onnx_output: Dict[str, str], fp16: bool,
            input_names: Optional[Dict[str, str]] = None,
            keep_fp32: Sequence[str] = ()) -> ExportedSegment:
    """Graph surgery (onnx-graphsurgeon): initializers are not graph inputs, graph IO gets trtc's
    tensor names, shapes and dtypes; dead nodes go; optional fp16 conversion."""
    import onnx_graphsurgeon as gs

    g = gs.import_onnx(model)
    g.inputs = [t for t in g.inputs if not isinstance(t, gs.Constant)]
    tensors = g.tensors()
    for onnx_name, trtc_name in (input_names or {}).items():
        tensors[onnx_name].name = trtc_name
    new_outputs = []
    for trtc_name in segment.outputs:
        onnx_name = onnx_output[trtc_name]
        tensor = tensors.get(onnx_name)
        if tensor is None:
            raise ExportError(f"mxnet.onnx produced no output '{onnx_name}' for '{trtc_name}'")
        tensor.name = trtc_name
        new_outputs.append(tensor)
    g.outputs = new_outputs
    for tensor in g.outputs:
        tensor.dtype = np.dtype(graph.dtypes.get(tensor.name, "float32"))
        tensor.shape = graph.onnx_dims(tensor.name)
    g.cleanup(remove_unused_graph_inputs=False).toposort()
    model = gs.export_onnx(g)
    model.ir_version = min(model.ir_version, 10)
    model = fold_static_shapes(model)
    input_names_now = [i.name for i in model.graph.input]
    if sorted(input_names_now) != sorted(segment.inputs):
        raise ExportError(f"exported ONNX inputs {input_names_now} differ from the segment's "
                          f"{segment.inputs}")

    return _segment_result(model, fp16, keep_fp32)


def segment_from_model(model: Any) -> ExportedSegment:
    """An ExportedSegment for an ONNX model made from a segment's (e.g. its Q/DQ version)."""
    return _segment_result(model, False)


def _segment_result(model: Any, fp16: bool, keep_fp32: Sequence[str] = ()) -> ExportedSegment:
    """``keep_fp32``: MXNet node names whose ONNX nodes stay float32 in an fp16 segment."""
    wanted = set(keep_fp32)
    keep_nodes = {n.name for n in model.graph.node if n.name.rsplit("#", 1)[0] in wanted} if fp16 else set()
    layers = sorted({name.rsplit("#", 1)[0] for name in keep_nodes})
    required: Dict[str, str] = {}
    kept: List[str] = []
    if fp16:
        forced = _fp32_required(model.graph)
        for node, mx_name in zip(model.graph.node, _origins(model)):
            if mx_name and node.name in forced:
                required.setdefault(mx_name, forced[node.name])
        kept = convert_to_fp16(model, keep_nodes, forced)  # adds Cast nodes: origins after it
    return ExportedSegment(model=model, onnx_bytes=model.SerializeToString(),
                           node_origin=_origins(model), kept_fp32=kept, fp32_layers=layers,
                           required_fp32=required)


def _origins(model: Any) -> List[str]:
    """ONNX node index -> the MXNet node it was converted from ('' for trtc's own casts)."""
    origin = [node.name.rsplit("#", 1)[0] if "#" in node.name else "" for node in model.graph.node]
    return ["" if name == "node" else name for name in origin]


# ONNX inputs that must stay float32 (the spec allows only float there): (op_type, input index).
_FP32_ONLY_INPUTS = {("Resize", 2), ("Upsample", 1)}
# ONNX ops with no float16 type at all (Range: int32/int64/float/double; NonMaxSuppression:
# float boxes, scores, thresholds): they stay float32 inside an fp16 network, as a kept node.
# Before, --fp16 wrote invalid ONNX for them and TensorRT's parser refused GluonNLP's position
# ids (arange_like) and every box_nms ("IoUThreshold has type Half").
_FP32_ONLY_OPS = frozenset({"Range", "NonMaxSuppression"})


def _fp32_required(g: Any) -> Dict[str, str]:
    """The ONNX nodes that stay float32 in any fp16 network, whatever the error: name -> why
    (``_FP32_ONLY_OPS``, and :func:`_shape_math`)."""
    shape_math = _shape_math(g)
    required = {}
    for node in g.node:
        if node.op_type in _FP32_ONLY_OPS:
            required[node.name] = f"ONNX {node.op_type} has no float16 form"
        elif node.name in shape_math:
            required[node.name] = "shape arithmetic (computed from tensor shapes) stays float32"
    return required


def _shape_math(g: Any) -> Set[str]:
    """Names of the nodes computing from tensor shapes and constants only (what static folding
    leaves of shape arithmetic where a dimension is dynamic): they stay float32 in an fp16
    network. In fp16 a size computed through a float (``int(d * 1.5)``, arange_like's
    ``Cast(Shape) * step``) rounds beyond 2048 and TensorRT's Myelin refuses fp16 shape math."""
    from onnx import TensorProto

    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)
    # small constants (scales, steps, axes); a weight table read at shape-derived positions (a
    # position embedding's Gather) is data, not shape arithmetic
    small = lambda t: int(np.prod(t.dims)) <= 64  # noqa: E731
    constant = {i.name for i in g.initializer if small(i)}
    floating = {i.name for i in g.initializer if small(i) and i.data_type in floats}
    for n in g.node:
        if n.op_type == "Constant":
            values = [a.t for a in n.attribute if a.name == "value"]
            if values and small(values[0]):
                constant.update(n.output)
                if values[0].data_type in floats:
                    floating.update(n.output)
    derived: Set[str] = set()
    names: Set[str] = set()
    for node in g.node:  # ONNX nodes are in topological order
        inputs = [i for i in node.input if i]
        if node.op_type in ("Shape", "Size"):
            derived.update(node.output)
        elif inputs and all(i in constant or i in derived for i in inputs) \
                and any(i in derived for i in inputs):
            derived.update(node.output)
            if node.op_type == "Cast":
                is_float = any(a.name == "to" and a.i in floats for a in node.attribute)
            else:
                is_float = node.op_type not in _BOOLEAN_OPS and any(i in floating for i in inputs)
            if is_float:  # integer shape math is not touched by fp16
                floating.update(node.output)
                names.add(node.name)
    return names


_BOOLEAN_OPS = frozenset("Equal Less LessOrEqual Greater GreaterOrEqual Not And Or Xor".split())


def convert_to_fp16(model: Any, keep_nodes: Optional[Set[str]] = None,
                    required: Optional[Mapping[str, str]] = None) -> List[str]:
    """Turn a float32 ONNX model into an fp16 network whose graph IO stays float32.

    Float initializers and constants become fp16, ``Cast(to=FLOAT)`` becomes fp16, and Cast
    nodes are inserted after float32 graph inputs and before float32 graph outputs. Inputs the
    ONNX spec requires in float32 (Resize/Upsample scales) are kept. ``keep_nodes`` (ONNX node
    names) stay float32 inside the fp16 network: their weights stay fp32, their float inputs are
    cast up and their float outputs cast back to fp16 (TensorRT-RTX is strongly typed: this is
    how a layer runs in fp32); so do the ``required`` nodes (default: :func:`_fp32_required`,
    the ops ONNX defines for float32 only and shape arithmetic). Returns the tensors kept in
    float32.
    """
    from onnx import TensorProto, helper, numpy_helper, shape_inference

    g = model.graph
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    keep_nodes = set(keep_nodes or ()) | set(_fp32_required(g) if required is None else required)
    types: Dict[str, int] = {}
    if keep_nodes:  # which tensors are float, for the casts around kept nodes
        try:
            inferred = shape_inference.infer_shapes(model).graph
            for vi in list(inferred.value_info) + list(inferred.input) + list(inferred.output):
                types[vi.name] = vi.type.tensor_type.elem_type
        except Exception:
            pass
        for init in g.initializer:
            types[init.name] = init.data_type
        for node in g.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        types[node.output[0]] = attr.t.data_type
    keep: set = set()
    for node in g.node:
        for idx, name in enumerate(node.input):
            if (node.op_type, idx) in _FP32_ONLY_INPUTS and name:
                keep.add(name)
    readers: Dict[str, List[str]] = {}
    for node in g.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.name)
    kept_weights = {init.name for init in g.initializer
                    if readers.get(init.name) and all(r in keep_nodes for r in readers[init.name])}
    for init in g.initializer:
        if init.data_type == FLOAT and init.name not in keep and init.name not in kept_weights:
            array = numpy_helper.to_array(init).astype(np.float16)
            init.CopyFrom(numpy_helper.from_array(array, init.name))
    for node in g.node:
        if node.name in keep_nodes:
            continue
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == FLOAT and not (set(node.output) & keep):
                    attr.i = HALF
        if node.op_type in ("Constant", "ConstantOfShape"):
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == FLOAT and not (set(node.output) & keep):
                    array = numpy_helper.to_array(attr.t).astype(np.float16)
                    attr.t.CopyFrom(numpy_helper.from_array(array, attr.t.name))
    del g.value_info[:]

    body = []
    graph_outputs = {o.name for o in g.output}
    consumers: Dict[str, List[Any]] = {}
    for node in g.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    wide: Dict[str, str] = {}  # float outputs of kept nodes -> their fp32 tensor
    for node in g.node:  # casts around the nodes kept in float32; none between two kept nodes
        if node.name not in keep_nodes:
            body.append(node)
            continue
        after = []
        for i, name in enumerate(node.input):
            if name in wide:
                node.input[i] = wide[name]
            elif name and types.get(name) == FLOAT and name not in kept_weights and name not in keep:
                up = f"{name}__fp32_{len(body)}"
                body.append(helper.make_node("Cast", [name], [up], to=FLOAT, name=f"{up}__cast"))
                node.input[i] = up
        for j, name in enumerate(node.output):
            if name and types.get(name) == FLOAT:
                wide[name] = node.output[j] = f"{name}__fp32"
                if name in graph_outputs or any(c.name not in keep_nodes for c in consumers.get(name, [])):
                    after.append(helper.make_node("Cast", [wide[name]], [name], to=HALF,
                                                  name=f"{wide[name]}__cast"))
        body.append(node)
        body.extend(after)
    if keep_nodes:
        del g.node[:]
        g.node.extend(body)

    renamed_inputs: Dict[str, str] = {}
    cast_nodes = []
    for inp in g.input:
        if inp.type.tensor_type.elem_type == FLOAT:
            half = f"{inp.name}__fp16"
            renamed_inputs[inp.name] = half
            cast_nodes.append(helper.make_node("Cast", [inp.name], [half], to=HALF,
                                               name=f"{inp.name}__to_fp16"))
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in renamed_inputs:
                node.input[i] = renamed_inputs[name]
    tail = []
    for out in g.output:
        if out.type.tensor_type.elem_type == FLOAT:
            half = f"{out.name}__fp16"
            for node in g.node:
                for i, name in enumerate(node.output):
                    if name == out.name:
                        node.output[i] = half
                for i, name in enumerate(node.input):
                    if name == out.name:
                        node.input[i] = half
            tail.append(helper.make_node("Cast", [half], [out.name], to=FLOAT,
                                         name=f"{out.name}__to_fp32"))
    nodes = cast_nodes + list(g.node) + tail
    del g.node[:]
    g.node.extend(nodes)
    return sorted(keep | kept_weights)
