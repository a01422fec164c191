"""What a bundle's ONNX may hold, checked on its protobuf wire format before any executor (ONNX
Runtime, TensorRT's ONNX parser when it refits) parses it. The runtime does not import the onnx
package; field numbers are onnx/onnx.proto3's."""

from __future__ import annotations

from typing import Any, Iterator, List, Tuple

from .bundle import MAX_ONNX_NODES, ONNX_OPS

__all__ = ["OnnxRefused", "check_onnx"]


# ----------------------------------------------------------------------------------------------
# What an engine stage's ONNX may hold, read off its protobuf wire format (the runtime does not
# import the onnx package). Field numbers: onnx/onnx.proto3.
# ----------------------------------------------------------------------------------------------
class OnnxRefused(Exception):
    """An ONNX model trtc would not write; the message is a fragment naming what is wrong."""


_MODEL_GRAPH, _MODEL_TRAINING_INFO, _MODEL_FUNCTIONS = 7, 20, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
# GraphProto fields that hold no tensor data: name, doc_string, input, output, value_info,
# quantization_annotation, metadata_props. Anything else (sparse_initializer, or a field a newer
# ONNX adds) is refused: an allowlist, so that no place a tensor can hide goes unchecked.
_GRAPH_PLAIN = frozenset((2, 10, 11, 12, 13, 14, 16))
_NODE_OP_TYPE, _NODE_ATTRIBUTE, _NODE_DOMAIN = 4, 5, 7
_ATTR_TENSOR, _ATTR_TENSORS, _ATTR_TYPE = 5, 10, 20
# AttributeProto fields that hold no tensor and no graph: name, f, i, s, floats, ints, strings,
# doc_string, type, ref_attr_name. Refused: g/graphs (subgraphs), tp/type_protos, and
# sparse_tensor/sparse_tensors (22, 23), whose values and indices can point at external files.
_ATTR_PLAIN = frozenset((1, 2, 3, 4, 7, 8, 9, 13, 21))
# AttributeProto.type values allowed: UNDEFINED FLOAT INT STRING TENSOR FLOATS INTS STRINGS TENSORS.
# Refused: GRAPH(5) GRAPHS(10) SPARSE_TENSOR(11) SPARSE_TENSORS(12) TYPE_PROTO(13) TYPE_PROTOS(14).
_ATTR_PLAIN_TYPES = frozenset((0, 1, 2, 3, 4, 6, 7, 8, 9))
_ATTR_GRAPH, _ATTR_GRAPHS, _ATTR_GRAPH_TYPES = 6, 11, (5, 10)
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14


def check_onnx(data: bytes) -> None:
    """Refuse an ONNX model that trtc's exporter would not write, before ONNX Runtime parses it:
    ops outside ``ONNX_OPS`` or the default domain, any op carrying a subgraph (Loop, Scan, If),
    model-local functions, training info, tensors stored outside the file (ONNX Runtime would
    read them from the working directory), more than ``MAX_ONNX_NODES`` nodes, bytes that are
    not protobuf. Pure Python over the wire format; length-delimited payloads (weights) are
    skipped, not copied, and the fields looked at are bounded too.

    Raises:
        OnnxRefused: what is wrong, as a message fragment.
    """
    walk = _Walk(_FIELDS_PER_NODE * MAX_ONNX_NODES)
    try:
        nodes = 0
        for number, value in walk.fields(data):
            if number in (_MODEL_FUNCTIONS, _MODEL_TRAINING_INFO):
                raise OnnxRefused("its ONNX defines functions or training info")
            if number != _MODEL_GRAPH:
                continue
            for field, item in walk.fields(value):  # every graph field: protobuf merges them
                if field == _GRAPH_INITIALIZER:
                    _check_tensor(walk, item)
                elif field == _GRAPH_NODE:
                    nodes += 1
                    if nodes > MAX_ONNX_NODES:
                        raise OnnxRefused(f"its ONNX has more than {MAX_ONNX_NODES} nodes, "
                                           "the bound (MAX_ONNX_NODES)")
                    _check_node(walk, item)
                elif field == _GRAPH_SPARSE_INITIALIZER:
                    raise OnnxRefused("its ONNX holds a sparse initializer, which trtc's "
                                       "exporter never writes")
                elif field not in _GRAPH_PLAIN:
                    raise OnnxRefused(f"its ONNX graph has field {field}, which trtc's "
                                       "exporter never writes")
    except _Malformed as exc:
        raise OnnxRefused(f"its ONNX is not well-formed protobuf ({exc})") from None


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
            OnnxRefused: over the budget.
        """
        if not isinstance(buf, (bytes, memoryview)):
            raise _Malformed("a number where a message belongs")
        buf = memoryview(buf)
        position, end = 0, len(buf)
        while position < end:
            self.budget -= 1
            if self.budget < 0:
                raise OnnxRefused(f"its ONNX has more protobuf fields than {_FIELDS_PER_NODE} "
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
        raise OnnxRefused(f"its ONNX uses op '{shown[:80]}', which trtc's exporter never "
                           "writes")
    for attribute in attributes:
        for field, value in walk.fields(attribute):
            if field in (_ATTR_TENSOR, _ATTR_TENSORS):
                _check_tensor(walk, value)
            elif field in (_ATTR_GRAPH, _ATTR_GRAPHS) or \
                    (field == _ATTR_TYPE and value in _ATTR_GRAPH_TYPES):
                raise OnnxRefused(f"its ONNX op '{op_type}' carries a subgraph")
            elif field == _ATTR_TYPE:
                if value not in _ATTR_PLAIN_TYPES:
                    raise OnnxRefused(f"its ONNX op '{op_type}' has an attribute of type "
                                       f"{value} (a subgraph, sparse tensor or type), which "
                                       "trtc's exporter never writes")
            elif field not in _ATTR_PLAIN:
                raise OnnxRefused(f"its ONNX op '{op_type}' has an attribute field {field} (a "
                                   "subgraph, sparse tensor or type), which trtc's exporter "
                                   "never writes")


def _check_tensor(walk: _Walk, tensor: Any) -> None:
    for field, value in walk.fields(tensor):
        if field == _TENSOR_EXTERNAL_DATA or (field == _TENSOR_DATA_LOCATION and value != 0):
            raise OnnxRefused("its ONNX refers to tensor data outside the bundle")


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
