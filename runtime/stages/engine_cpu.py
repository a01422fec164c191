"""CPU execution of an engine stage: ONNX Runtime runs the very ONNX the engine was built from."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Tuple

import numpy as np

from ..bundle import MAX_ONNX_NODES, ONNX_OPS, shape_fits, shape_text
from ..errors import BundleError, IncompatibleError, InputError

__all__ = ["OnnxRuntimeStage", "import_onnxruntime", "check_onnx"]


def import_onnxruntime() -> Any:
    """Import onnxruntime or explain how to get it."""
    try:
        import onnxruntime
    except ImportError:
        raise IncompatibleError("the CPU execution path needs ONNX Runtime: "
                                "pip install 'trtc[cpu]' (or onnxruntime)") from None
    return onnxruntime


class OnnxRuntimeStage:
    """One engine stage run by ONNX Runtime on the CPU. Thread-safe (ORT sessions are)."""

    def __init__(self, stage: Mapping[str, Any], onnx_bytes: bytes, intra_op_threads: int = 0):
        ort = import_onnxruntime()
        self.name: str = stage["name"]
        self.inputs = [t["name"] for t in stage["inputs"]]
        self.outputs = [t["name"] for t in stage["outputs"]]
        self._output_specs = [(t["name"], t, np.dtype(t["dtype"])) for t in stage["outputs"]]
        try:
            check_onnx(onnx_bytes)
        except _OnnxRefused as exc:
            raise BundleError(f"stage '{self.name}': {exc}; refusing a bundle `trtc compile` "
                              "did not write") from None
        options = ort.SessionOptions()
        # Fatal only: a failure reaches the user once, as our one-line error, not also as ORT's
        # multi-line log on stderr.
        options.log_severity_level = 4
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        try:
            # enable_fallback=0: on a failure ORT's Python layer would otherwise print an
            # "EP Error" banner on stdout and retry; the failure reaches the user as one line.
            self._session = ort.InferenceSession(onnx_bytes, sess_options=options,
                                                 providers=["CPUExecutionProvider"],
                                                 enable_fallback=0)
        except Exception as exc:  # ORT raises its own exception types for bad models
            raise BundleError(f"stage '{self.name}': ONNX Runtime cannot load its ONNX "
                              f"({_first_line(exc)}); recompile the bundle") from None
        if hasattr(self._session, "disable_fallback"):
            self._session.disable_fallback()  # the same banner from run()
        names = {i.name for i in self._session.get_inputs()}
        if names != set(self.inputs):
            raise BundleError(f"stage '{self.name}': its ONNX inputs {sorted(names)} do not match "
                              f"the manifest {sorted(self.inputs)}; recompile the bundle")
        declared = {o.name for o in self._session.get_outputs()}
        if not set(self.outputs) <= declared:
            raise BundleError(f"stage '{self.name}': its ONNX has no output "
                              f"'{sorted(set(self.outputs) - declared)[0]}' that the manifest "
                              "names; recompile the bundle")
        for given, spec in zip(sorted(self._session.get_inputs(), key=lambda i: i.name),
                               sorted(stage["inputs"], key=lambda t: t["name"])):
            want = f"tensor({_ORT_TYPES.get(spec['dtype'], spec['dtype'])})"
            onnx_dims = [d if isinstance(d, int) else -1 for d in given.shape]
            if given.type != want or onnx_dims != list(spec["shape"]):
                raise BundleError(f"stage '{self.name}': ONNX input '{given.name}' is "
                                  f"{given.type} {given.shape}, the manifest says {spec['dtype']} "
                                  f"{spec['shape']}; recompile the bundle")

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        try:
            results = self._session.run(self.outputs, {name: feeds[name] for name in self.inputs})
        except Exception as exc:  # ORT's own exception types; a bundle whose ONNX cannot run
            text = str(exc)
            if "out of bounds" in text or "out of data bou" in text:  # Gather/GatherND indices
                raise InputError(f"stage '{self.name}': an index input is out of range (e.g. a "
                                 "token id >= the vocabulary size, a token type other than 0/1): "
                                 f"{_first_line(exc)[-160:]}") from None
            raise BundleError(f"stage '{self.name}': ONNX Runtime failed to run its ONNX "
                              f"({_first_line(exc)}); recompile the bundle") from None
        for (name, spec, dtype), value in zip(self._output_specs, results):
            if not shape_fits(spec, value.shape) or value.dtype != dtype:
                raise BundleError(f"stage '{self.name}': output '{name}' came out {value.dtype} "
                                  f"{value.shape}, the manifest says {dtype} {shape_text(spec)}; "
                                  "the bundle is inconsistent: recompile it")
        return dict(zip(self.outputs, results))


# Manifest dtype -> ONNX Runtime's type name inside "tensor(...)".
_ORT_TYPES = {"float32": "float", "float64": "double", "float16": "float16", "bool": "bool",
              "int8": "int8", "uint8": "uint8", "int32": "int32", "int64": "int64"}


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


# ----------------------------------------------------------------------------------------------
# What an engine stage's ONNX may hold, read off its protobuf wire format (the runtime does not
# import the onnx package). Field numbers: onnx/onnx.proto3.
# ----------------------------------------------------------------------------------------------
class _OnnxRefused(Exception):
    pass


_MODEL_GRAPH, _MODEL_TRAINING_INFO, _MODEL_FUNCTIONS = 7, 20, 25
_GRAPH_NODE, _GRAPH_INITIALIZER = 1, 5
_NODE_OP_TYPE, _NODE_ATTRIBUTE, _NODE_DOMAIN = 4, 5, 7
_ATTR_TENSOR, _ATTR_GRAPH, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_TYPE = 5, 6, 10, 11, 20
_ATTR_GRAPH_TYPES = (5, 10, 13, 14)  # GRAPH, GRAPHS, TYPE_PROTO, TYPE_PROTOS
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14


def check_onnx(data: bytes) -> None:
    """Refuse an ONNX model that trtc's exporter would not write, before ONNX Runtime parses it:
    ops outside ``ONNX_OPS`` or the default domain, any op carrying a subgraph (Loop, Scan, If),
    model-local functions, training info, tensors stored outside the file (ONNX Runtime would
    read them from the working directory), more than ``MAX_ONNX_NODES`` nodes, bytes that are
    not protobuf. Pure Python over the wire format; length-delimited payloads (weights) are
    skipped, not copied, and the fields looked at are bounded too.

    Raises:
        _OnnxRefused: what is wrong, as a message fragment.
    """
    walk = _Walk(_FIELDS_PER_NODE * MAX_ONNX_NODES)
    try:
        nodes = 0
        for number, value in walk.fields(data):
            if number in (_MODEL_FUNCTIONS, _MODEL_TRAINING_INFO):
                raise _OnnxRefused("its ONNX defines functions or training info")
            if number != _MODEL_GRAPH:
                continue
            for field, item in walk.fields(value):  # every graph field: protobuf merges them
                if field == _GRAPH_INITIALIZER:
                    _check_tensor(walk, item)
                elif field == _GRAPH_NODE:
                    nodes += 1
                    if nodes > MAX_ONNX_NODES:
                        raise _OnnxRefused(f"its ONNX has more than {MAX_ONNX_NODES} nodes, "
                                           "the bound (MAX_ONNX_NODES)")
                    _check_node(walk, item)
    except _Malformed as exc:
        raise _OnnxRefused(f"its ONNX is not well-formed protobuf ({exc})") from None


_FIELDS_PER_NODE = 64  # protobuf fields looked at, on average per allowed node


class _Malformed(Exception):
    pass


class _Walk:
    """Reads protobuf fields, at most ``budget`` of them in all."""

    def __init__(self, budget: int):
        self.budget = budget

    def fields(self, buf: Any) -> Iterator[Tuple[int, Any]]:
        """(field number, value) of each field of one message: an int for varints and
        fixed-width fields, a memoryview for length-delimited ones (not parsed further here).

        Raises:
            _Malformed: not a protobuf message, or a field of another wire type than its
                schema's (a message where a number belongs).
            _OnnxRefused: over the budget.
        """
        if not isinstance(buf, (bytes, memoryview)):
            raise _Malformed("a number where a message belongs")
        buf = memoryview(buf)
        position, end = 0, len(buf)
        while position < end:
            self.budget -= 1
            if self.budget < 0:
                raise _OnnxRefused(f"its ONNX has more protobuf fields than {_FIELDS_PER_NODE} "
                                   f"per node of the bound of {MAX_ONNX_NODES} nodes "
                                   "(MAX_ONNX_NODES)")
            key, position = _varint(buf, position)
            number, wire = key >> 3, key & 7
            if wire == 0:
                value, position = _varint(buf, position)
            elif wire == 1:
                value, position = int.from_bytes(buf[position:position + 8], "little"), position + 8
            elif wire == 2:
                length, position = _varint(buf, position)
                value, position = buf[position:position + length], position + length
            elif wire == 5:
                value, position = int.from_bytes(buf[position:position + 4], "little"), position + 4
            else:  # groups (3, 4) are not in ONNX's schema; 6, 7 do not exist
                raise _Malformed(f"wire type {wire}")
            if position > end or number == 0:
                raise _Malformed("truncated message")
            yield number, value


def _check_node(walk: _Walk, node: Any) -> None:
    op_type, domain = "", ""
    attributes: List[Any] = []
    for field, value in walk.fields(node):
        if field == _NODE_OP_TYPE:
            op_type = _text(value)
        elif field == _NODE_DOMAIN:
            domain = _text(value)
        elif field == _NODE_ATTRIBUTE:
            attributes.append(value)
    if domain not in ("", "ai.onnx") or op_type not in ONNX_OPS:
        shown = f"{domain}:{op_type}" if domain else op_type
        raise _OnnxRefused(f"its ONNX uses op '{shown[:80]}', which trtc's exporter never "
                           "writes")
    for attribute in attributes:
        for field, value in walk.fields(attribute):
            if field in (_ATTR_GRAPH, _ATTR_GRAPHS) or \
                    (field == _ATTR_TYPE and value in _ATTR_GRAPH_TYPES):
                raise _OnnxRefused(f"its ONNX op '{op_type}' carries a subgraph")
            if field in (_ATTR_TENSOR, _ATTR_TENSORS):
                _check_tensor(walk, value)


def _check_tensor(walk: _Walk, tensor: Any) -> None:
    for field, value in walk.fields(tensor):
        if field == _TENSOR_EXTERNAL_DATA or (field == _TENSOR_DATA_LOCATION and value != 0):
            raise _OnnxRefused("its ONNX refers to tensor data outside the bundle")


def _text(value: Any) -> str:
    if not isinstance(value, memoryview):
        raise _Malformed("a number where a string belongs")
    return bytes(value).decode("utf-8", "replace")


def _varint(buf: memoryview, position: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(buf) or shift > 63:
            raise _Malformed("truncated varint")
        byte = buf[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
