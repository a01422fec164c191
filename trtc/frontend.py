"""Frontend: an MXNet export (symbol JSON + params) -> a Graph with every tensor's shape and dtype."""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .runtime.errors import UsageError

__all__ = ["Node", "Graph", "resolve_model_files", "load_graph", "parse_input_spec",
           "import_user_modules"]

_PARAMS_SUFFIX = re.compile(r"^(?P<prefix>.+)-(?P<epoch>\d{4})\.params$")
# MXNet's dtype codes (mshadow type flags) as used in the `__dtype__` attribute.
_MX_DTYPE_CODES = {0: "float32", 1: "float64", 2: "float16", 3: "uint8", 4: "int32", 5: "int8",
                   6: "int64", 7: "bool"}


@dataclass
class Node:
    """One node of the MXNet graph. Variables have ``op == 'null'``."""

    index: int
    name: str
    op: str
    attrs: Dict[str, str]
    inputs: List[Tuple[int, int]]  # (producer node index, output index)
    outputs: List[str] = field(default_factory=list)  # tensor names, by output index
    param_key: Optional[str] = None  # 'arg:NAME' / 'aux:NAME' for params

    @property
    def is_op(self) -> bool:
        return self.op != "null"


@dataclass
class Graph:
    """An MXNet graph with shapes: what partitioning, export and verification work on."""

    symbol_path: Path
    params_path: Path
    symbol_json: Dict[str, Any]
    nodes: List[Node]
    params: Dict[str, np.ndarray]  # 'arg:NAME' / 'aux:NAME' -> array
    inputs: List[Tuple[str, Tuple[int, ...], str]]  # (name, shape, dtype) of data inputs
    outputs: List[str]  # tensor names of the model's outputs
    heads: List[Tuple[int, int]]
    shapes: Dict[str, Tuple[int, ...]]
    dtypes: Dict[str, str]
    symbol_sha256: str
    params_sha256: str

    @property
    def op_nodes(self) -> List[Node]:
        return [n for n in self.nodes if n.is_op]

    def tensor(self, entry: Tuple[int, int]) -> str:
        node = self.nodes[entry[0]]
        return node.outputs[entry[1]] if node.is_op else node.name

    def consumers(self) -> Dict[int, List[int]]:
        """node index -> op nodes consuming any of its outputs."""
        result: Dict[int, List[int]] = {n.index: [] for n in self.nodes}
        for node in self.op_nodes:
            for src, _ in node.inputs:
                if node.index not in result[src]:
                    result[src].append(node.index)
        return result

    def mxnet_symbol(self) -> Any:
        import mxnet as mx

        return mx.sym.load_json(json.dumps(self.symbol_json))


def resolve_model_files(params: "str | Path", symbol: "str | Path | None" = None) -> Tuple[Path, Path]:
    """Find ``PREFIX-symbol.json`` for ``PREFIX-EPOCH.params`` (MXNet's naming convention)."""
    params_path = Path(params)
    if params_path.suffix == ".json" and symbol is None:
        raise UsageError(f"{params_path} is a symbol file; pass the params file "
                         "(PREFIX-0000.params), or --symbol FILE with it")
    if not params_path.is_file():
        raise UsageError(f"params file {params_path} does not exist; pass PREFIX-0000.params as "
                         "written by Gluon's HybridBlock.export")
    if symbol is not None:
        symbol_path = Path(symbol)
        if not symbol_path.is_file():
            raise UsageError(f"symbol file {symbol_path} does not exist (--symbol)")
        return symbol_path, params_path
    match = _PARAMS_SUFFIX.match(params_path.name)
    if not match:
        raise UsageError(f"cannot find the symbol file for {params_path.name}: it is not named "
                         "PREFIX-NNNN.params; pass --symbol PREFIX-symbol.json")
    symbol_path = params_path.with_name(f"{match.group('prefix')}-symbol.json")
    if not symbol_path.is_file():
        raise UsageError(f"symbol file {symbol_path} not found next to {params_path.name}; "
                         "pass --symbol FILE")
    return symbol_path, params_path


def parse_input_spec(spec: str) -> Tuple[str, Tuple[int, ...]]:
    """Parse ``NAME:1x3x224x224`` (also ``NAME:1,3,224,224``)."""
    name, sep, dims = spec.rpartition(":")
    if not sep or not name:
        raise UsageError(f"bad --input {spec!r}: expected NAME:SHAPE like data:1x3x224x224")
    parts = re.split(r"[x,]", dims.strip().strip("()[]"))
    try:
        shape = tuple(int(p) for p in parts if p.strip() != "")
    except ValueError:
        raise UsageError(f"bad --input {spec!r}: shape must be integers joined by 'x', "
                         "like 1x3x224x224") from None
    if not shape or any(d <= 0 for d in shape):
        raise UsageError(f"bad --input {spec!r}: every dimension must be a positive integer")
    return name, shape


def import_user_modules(modules: Sequence[str]) -> None:
    """Import modules (dotted names or .py files), e.g. ones registering MXNet custom ops."""
    for item in modules:
        try:
            if item.endswith(".py"):
                path = Path(item)
                if not path.is_file():
                    raise UsageError(f"--import {item}: no such file")
                spec = importlib.util.spec_from_file_location(path.stem, path)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[path.stem] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(item)
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(f"--import {item} failed: {type(exc).__name__}: {exc}") from None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse_shape_attr(text: str) -> Optional[Tuple[int, ...]]:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    if isinstance(value, int):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not all(isinstance(d, int) and d > 0 for d in value):
        return None
    return tuple(value)


def load_graph(symbol_path: Path, params_path: Path,
               input_shapes: Optional[Mapping[str, Tuple[int, ...]]] = None) -> Graph:
    """Load an MXNet export and infer the shape and dtype of every tensor.

    Input shapes come from ``input_shapes``, else from each input variable's ``__shape__``
    attribute; an input with neither is a UsageError listing the inputs and the flag to pass.
    """
    import mxnet as mx

    try:
        text = symbol_path.read_text(encoding="utf-8")
        symbol_json = json.loads(text)
        nodes_json = symbol_json["nodes"]
        heads_json = symbol_json["heads"]
        if not isinstance(nodes_json, list) or not nodes_json:
            raise ValueError("no nodes")
    except (OSError, UnicodeError, ValueError, KeyError, TypeError):
        raise UsageError(f"{symbol_path} is not an MXNet symbol JSON file "
                         "(PREFIX-symbol.json from HybridBlock.export)") from None
    try:
        symbol = mx.sym.load_json(text)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        hint = ""
        if "Custom" in text:
            hint = "; it uses MXNet custom ops: pass --import MODULE that registers them"
        raise UsageError(f"MXNet cannot load {symbol_path.name}: {first}{hint}") from None

    try:
        raw_params = mx.nd.load(str(params_path))
    except Exception:
        raise UsageError(f"{params_path} is not an MXNet params file (mx.nd.save / "
                         "HybridBlock.export format)") from None
    if not isinstance(raw_params, dict):
        raise UsageError(f"{params_path} holds an unnamed list of arrays, not named params; "
                         "export the model with HybridBlock.export")
    aux_names = set(symbol.list_auxiliary_states())
    arg_names = symbol.list_arguments()
    params: Dict[str, np.ndarray] = {}
    for key, value in raw_params.items():
        if ":" in key:
            kind, name = key.split(":", 1)
        else:
            kind, name = ("aux" if key in aux_names else "arg"), key
        params[f"{kind}:{name}"] = value.asnumpy()
    param_vars = {key.split(":", 1)[1]: key for key in params}
    known = set(arg_names) | aux_names
    foreign = sorted(name for name in param_vars if name not in known)
    if foreign:
        raise UsageError(f"{params_path.name} does not belong to {symbol_path.name}: "
                         f"{len(foreign)} of its params (e.g. '{foreign[0]}') are not in the "
                         "symbol; pass the matching pair")
    missing_aux = sorted(aux_names - set(param_vars))
    if missing_aux:
        raise UsageError(f"{params_path.name} lacks '{missing_aux[0]}' that {symbol_path.name} "
                         "needs; pass the params file exported with this symbol")

    data_inputs = [name for name in arg_names if name not in param_vars]
    var_attrs = {n["name"]: n.get("attrs", {}) for n in nodes_json if n["op"] == "null"}
    given = dict(input_shapes or {})
    unknown = [name for name in given if name not in data_inputs]
    if unknown:
        raise UsageError(f"--input names '{unknown[0]}', which is not an input of the model; its "
                         f"inputs are: {', '.join(data_inputs) or '(none)'}")
    shapes_in: Dict[str, Tuple[int, ...]] = {}
    dtypes_in: Dict[str, str] = {}
    for name in data_inputs:
        attrs = var_attrs.get(name, {})
        shape = given.get(name) or _parse_shape_attr(attrs.get("__shape__", ""))
        if shape is None:
            specs = " ".join(f"--input {n}:1x3x224x224" if i == 0 else f"--input {n}:SHAPE"
                             for i, n in enumerate(data_inputs))
            raise UsageError(f"no shape known for input '{name}' (model inputs: "
                             f"{', '.join(data_inputs)}); pass {specs}")
        shapes_in[name] = shape
        code = attrs.get("__dtype__")
        dtypes_in[name] = _MX_DTYPE_CODES.get(int(code), "float32") if code and code.isdigit() else "float32"

    internals = symbol.get_internals()
    all_shapes = dict(shapes_in)
    all_shapes.update({name: params[key].shape for name, key in param_vars.items()})
    all_types = dict(dtypes_in)
    all_types.update({name: params[key].dtype for name, key in param_vars.items()})
    try:
        _, out_shapes, _ = internals.infer_shape(**all_shapes)
        _, out_types, _ = internals.infer_type(**all_types)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"MXNet cannot infer shapes with inputs "
                         f"{ {k: v for k, v in shapes_in.items()} }: {first}; check --input") from None
    if out_shapes is None or any(s is None or 0 in s for s in out_shapes):
        raise UsageError("MXNet could not infer every tensor's shape from the given input shapes; "
                         "pass every input with --input NAME:SHAPE")

    # Map internals outputs to (node, output index): internals list each node's visible outputs
    # in order; Symbol[i].name is the producing node's name.
    outputs_by_node: Dict[str, List[str]] = {}
    shapes: Dict[str, Tuple[int, ...]] = {}
    dtypes: Dict[str, str] = {}
    for i, out_name in enumerate(internals.list_outputs()):
        node_name = internals[i].name
        outputs_by_node.setdefault(node_name, []).append(out_name)
        shapes[out_name] = tuple(int(d) for d in out_shapes[i])
        dtypes[out_name] = np.dtype(out_types[i]).name

    nodes: List[Node] = []
    seen_names = set()
    for idx, raw in enumerate(nodes_json):
        name = raw["name"]
        if name in seen_names:
            raise UsageError(f"{symbol_path.name}: node name '{name}' appears twice; trtc needs "
                             "unique node names (re-export the model from Gluon)")
        seen_names.add(name)
        node = Node(index=idx, name=name, op=raw["op"], attrs=dict(raw.get("attrs", {})),
                    inputs=[(int(e[0]), int(e[1])) for e in raw.get("inputs", [])])
        if node.is_op:
            node.outputs = outputs_by_node.get(name, [])
        else:
            node.param_key = param_vars.get(name)
            shapes.setdefault(name, all_shapes.get(name, ()))
        nodes.append(node)

    heads = [(int(h[0]), int(h[1])) for h in heads_json]
    graph = Graph(
        symbol_path=symbol_path, params_path=params_path, symbol_json=symbol_json, nodes=nodes,
        params=params,
        inputs=[(name, shapes_in[name], dtypes_in[name]) for name in data_inputs],
        outputs=[], heads=heads, shapes=shapes, dtypes=dtypes,
        symbol_sha256=_sha256_file(symbol_path), params_sha256=_sha256_file(params_path),
    )
    graph.outputs = [graph.tensor(h) for h in heads]
    if any(not nodes[h[0]].is_op for h in heads):
        raise UsageError("a model output is directly an input variable; nothing to compile")
    return graph
