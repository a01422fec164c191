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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .runtime.bundle import MAX_TENSOR_NAME_LENGTH, tensor_name_ok
from .runtime.errors import UsageError
from .runtime.stages.residual import check_attrs, mxnet_error_text

__all__ = ["Node", "Graph", "resolve_model_files", "load_graph", "fold_constants", "parse_input_spec",
           "import_user_modules", "check_input_shapes", "path_problem", "mxnet_said", "shown_name",
           "check_shape", "DTYPES"]

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
    # decisions made on the user's behalf while loading (reported): old -> new node names,
    # nodes dropped as unreachable, ops folded into constants (op -> count)
    renamed: Dict[str, str] = field(default_factory=dict)
    unreachable: List[str] = field(default_factory=list)
    folded: Dict[str, int] = field(default_factory=dict)
    # the graph before constant folding: MXNet's reference forward runs the model as exported
    reference: Optional["Graph"] = None
    # dynamic shapes: input -> (min, opt, max) shapes; tensor -> (min, max) shapes for every
    # tensor whose shape varies over the range (``shapes`` holds the opt shapes)
    input_ranges: Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=dict)
    ranges: Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=dict)

    @property
    def is_dynamic(self) -> bool:
        return bool(self.input_ranges)

    def shape_range(self, tensor: str) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]:
        """(min, opt, max) shape of ``tensor`` (all three equal for a static one)."""
        opt = tuple(self.shapes[tensor])
        lo, hi = self.ranges.get(tensor, (opt, opt))
        return tuple(lo), opt, tuple(hi)

    def dynamic_axes(self, tensor: str) -> List[int]:
        lo, opt, hi = self.shape_range(tensor)
        return [a for a in range(len(opt)) if not lo[a] == opt[a] == hi[a]]

    def onnx_dims(self, tensor: str) -> List[Optional[int]]:
        """The tensor's shape for ONNX: None on the axes that vary over the range."""
        dynamic = set(self.dynamic_axes(tensor))
        return [None if a in dynamic else int(d) for a, d in enumerate(self.shapes[tensor])]

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

        return mx.sym.load_json(json.dumps(self.symbol_json, ensure_ascii=False))

    def internal_shapes(self, shapes: Mapping[str, Tuple[int, ...]]) -> Tuple[Any, List[Any]]:
        """MXNet's shape inference of every internal tensor with the inputs at ``shapes`` and
        the params at their own: (the internals symbol, the shapes in its ``list_outputs()``
        order, None where unknown). Raises MXNet's error where it cannot infer them."""
        internals = self.mxnet_symbol().get_internals()
        fixed = {k.split(":", 1)[1]: v.shape for k, v in self.params.items()}
        # the _impl call: the public one prints its arguments on stdout on an error
        _, out_shapes, _ = internals._infer_shape_impl(False, **dict(shapes), **fixed)
        return internals, list(out_shapes or [])

    @property
    def input_names(self) -> List[str]:
        return [name for name, _, _ in self.inputs]


def mxnet_said(exc: BaseException, limit: int = 200) -> str:
    """An error's message for a one-line report. For MXNet's errors, its own message without
    the C++ traceback and the check that failed ("Invalid NDArray file format", "Cannot find
    custom operator nope", "Stride must have the same number of dimensions with kernel_size,
    ..."); for any other, its first line. At most ``limit`` characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if type(exc).__name__ != "MXNetError" and not any(l.startswith("MXNetError") for l in lines):
        first = lines[0] if lines and lines[0] != "Traceback (most recent call last):" else None
        return (first or (lines[-1] if lines else "") or type(exc).__name__)[:limit]
    text = next((line for line in reversed(lines) if line.startswith("MXNetError")),
                lines[-1] if lines else type(exc).__name__)
    text = re.sub(r"^MXNetError:\s*", "", text)
    text = re.sub(r"^\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", text)
    # "Check failed: EXPR (a vs. b) : Message": mostly, the message starts with a capital letter
    text = re.sub(r"^Check failed: .*?: (?=[A-Z])", "", text)
    text = re.sub(r"^Check failed: [^:]*(: |$)", "", text).strip().rstrip(":").strip()
    return (text or type(exc).__name__)[:limit]


def path_problem(path: "str | Path") -> Optional[str]:
    """Why ``path`` is not a readable regular file, as the end of a sentence ("does not exist",
    "is a directory", "is not a regular file (a FIFO)"), or None when it is one. Asked with
    stat(), so a FIFO is never opened (opening one blocks until a writer comes)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except PermissionError:
        return "cannot be read (permission denied)"
    except (OSError, ValueError) as exc:
        return f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device"
            if stat.S_ISBLK(mode) else "not a file")
    return f"is not a regular file ({kind})"


def resolve_model_files(params: "str | Path", symbol: "str | Path | None" = None) -> Tuple[Path, Path]:
    """Find ``PREFIX-symbol.json`` for ``PREFIX-EPOCH.params`` (MXNet's naming convention)."""
    params_path = Path(params)
    if params_path.suffix == ".json" and symbol is None:
        raise UsageError(f"{params_path} is a symbol file; pass the params file "
                         "(PREFIX-0000.params), or --symbol FILE with it")
    problem = path_problem(params_path)
    if problem:
        raise UsageError(f"params file {params_path} {problem}; pass PREFIX-0000.params as "
                         "written by Gluon's HybridBlock.export")
    if symbol is not None:
        symbol_path = Path(symbol)
        problem = path_problem(symbol_path)
        if problem:
            raise UsageError(f"symbol file {symbol_path} {problem} (--symbol)")
        return symbol_path, params_path
    match = _PARAMS_SUFFIX.match(params_path.name)
    if not match:
        raise UsageError(f"cannot find the symbol file for {params_path.name}: it is not named "
                         "PREFIX-NNNN.params; pass --symbol PREFIX-symbol.json")
    symbol_path = params_path.with_name(f"{match.group('prefix')}-symbol.json")
    problem = path_problem(symbol_path)
    if problem == "does not exist":
        raise UsageError(f"symbol file {symbol_path} not found next to {params_path.name}; "
                         "pass --symbol FILE")
    if problem:
        raise UsageError(f"symbol file {symbol_path} (next to {params_path.name}) {problem}; "
                         "pass --symbol FILE")
    return symbol_path, params_path


# The dtypes an input may have (--input NAME:DIMS:DTYPE, CompileSettings.input_dtypes).
DTYPES = ("float32", "float16", "float64", "int32", "int64", "int8", "uint8", "bool")
_DTYPES = DTYPES


Dim = Union[int, Tuple[int, int]]


def parse_input_spec(spec: str, flag: str = "--input", ranges: bool = True
                     ) -> Tuple[str, Tuple[Dim, ...], Optional[str]]:
    """Parse ``NAME:DIMS[:DTYPE]``: ``data:1x3x224x224``, ``ids:1x128:int32``,
    ``data:1..32x3x224x224`` (a dimension is ``N`` or ``MIN..MAX``; also ``1,3,224,224``).

    Returns (name, dims, dtype or None); a ranged dimension is a ``(min, max)`` tuple, a fixed
    one an int. Dimensions are ASCII digits only (no ``1_6``, no full-width digits, no empty
    dimension, no inverted range).
    """
    head, sep, last = spec.rpartition(":")
    dtype: Optional[str] = None
    if sep and last.strip() and not re.fullmatch(r"[\s\dx,.()\[\]]*", last, re.ASCII) \
            and ":" in head:
        dtype, spec_rest = last.strip(), head
        if dtype not in _DTYPES:
            raise UsageError(f"bad {flag} {spec!r}: unknown dtype {dtype!r}; use one of "
                             f"{', '.join(_DTYPES)}")
    else:
        spec_rest = spec
    name, sep, dims = spec_rest.rpartition(":")
    example = "data:1..32x3x224x224" if ranges else "data:8x3x224x224"
    if not sep or not name:
        raise UsageError(f"bad {flag} {spec!r}: expected NAME:SHAPE[:DTYPE] like {example} "
                         "or ids:1x128:int32")
    body = dims.strip()
    if body[:1] in "([" and body[-1:] in ")]":
        body = body[1:-1]
    parts = [p.strip() for p in re.split(r"[x,]", body)]
    pattern = r"[0-9]{1,9}(\.\.[0-9]{1,9})?" if ranges else r"[0-9]{1,9}"
    if not body or not all(re.fullmatch(pattern, p, re.ASCII) for p in parts):
        raise UsageError(f"bad {flag} {spec!r}: the shape must be positive integers (ASCII digits) "
                         + ("or MIN..MAX ranges " if ranges else "") + f"joined by 'x', like {example.split(':')[1]}")
    shape: List[Dim] = []
    for axis, part in enumerate(parts):
        if ".." in part:
            lo, hi = (int(v) for v in part.split(".."))
            if lo <= 0 or hi < lo:
                raise UsageError(f"bad {flag} {spec!r}: axis {axis} range {part} must be MIN..MAX "
                                 "with 1 <= MIN <= MAX")
            shape.append((lo, hi) if hi > lo else lo)
        else:
            shape.append(int(part))
    if any(isinstance(d, int) and d <= 0 for d in shape):
        raise UsageError(f"bad {flag} {spec!r}: every dimension must be a positive integer")
    problem = _size_problem(shape)
    if problem:
        raise UsageError(f"bad {flag} {spec!r}: {problem}")
    return name, tuple(shape), dtype


# An input larger than this (elements) is a typo, not a model: 2**31 float32 values is 8 GiB.
_MAX_INPUT_ELEMENTS = 1 << 31


def _size_problem(dims: Sequence[Dim]) -> Optional[str]:
    """Why a shape of positive dims (ints or (min, max) ranges) is too large for trtc: more than
    8 dimensions or 2^31 elements at its maximum; None when it is not."""
    if len(dims) > 8:
        return f"{len(dims)} dimensions; at most 8 are supported"
    elements = 1
    for d in dims:
        elements *= d[1] if isinstance(d, tuple) else d
    if elements > _MAX_INPUT_ELEMENTS:
        return (f"{elements:,} elements is more than trtc verifies ({_MAX_INPUT_ELEMENTS:,}); "
                "check the shape")
    return None


def check_shape(name: str, shape: Any, ranges: bool = True, option: str = "inputs"
                ) -> Tuple[Dim, ...]:
    """A shape given as a tuple (CompileSettings.inputs / opt_shapes, trtc.compile's ``inputs=``)
    under the rules of :func:`parse_input_spec`: ints >= 1 or, where ``ranges``, ``(min, max)``
    pairs with 1 <= min <= max; 1 to 8 dimensions; at most 2^31 elements.

    Returns:
        The shape with plain ints (numpy ints converted, a ``(n, n)`` range made ``n``).

    Raises:
        UsageError: naming the input and ``option``.
    """
    example = "(1, 3, 224, 224)" + (", with (min, max) for a range: ((1, 32), 3, 224, 224)"
                                    if ranges else "")
    text = ("1..32x" if ranges else "") + "3x224x224"
    bad = UsageError(f"shape of '{shown_name(str(name))}' in {option}: {shape!r:.80} is not a shape; "
                     f"give positive ints like {example}, or a string like '{text}'")

    def integer(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

    if isinstance(shape, (str, bytes, Mapping)):
        raise bad
    try:
        shape = tuple(shape)  # a list, a numpy array, a generator of ints too
    except TypeError:
        raise bad from None
    dims: List[Dim] = []
    for d in shape:
        if ranges and isinstance(d, (tuple, list)) and len(d) == 2 and all(integer(v) for v in d):
            lo, hi = int(d[0]), int(d[1])
            if not 1 <= lo <= hi:
                raise UsageError(f"shape of '{shown_name(str(name))}' in {option}: the range {tuple(d)} "
                                 "must be (min, max) with 1 <= min <= max")
            dims.append((lo, hi) if hi > lo else lo)
        elif integer(d) and d >= 1:
            dims.append(int(d))
        else:
            raise bad
    if not dims:
        raise UsageError(f"shape of '{shown_name(str(name))}' in {option} is empty")
    problem = _size_problem(dims)
    if problem:
        raise UsageError(f"shape of '{shown_name(str(name))}' in {option}: {problem}")
    return tuple(dims)


def import_user_modules(modules: Sequence[str]) -> None:
    """Import modules (dotted names or .py files), e.g. ones registering MXNet custom ops.

    Raises:
        UsageError: a module that is missing or fails, or one that calls ``sys.exit`` (a script
            that parses its own arguments): the last line it wrote on stderr is in the message.
    """
    import contextlib
    import io

    for item in modules:
        written = io.StringIO()  # held back until the import ends: a script's usage text
        try:
            with contextlib.redirect_stderr(written):
                _import_one(item)
        except UsageError:
            raise
        except SystemExit as exc:
            last = next((line.strip() for line in reversed(written.getvalue().splitlines())
                         if line.strip()), "")
            printed = f" (it printed: {shown_name(last, 160)})" if last else ""
            raise UsageError(f"importing {item} called sys.exit({exc.code!r}){printed}: --import "
                             "takes a module that registers ops, not a script; put the script's "
                             "code under `if __name__ == \"__main__\":`") from None
        except Exception as exc:
            raise UsageError(f"--import {item} failed: {type(exc).__name__}: "
                             f"{shown_name(str(exc), 300)}") from None
        sys.stderr.write(written.getvalue())


def _import_one(item: str) -> None:
    if item.endswith(".py"):
        path = Path(item)
        problem = path_problem(path)
        if problem:
            raise UsageError(f"--import {item}: no such file" if problem == "does not exist"
                             else f"--import {item} {problem}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        importlib.import_module(item)


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
    if type(value) is int:
        value = (value,)
    # type(d) is int: True is an int to Python, not a dimension
    if not isinstance(value, (tuple, list)) or not all(type(d) is int and d > 0 for d in value):
        return None
    return tuple(value)


_PARAM_SUFFIXES = ("weight", "bias", "gamma", "beta", "running_mean", "running_var",
                   "moving_mean", "moving_var", "alpha", "i2h_weight", "h2h_weight")


# Where a node's attributes are: "attrs" since MXNet 1.0, "attr" (0.9-0.12) and "param" (0.8)
# before; MXNet 1.9 still reads all three.
_LEGACY_ATTR_KEYS = ("attrs", "attr", "param")


def _normalize_attrs(node: Dict[str, Any]) -> None:
    """Move a node's attributes to "attrs", merged as MXNet 1.9 reads them: "attrs" and "attr"
    in file order (a later key overrides), then "param" where neither set the key."""
    if "attr" not in node and "param" not in node:
        return
    merged: Dict[str, Any] = {}
    for key in [k for k in node if k in ("attrs", "attr")]:
        merged.update(node.pop(key))
    for key, value in node.pop("param", {}).items():
        merged.setdefault(key, value)
    node["attrs"] = merged


def _read_symbol_json(symbol_path: Path) -> Tuple[str, Dict[str, Any]]:
    """The symbol file's JSON, structurally checked (every reference in range, inputs before
    their consumers): what MXNet's own loader trusts blindly. A UsageError names the file.
    Node attributes in the pre-1.0 layout ("attr", "param") are moved to "attrs"."""
    bad = f"{symbol_path} is not an MXNet symbol JSON file (PREFIX-symbol.json from HybridBlock.export)"
    try:
        text = symbol_path.read_text(encoding="utf-8")
        doc = json.loads(text)
    except RecursionError:
        raise UsageError(f"{symbol_path}: the JSON is nested too deeply to be an MXNet symbol") from None
    except (OSError, UnicodeError, ValueError):
        raise UsageError(bad) from None
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    heads = doc.get("heads") if isinstance(doc, dict) else None
    if not isinstance(nodes, list) or not nodes or not isinstance(heads, list) or not heads:
        raise UsageError(bad)

    def entry_ok(e: Any, limit: int) -> bool:  # type(v) is int: JSON true is no index
        return (isinstance(e, list) and len(e) in (2, 3) and all(type(v) is int and v >= 0 for v in e)
                and e[0] < limit)

    for i, node in enumerate(nodes):
        if not (isinstance(node, dict) and isinstance(node.get("op"), str)
                and isinstance(node.get("name"), str) and isinstance(node.get("inputs", []), list)
                and isinstance(node.get("attrs", {}), dict)
                and all(entry_ok(e, i) for e in node.get("inputs", []))):
            raise UsageError(f"{symbol_path.name}: node {i} is malformed (an op, a name, and inputs "
                             "that refer to earlier nodes); re-export the model from Gluon")
    if not all(entry_ok(h, len(nodes)) for h in heads):
        raise UsageError(f"{symbol_path.name}: an output ('heads') is not [node index, output "
                         "index] of one of its nodes; re-export the model from Gluon")
    for i, node in enumerate(nodes):
        if not all(isinstance(node.get(key, {}), dict) for key in _LEGACY_ATTR_KEYS):
            raise UsageError(f"{symbol_path.name}: node {i} ('{node['name'][:80]}') has attributes "
                             "that are not a JSON object; re-export the model from Gluon")
        _normalize_attrs(node)
        _check_node_text(symbol_path.name, i, node)
    _check_graph_fields(symbol_path.name, doc, nodes)
    for node in nodes:  # attributes MXNet divides by unchecked (num_group=0: SIGFPE at load)
        if node.get("subgraphs"):
            raise UsageError(
                f"{symbol_path.name}: node '{shown_name(node['name'])}' ({node['op']}) is control "
                "flow (F.contrib.foreach / while_loop / cond) with a subgraph, which trtc cannot "
                "compile; unroll it (a Python loop in hybrid_forward) or use gluon.rnn's fused "
                "layers")
        try:
            check_attrs(node["op"], node.get("attrs", {}), f"node '{node['name'][:80]}'")
        except ValueError as exc:
            raise UsageError(f"{symbol_path.name}: {exc}: MXNet would crash on it; fix or "
                             "re-export the model") from None
    return text, doc


def shown_name(name: str, limit: int = 80) -> str:
    """``name`` for an error message: at most ``limit`` characters, the unprintable ones (a
    newline, NUL, a lone surrogate) as Python escapes, so the message stays one line."""
    return "".join(c if c.isprintable() and not 0xD800 <= ord(c) < 0xE000 else ascii(c)[1:-1]
                   for c in name[:limit]) + ("..." if len(name) > limit else "")


def _text_problem(text: str) -> Optional[str]:
    """Why MXNet's JSON reader cannot take ``text`` back from trtc, or None: a lone surrogate
    (no UTF-8 for it) or a control character json.dumps writes as a \\u escape, which MXNet's
    reader refuses ("unknown string escape")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate)"
    bad = next((c for c in text if ord(c) < 0x20 and c not in "\b\f\n\r\t"), None)
    return None if bad is None else f"holds the control character {bad!r}"


def _check_node_text(file: str, index: int, node: Dict[str, Any]) -> None:
    """Every name, op and attribute of a node is text MXNet reads back: attribute values are
    strings (MXNet's loader refuses a number or null; trtc's checks would crash on one)."""
    shown = shown_name(node["name"])
    for what, text in (("name", node["name"]), ("op", node["op"])):
        problem = _text_problem(text)
        if problem:
            raise UsageError(f"{file}: node {index} ('{shown}'): its {what} {problem}, which MXNet "
                             "cannot read; rename it and re-export the model")
    for key, value in node.get("attrs", {}).items():
        if not isinstance(value, str):
            kind = "" if value is None else f" ({type(value).__name__})"
            raise UsageError(f"{file}: node '{shown}' attribute '{shown_name(key)}' is "
                             f"{json.dumps(value)[:40]}{kind}, not a string: MXNet symbol files hold every attribute as a "
                             f"string (\"8\", \"(3, 3)\"); fix the file or re-export the model")
        problem = _text_problem(key) or _text_problem(value)
        if problem:
            raise UsageError(f"{file}: node '{shown}' attribute '{shown_name(key)}' {problem}, which "
                             "MXNet cannot read; fix the file or re-export the model")


# mxnet_version is MAJOR*10000 + MINOR*100 + PATCH (10901: 1.9.1); MXNet 1.9 loads a symbol
# claiming 1000000 or more and then fails on it ("The any container is empty").
_MAX_MXNET_VERSION = 999_999


def _check_graph_fields(file: str, doc: Dict[str, Any], nodes: List[Dict[str, Any]]) -> None:
    """The symbol's fields besides nodes and heads as MXNet 1.9 reads them: ``arg_nodes`` (the
    variables' indices, required), ``node_row_ptr`` (integers, unused) and ``attrs``
    (``{"mxnet_version": ["int", N]}``)."""
    redo = "; re-export the model from Gluon"
    arg_nodes = doc.get("arg_nodes")
    if not (isinstance(arg_nodes, list) and all(type(i) is int and 0 <= i < len(nodes)
                                                and nodes[i]["op"] == "null" for i in arg_nodes)):
        what = "has no 'arg_nodes'" if arg_nodes is None else "'arg_nodes' is not a list of its variable (op 'null') nodes' indices"
        raise UsageError(f"{file}: {what}, which MXNet needs{redo}")
    row_ptr = doc.get("node_row_ptr", [])
    if not (isinstance(row_ptr, list) and all(type(i) is int for i in row_ptr)):
        raise UsageError(f"{file}: 'node_row_ptr' is not a list of integers{redo}, or delete it "
                         "(MXNet does not use it)")
    attrs = doc.get("attrs", {})
    if not (isinstance(attrs, dict) and all(isinstance(v, list) and len(v) == 2
                                            and isinstance(v[0], str) for v in attrs.values())):
        raise UsageError(f"{file}: its top-level 'attrs' is not an object of [\"type\", value] "
                         f"pairs like {{\"mxnet_version\": [\"int\", 10901]}}{redo}")
    if "mxnet_version" in attrs:
        kind, version = attrs["mxnet_version"]
        if kind != "int" or type(version) is not int or not 0 <= version <= _MAX_MXNET_VERSION:
            raise UsageError(f"{file}: mxnet_version {json.dumps(attrs['mxnet_version'])[:40]} is not "
                             "an MXNet version ([\"int\", MAJOR*10000+MINOR*100+PATCH], e.g. "
                             f"[\"int\", 10901] for 1.9.1){redo}")


def _canonical_nodes(doc: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, str], List[str]]:
    """Drop nodes no output depends on (MXNet ignores them too) and give every op node a unique
    name (a block called twice exports its ops twice under one name; MXNet runs that fine but
    tensors need names): the 2nd ``X`` becomes ``X_dup1``. Deterministic.

    Returns:
        (the new symbol JSON, renamed op nodes old -> new, names of the dropped nodes).
    """
    nodes = doc["nodes"]
    keep = [False] * len(nodes)
    stack = [h[0] for h in doc["heads"]]
    while stack:
        i = stack.pop()
        if not keep[i]:
            keep[i] = True
            stack.extend(e[0] for e in nodes[i].get("inputs", []))
    dropped = [n["name"] for n, k in zip(nodes, keep) if not k]
    new_index: Dict[int, int] = {}
    out_nodes: List[Dict[str, Any]] = []
    taken = {n["name"] for n, k in zip(nodes, keep) if k}
    seen: Dict[str, int] = {}
    renamed: Dict[str, str] = {}
    for i, node in enumerate(nodes):
        if not keep[i]:
            continue
        node = dict(node)
        name = node["name"]
        if node["op"] != "null" and name in seen:
            count = seen[name]
            while True:
                count += 1
                candidate = f"{name}_dup{count}"
                if candidate not in taken:
                    break
            seen[name] = count
            taken.add(candidate)
            renamed[f"{name} (node {i})"] = candidate
            node["name"] = candidate
        else:
            seen.setdefault(name, 0)
        node["inputs"] = [[new_index[e[0]], *e[1:]] for e in node.get("inputs", [])]
        new_index[i] = len(out_nodes)
        out_nodes.append(node)
    if not dropped and not renamed:
        return doc, {}, []
    new_doc = dict(doc)
    new_doc["nodes"] = out_nodes
    new_doc["arg_nodes"] = [i for i, n in enumerate(out_nodes) if n["op"] == "null"]
    new_doc["heads"] = [[new_index[h[0]], *h[1:]] for h in doc["heads"]]
    new_doc.pop("node_row_ptr", None)
    return new_doc, renamed, dropped


def load_graph(symbol_path: Path, params_path: Path,
               input_shapes: Optional[Mapping[str, Tuple[Dim, ...]]] = None,
               input_dtypes: Optional[Mapping[str, str]] = None,
               allow_nonfinite_weights: bool = True,
               opt_shapes: Optional[Mapping[str, Tuple[int, ...]]] = None) -> Graph:
    """Load an MXNet export and infer the shape and dtype of every tensor.

    Input shapes come from ``input_shapes``, else from each input variable's ``__shape__``
    attribute; an input with neither is a UsageError listing the inputs and the flag to pass.
    Dtypes come from ``input_dtypes``, else the variable's ``__dtype__``, else float32.
    Duplicate op names are made unique and unreachable nodes dropped (``graph.renamed``,
    ``graph.unreachable``). NaN/Inf in the weights is a UsageError unless allowed.

    A dimension given as ``(min, max)`` makes the input dynamic: the graph's shapes are those at
    the opt shape (``opt_shapes``, else the symbol's recorded shape when it lies in the range,
    else the max), and MXNet's shape inference at the min and max shapes gives the range of
    every tensor whose shape varies (``graph.ranges``).
    """
    import mxnet as mx

    _, raw_doc = _read_symbol_json(symbol_path)
    symbol_json, renamed, unreachable = _canonical_nodes(raw_doc)
    try:
        symbol = mx.sym.load_json(json.dumps(symbol_json, ensure_ascii=False))
        symbol.get_internals()  # where what MXNet's loader let through fails
    except Exception as exc:
        first = mxnet_said(exc)
        hint = ""
        if any(n.get("op") == "Custom" for n in symbol_json["nodes"]):
            hint = "; it uses MXNet custom ops: pass --import MODULE that registers them"
        raise UsageError(f"MXNet cannot load {symbol_path.name}: {first}{hint}") from None

    try:
        raw_params = mx.nd.load(str(params_path))
    except Exception as exc:
        said = mxnet_said(exc)
        if "np shape semantics" in said:  # saved under npx.set_np(): MXNet's numpy interface
            raise UsageError(
                f"{params_path} was saved with MXNet's numpy interface (npx.set_np()), which trtc "
                f"does not compile (MXNet: \"{said}\"); export the model with MXNet's classic "
                "interface: build and export it without npx.set_np()") from None
        raise UsageError(f"{params_path} is not an MXNet params file (mx.nd.save / "
                         f"HybridBlock.export format; MXNet: \"{said}\")") from None
    if isinstance(raw_params, list) and not raw_params:
        raw_params = {}  # a model without weights: MXNet saves {} and loads it back as []
    if not isinstance(raw_params, dict):
        raise UsageError(f"{params_path} holds an unnamed list of arrays, not named params; "
                         "export the model with HybridBlock.export")
    aux_names = set(symbol.list_auxiliary_states())
    arg_names = symbol.list_arguments()
    arg_set = set(arg_names)
    params: Dict[str, np.ndarray] = {}
    seen: Dict[str, str] = {}  # name -> its key in the file
    for key, value in raw_params.items():
        if ":" in key:
            kind, name = key.split(":", 1)
        else:
            kind, name = ("aux" if key in aux_names else "arg"), key
        if kind not in ("arg", "aux"):
            raise UsageError(f"{params_path.name}: param '{shown_name(key)}' has the prefix "
                             f"'{shown_name(kind, 20)}:'; a params file names weights 'arg:NAME' and "
                             "running statistics 'aux:NAME' (as HybridBlock.export writes them); "
                             "fix the key or re-export the model")
        right = "aux" if name in aux_names else "arg" if name in arg_set else kind
        if kind != right:
            raise UsageError(f"{params_path.name}: param '{shown_name(key)}' is an "
                             f"{'auxiliary state' if right == 'aux' else 'argument'} of "
                             f"{symbol_path.name}, so its key is '{right}:{shown_name(name)}'; "
                             "fix the key or re-export the model")
        if name in seen:
            raise UsageError(f"{params_path.name} holds '{shown_name(name)}' twice (as "
                             f"'{shown_name(seen[name])}' and '{shown_name(key)}'); keep one and "
                             "re-save the params")
        seen[name] = key
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
    if not allow_nonfinite_weights:
        for key, value in params.items():
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                bad = int(np.size(value) - np.isfinite(value).sum())
                raise UsageError(f"{params_path.name}: weight '{key.split(':', 1)[1]}' holds {bad} "
                                 "NaN/Inf value(s): the model computes NaN; fix the training run, or "
                                 "pass --allow-nonfinite-weights to compile it anyway")

    data_inputs = [name for name in arg_names if name not in param_vars]
    var_attrs = {n["name"]: n.get("attrs", {}) for n in symbol_json["nodes"] if n["op"] == "null"}
    if not data_inputs:
        taken = [n for n in param_vars if not any(k in var_attrs.get(n, {}) for k in
                                                  ("__init__", "__lr_mult__", "__wd_mult__"))]
        which = f" (it holds '{shown_name(taken[0])}', an input of the model?)" if taken else ""
        raise UsageError(f"{params_path.name} gives a value to every variable of "
                         f"{symbol_path.name}{which}, so the model has no inputs left to compile; "
                         "remove the inputs from the params file")
    for name in data_inputs:
        _check_tensor_name(name, "input", symbol_path.name)
    given = dict(input_shapes or {})
    given_types = dict(input_dtypes or {})
    unknown = [name for name in list(given) + list(given_types) if name not in data_inputs]
    unknown_opt = [name for name in (opt_shapes or {}) if name not in data_inputs]
    if unknown_opt:
        raise UsageError(f"--opt-shape names '{shown_name(unknown_opt[0])}', which is not an input of the model; "
                         f"its inputs are: {', '.join(data_inputs) or '(none)'}")
    if unknown:
        raise UsageError(f"--input names '{shown_name(unknown[0])}', which is not an input of the model; its "
                         f"inputs are: {', '.join(data_inputs) or '(none)'}")
    for name in data_inputs:  # a weight the params file lacks is not a new model input
        attrs = var_attrs.get(name, {})
        looks_like_weight = (any(k in attrs for k in ("__init__", "__lr_mult__", "__wd_mult__"))
                             or name.rsplit("_", 1)[-1] in {s.rsplit("_", 1)[-1] for s in _PARAM_SUFFIXES})
        if name not in given and params and looks_like_weight:
            raise UsageError(f"{params_path.name} lacks '{name}' that {symbol_path.name} needs (a "
                             "weight, not an input); pass the params file exported with this "
                             f"symbol, or --input {name}:SHAPE if it really is an input")
    shapes_in: Dict[str, Tuple[int, ...]] = {}
    dtypes_in: Dict[str, str] = {}
    input_ranges: Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]] = {}
    for name in data_inputs:
        attrs = var_attrs.get(name, {})
        recorded = _parse_shape_attr(attrs.get("__shape__", ""))
        shape: Any = given.get(name) or recorded
        if shape is not None and any(isinstance(d, tuple) for d in shape):
            input_ranges[name] = _input_range(name, shape, recorded, (opt_shapes or {}).get(name))
            shape = input_ranges[name][1]
        elif shape is not None and name in (opt_shapes or {}) and tuple(opt_shapes[name]) != tuple(shape):
            raise UsageError(f"--opt-shape {name}:{'x'.join(map(str, opt_shapes[name]))} differs from "
                             f"its fixed shape {'x'.join(map(str, shape))}; give a range with --input "
                             f"{name}:MIN..MAX...")
        if shape is None:
            specs = " ".join(f"--input {n}:1x3x224x224" if i == 0 else f"--input {n}:SHAPE"
                             for i, n in enumerate(data_inputs))
            recorded_text = attrs.get("__shape__")
            why = (f"its recorded __shape__ {recorded_text[:40]!r} is not a shape of positive "
                   "integers; " if recorded_text else "")
            raise UsageError(f"no shape known for input '{shown_name(name)}' ({why}model inputs: "
                             f"{', '.join(map(shown_name, data_inputs))}); pass {specs}")
        shapes_in[name] = shape
        code = attrs.get("__dtype__")
        recorded = _MX_DTYPE_CODES.get(int(code), "float32") if code and code.isascii() and code.isdigit() else "float32"
        dtypes_in[name] = given_types.get(name) or recorded

    try:
        graph = _build_graph(symbol_path, params_path, symbol_json, symbol, params, data_inputs,
                             shapes_in, dtypes_in)
    except UsageError as exc:
        if not input_ranges:
            raise
        where = ", ".join(f"{n}:{'x'.join(map(str, shapes_in[n]))}" for n in input_ranges)
        raise UsageError(f"the model cannot run at the opt shape of the --input range ({where}): "
                         f"{str(exc).split(': ', 1)[-1]}") from None
    for name in graph.outputs:
        _check_tensor_name(name, "output", symbol_path.name)
    graph.renamed, graph.unreachable = renamed, unreachable
    if input_ranges:
        graph.input_ranges = input_ranges
        graph.ranges = _tensor_ranges(symbol, symbol_json, params, shapes_in, input_ranges)
    graph.symbol_sha256 = _sha256_file(symbol_path)
    graph.params_sha256 = _sha256_file(params_path)
    return graph


def _check_tensor_name(name: str, what: str, file: str) -> None:
    """A model input or output name the bundle manifest takes (runtime.bundle's own rule)."""
    if not tensor_name_ok(name):
        why = ("is empty" if not name else f"is {len(name):,} characters long"
               if len(name) > MAX_TENSOR_NAME_LENGTH else "holds an unprintable character")
        rename = "the input variable" if what == "input" else "the node that computes it"
        raise UsageError(f"{file}: {what} name '{shown_name(name)}' {why}; a bundle's input and "
                         f"output names are 1..{MAX_TENSOR_NAME_LENGTH} printable characters "
                         f"(no newline or tab): rename {rename} and re-export the model")


def _input_range(name: str, dims: Tuple[Dim, ...], recorded: Optional[Tuple[int, ...]],
                 opt: Optional[Tuple[int, ...]]) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]:
    """(min, opt, max) of a ranged input. Default opt: the symbol's recorded shape when it lies
    in the range, else the max (kernels tuned for the largest batch)."""
    lo = tuple(d[0] if isinstance(d, tuple) else d for d in dims)
    hi = tuple(d[1] if isinstance(d, tuple) else d for d in dims)

    def inside(shape: Optional[Tuple[int, ...]]) -> bool:
        return shape is not None and len(shape) == len(lo) and all(a <= s <= b for a, s, b in zip(lo, shape, hi))

    text = "x".join(f"{a}..{b}" if a != b else str(a) for a, b in zip(lo, hi))
    if opt is not None:
        if not inside(tuple(opt)):
            raise UsageError(f"--opt-shape {name}:{'x'.join(map(str, opt))} lies outside the range "
                             f"{name}:{text}; pick a shape inside it")
        return lo, tuple(opt), hi
    return lo, (tuple(recorded) if inside(recorded) else hi), hi


def _tensor_ranges(symbol: Any, symbol_json: Dict[str, Any], params: Dict[str, np.ndarray],
                   opt: Dict[str, Tuple[int, ...]],
                   input_ranges: Mapping[str, Tuple[Tuple[int, ...], ...]]
                   ) -> Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]]:
    """MXNet's shape inference at the min and max input shapes: (min, max) of every tensor whose
    shape varies. A model that cannot take the range (a Reshape with a fixed batch...) is a
    UsageError naming where: MXNet's own error, or a Reshape whose output does not hold its
    input's values (MXNet infers its shape without checking that, then crashes running it)."""
    internals = symbol.get_internals()
    names = internals.list_outputs()
    fixed = {k.split(":", 1)[1]: v.shape for k, v in params.items()}
    at: Dict[str, List[Tuple[int, ...]]] = {}
    for which, pick in (("min", 0), ("max", 2)):
        shapes = dict(opt)
        shapes.update({n: r[pick] for n, r in input_ranges.items()})
        try:  # the _impl call: the public one prints its arguments on stdout on an error
            _, out_shapes, _ = internals._infer_shape_impl(False, **shapes, **fixed)
        except Exception as exc:
            first = mxnet_error_text(exc, 200)
            raise UsageError(f"the model cannot run at the {which} of the --input range "
                             f"({', '.join(f'{n}:' + 'x'.join(map(str, s)) for n, s in shapes.items() if n in input_ranges)}): "
                             f"MXNet says {first}; narrow the range or fix that axis") from None
        if out_shapes is None or any(s is None or 0 in s for s in out_shapes):
            raise UsageError(f"MXNet cannot infer every shape at the {which} of the --input range")
        misfit = _reshape_misfit(symbol_json, internals, out_shapes)
        if misfit:
            raise UsageError(f"the model cannot take the --input range: at its {which} ("
                             + ", ".join(f"{n}:{'x'.join(map(str, s))}" for n, s in shapes.items()
                                         if n in input_ranges)
                             + f") {misfit}; narrow the range to sizes it takes, or export the "
                             "model with 0 or -1 for the batch in that reshape")
        for name, shape in zip(names, out_shapes):
            at.setdefault(name, []).append(tuple(int(d) for d in shape))
    ranges = {n: (lo, hi) for n, (lo, hi) in at.items() if lo != hi}
    for name, (lo, _, hi) in input_ranges.items():
        ranges[name] = (lo, hi)
    return ranges


# Ops that give their input another shape holding the same values. MXNet 1.9 infers their
# output shape from the target without checking the count (Reshape(shape=(1, 256)) of a
# 4x4x8x8 tensor infers 1x256) and its forward then works outside its buffers: a segfault
# (or garbage), depending on the heap.
_RESHAPE_OPS = ("Reshape", "reshape", "_np_reshape", "_npx_reshape")


def _shapes_by_node(internals: Any, out_shapes: Sequence[Any]) -> Dict[str, List[Tuple[int, ...]]]:
    """Node name -> the inferred shapes of its visible outputs, in order."""
    by_node: Dict[str, List[Tuple[int, ...]]] = {}
    for i, shape in enumerate(out_shapes):
        by_node.setdefault(internals[i].name, []).append(tuple(int(d) for d in shape or ()))
    return by_node


# ops whose `axis` MXNet's shape inference does not check against the rank (its kernel then
# fails or reads out of bounds: the gate's forward failed, exit 1, advising --no-verify)
_AXIS_OPS = frozenset({"softmax", "log_softmax", "softmin"})


def _axis_misfit(symbol_json: Dict[str, Any], by_node: Mapping[str, List[Tuple[int, ...]]]
                 ) -> Optional[str]:
    """The first softmax-like node whose ``axis`` is outside its input's rank, described."""
    nodes = symbol_json["nodes"]
    for node in nodes:
        if node["op"] not in _AXIS_OPS or not node.get("inputs"):
            continue
        try:
            axis = int(node.get("attrs", {}).get("axis", "-1"))
        except ValueError:
            continue
        src, out = node["inputs"][0][0], node["inputs"][0][1]
        given = by_node.get(nodes[src]["name"], [])
        if len(given) > out and not -len(given[out]) <= axis < len(given[out]):
            return (f"{node['op']} '{shown_name(node['name'])}' has axis={axis}, outside its "
                    f"input's {len(given[out])} axes ({'x'.join(map(str, given[out]))})")
    return None


def _reshape_misfit(symbol_json: Dict[str, Any], internals: Any, out_shapes: Sequence[Any]
                    ) -> Optional[str]:
    """The first reshape whose inferred output does not hold its input's values, described
    (``Reshape 'r_reshape0' turns 4x4x8x8 (1,024 values) into 1x256 (256 values), shape=(1,
    256)``), or None. ``out_shapes``: MXNet's inferred shapes of ``internals``' outputs."""
    nodes = symbol_json["nodes"]
    if not any(n["op"] in _RESHAPE_OPS for n in nodes):
        return None
    by_node = _shapes_by_node(internals, out_shapes)
    for node in nodes:
        if node["op"] not in _RESHAPE_OPS or not node.get("inputs"):
            continue
        src, out = node["inputs"][0][0], node["inputs"][0][1]
        given = by_node.get(nodes[src]["name"], [])
        made = by_node.get(node["name"], [])
        if len(given) <= out or not made:
            continue
        before, after = given[out], made[0]
        if int(np.prod(before, dtype=np.int64)) != int(np.prod(after, dtype=np.int64)):
            attrs = node.get("attrs", {})
            target = attrs.get("shape", attrs.get("newshape", "?"))
            return (f"{node['op']} '{node['name']}' turns {'x'.join(map(str, before))} "
                    f"({int(np.prod(before, dtype=np.int64)):,} values) into "
                    f"{'x'.join(map(str, after))} ({int(np.prod(after, dtype=np.int64)):,} values), "
                    f"shape={target}")
    return None


def check_input_shapes(graph: "Graph", shapes: Mapping[str, Tuple[int, ...]], where: str) -> None:
    """Can MXNet run ``graph`` (as exported) at these input shapes? Its shape inference there,
    and the reshape check :func:`_reshape_misfit` (what MXNet's forward would crash on).

    Raises:
        UsageError: naming ``where`` (e.g. "the accuracy gate's odd size") and the op.
    """
    source = graph.reference or graph
    text = ", ".join(f"{n}:{'x'.join(map(str, s))}" for n, s in shapes.items())
    try:
        internals, out_shapes = source.internal_shapes(shapes)
    except Exception as exc:
        raise UsageError(f"the model cannot run at {where} ({text}): MXNet says "
                         f"{mxnet_error_text(exc, 200)}; narrow the range or fix that axis") from None
    misfit = _reshape_misfit(source.symbol_json, internals, out_shapes)
    if misfit:
        raise UsageError(f"the model cannot run at {where} ({text}): {misfit}; narrow the "
                         "range to sizes it takes, or export the model with 0 or -1 for the batch "
                         "in that reshape")


def _infer_here(internals: Any, shapes: Dict[str, Any], types: Dict[str, Any]
                ) -> Tuple[List[Any], List[Any]]:
    # the _impl calls: the public ones print their arguments on stdout on an error
    _, out_shapes, _ = internals._infer_shape_impl(False, **shapes)
    _, out_types, _ = internals._infer_type_impl(False, **types)
    return out_shapes, out_types


# ops whose output size depends on the values of their inputs: MXNet infers no shape for it
_DATA_DEPENDENT_OPS = frozenset({"_contrib_boolean_mask", "boolean_mask", "_npi_nonzero",
                                 "_npx_nonzero", "_contrib_index_array"})


def _unknown_shape_text(internals: Any, shapes: Mapping[str, Any]) -> str:
    """What to say when MXNet's shape inference leaves a tensor unknown: the first node whose
    output its partial inference could not infer (it ran isolated once already, without a
    crash), and why where the op says (a data-dependent size)."""
    advice = "pass every input with --input NAME:SHAPE"
    try:
        _, out_shapes, _ = internals._infer_shape_impl(True, **shapes)
    except Exception:  # noqa: BLE001 - MXNetError: say it as before
        out_shapes = None
    for i, shape in enumerate(out_shapes or ()):
        if shape and 0 not in shape:
            continue
        node = internals[i]
        doc = json.loads(node.tojson())
        op = doc["nodes"][doc["heads"][0][0]]["op"]
        if op == "null":
            return f"no shape known for input '{shown_name(node.name)}'; {advice}"
        if op in _DATA_DEPENDENT_OPS:
            return (f"the output size of '{shown_name(node.name)}' ({op}) depends on the values "
                    "of its inputs, which a TensorRT engine's shapes cannot express; compute it "
                    "outside the model (or mask with a fixed size: where / SequenceMask)")
        return (f"MXNet could not infer the shape of '{shown_name(node.name)}' ({op}) from the "
                f"given input shapes; {advice}")
    return f"MXNet could not infer every tensor's shape from the given input shapes; {advice}"


def _build_graph(symbol_path: Path, params_path: Path, symbol_json: Dict[str, Any], symbol: Any,
                 params: Dict[str, np.ndarray], data_inputs: List[str],
                 shapes_in: Dict[str, Tuple[int, ...]], dtypes_in: Dict[str, str]) -> Graph:
    """Infer every tensor's shape and dtype and make the Graph (hashes left empty)."""
    param_vars = {key.split(":", 1)[1]: key for key in params}
    internals = symbol.get_internals()
    all_shapes = dict(shapes_in)
    all_shapes.update({name: params[key].shape for name, key in param_vars.items()})
    all_types = dict(dtypes_in)
    all_types.update({name: params[key].dtype for name, key in param_vars.items()})
    from ._isolate import NativeCrash, in_child, signal_text

    try:  # the first look MXNet takes at the model's attributes: isolated (a divisor of 0 in
        # an attribute no check knows of killed the compiler with SIGFPE here)
        out_shapes, out_types = in_child("MXNet's shape inference", _infer_here, internals,
                                         all_shapes, all_types)
    except NativeCrash as crash:
        raise UsageError(f"MXNet's shape inference crashed on {symbol_path.name} "
                         f"({signal_text(crash.signum) if crash.signum else crash}): an op's "
                         "attribute is out of its range (a stride, size or count of 0?); fix the "
                         "model") from None
    except Exception as exc:
        first = mxnet_error_text(exc, 300)
        raise UsageError(f"MXNet cannot infer shapes with inputs "
                         f"{ {k: v for k, v in shapes_in.items()} }: {first}; check --input") from None
    if out_shapes is None or any(s is None or 0 in s for s in out_shapes):
        raise UsageError(_unknown_shape_text(internals, all_shapes))

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
    misfit = _reshape_misfit(symbol_json, internals, out_shapes)
    if misfit:
        raise UsageError(f"MXNet cannot run the model with inputs "
                         + ", ".join(f"{n}:{'x'.join(map(str, s))}" for n, s in shapes_in.items())
                         + f": {misfit}; check --input (a reshape with a fixed batch takes only "
                         "that batch)")
    bad_axis = _axis_misfit(symbol_json, _shapes_by_node(internals, out_shapes))
    if bad_axis:
        raise UsageError(f"{symbol_path.name}: {bad_axis}; fix the model")

    nodes: List[Node] = []
    for idx, raw in enumerate(symbol_json["nodes"]):
        name = raw["name"]
        node = Node(index=idx, name=name, op=raw["op"], attrs=dict(raw.get("attrs", {})),
                    inputs=[(int(e[0]), int(e[1])) for e in raw.get("inputs", [])])
        if node.is_op:
            node.outputs = outputs_by_node.get(name, [])
            if not node.outputs:
                raise UsageError(f"{symbol_path.name}: MXNet lists no output for node '{name}'; "
                                 "re-export the model from Gluon")
        else:
            node.param_key = param_vars.get(name)
            shapes.setdefault(name, all_shapes.get(name, ()))
            if node.param_key is None and name in dtypes_in:
                dtypes[name] = dtypes_in[name]
        nodes.append(node)

    heads = [(int(h[0]), int(h[1])) for h in symbol_json["heads"]]
    graph = Graph(
        symbol_path=symbol_path, params_path=params_path, symbol_json=symbol_json, nodes=nodes,
        params=params,
        inputs=[(name, shapes_in[name], dtypes_in[name]) for name in data_inputs],
        outputs=[], heads=heads, shapes=shapes, dtypes=dtypes,
        symbol_sha256="", params_sha256="",
    )
    for h in heads:
        if h[1] >= max(len(nodes[h[0]].outputs), 1):
            raise UsageError(f"{symbol_path.name}: an output refers to output {h[1]} of "
                             f"'{nodes[h[0]].name}', which has fewer; re-export the model")
    graph.outputs = [graph.tensor(h) for h in heads]
    if any(not nodes[h[0]].is_op for h in heads):
        raise UsageError("a model output is directly an input variable; nothing to compile")
    return graph


# Ops whose result changes from call to call: never folded.
_NONDETERMINISTIC = re.compile(r"(random|sample|_shuffle|Dropout)", re.IGNORECASE)


def _resolve_static_zero_dims(graph: Graph) -> None:
    """A ``shape`` attribute whose 0 dims MXNet fills in from the rest of the model (Gluon RNNs'
    ``_zeros(shape=(L, 0, H))`` begin state) is rewritten with the shape MXNet inferred for the
    whole model, where that shape does not vary over the input range: exporters then see a real
    shape (mxnet.onnx writes the 0 as is, an empty tensor). Dynamic ones are left as they are."""
    for node, raw in zip(graph.nodes, graph.symbol_json["nodes"]):
        if not node.is_op or "shape" not in node.attrs or len(node.outputs) != 1:
            continue
        try:
            dims = ast.literal_eval(node.attrs["shape"])
        except (ValueError, SyntaxError):
            continue
        inferred = graph.shapes.get(node.outputs[0])
        if not isinstance(dims, (tuple, list)) or 0 not in dims or inferred is None \
                or node.outputs[0] in graph.ranges or len(inferred) != len(dims) \
                or any(d not in (0, i) for d, i in zip(dims, inferred)):
            continue
        text = str(tuple(int(d) for d in inferred))
        node.attrs["shape"] = text
        raw.setdefault("attrs", {})["shape"] = text


def _shape_from_inputs(graph: Graph, node: Any) -> bool:
    """Does an op's output shape come from the model's inputs rather than its own attributes? An
    output that varies over a dynamic input range, or an input-free op whose ``shape`` attribute
    has 0 or -1 dims (Gluon RNNs' begin state ``_zeros(shape=(L, 0, H))``: MXNet fills in the
    batch from the rest of the model). Such a node is never computed alone."""
    if any(out in graph.ranges for out in node.outputs):
        return True
    if node.inputs:  # a Reshape of weights: its 0/-1 dims refer to its (constant) input
        return False
    try:
        dims = ast.literal_eval(node.attrs.get("shape", "()"))
    except (ValueError, SyntaxError):
        dims = ()
    dims = (dims,) if isinstance(dims, int) else dims
    return isinstance(dims, (tuple, list)) and any(isinstance(d, int) and d <= 0 for d in dims)


def fold_constants(graph: Graph) -> Graph:
    """Compute every op that depends on weights only (reshapes, transposes, concats of weights;
    an LSTM's weight packing, BERT's ``Reshape(reverse=True)`` of weights) once, with MXNet, and
    store its result as a constant: neither TensorRT's parser nor the runtime ever sees it.

    Returns the folded graph (``graph`` itself when nothing folds); ``.folded`` counts the folded
    ops by type and ``.reference`` is the unfolded graph (MXNet's reference forward runs it).
    """
    import mxnet as mx

    _resolve_static_zero_dims(graph)
    heads = {h[0] for h in graph.heads}
    const = [False] * len(graph.nodes)
    for node in graph.nodes:
        if not node.is_op:
            const[node.index] = node.param_key is not None
        elif node.index not in heads and not _NONDETERMINISTIC.search(node.op) and node.op != "Custom":
            const[node.index] = all(const[src] for src, _ in node.inputs) and (
                bool(node.inputs) or int(np.prod(graph.shapes.get(node.outputs[0], (1 << 30,)))) <= 1 << 16) \
                and not _shape_from_inputs(graph, node)
    folded = [n for n in graph.op_nodes if const[n.index]]
    if not folded:
        return graph
    # tensors of folded nodes read by kept nodes become constants
    frontier: List[Tuple[int, int]] = []
    for node in graph.op_nodes:
        if const[node.index]:
            continue
        for src, out in node.inputs:
            if graph.nodes[src].is_op and const[src] and (src, out) not in frontier:
                frontier.append((src, out))
    names = [graph.tensor(e) for e in frontier]
    symbol = graph.mxnet_symbol().get_internals()
    group = mx.sym.Group([symbol[name] for name in names])
    args = {k.split(":", 1)[1]: mx.nd.array(v, dtype=v.dtype) for k, v in graph.params.items()}
    needed = set(group.list_arguments()) | set(group.list_auxiliary_states())
    try:
        values = group.eval(ctx=mx.cpu(), **{k: v for k, v in args.items() if k in needed})
    except Exception:  # MXNetError: a node MXNet cannot compute apart from the model
        return graph  # folding is an optimization: the model is compiled as it is
    new_params = {f"arg:{name}": value.asnumpy() for name, value in zip(names, values)}

    # the new symbol: folded nodes gone, each frontier tensor a variable named after it
    doc = graph.symbol_json
    out_nodes: List[Dict[str, Any]] = []
    new_index: Dict[Tuple[int, int], int] = {}
    var_for = {e: name for e, name in zip(frontier, names)}
    used_params: set = set()
    for node, raw in zip(graph.nodes, doc["nodes"]):
        if node.is_op and const[node.index]:
            continue
        if not node.is_op:
            new_index[(node.index, 0)] = len(out_nodes)
            out_nodes.append(raw)
            continue
        inputs = []
        for (src, out), raw_entry in zip(node.inputs, raw["inputs"]):
            if (src, out) in var_for:
                if (src, out) not in new_index:
                    new_index[(src, out)] = len(out_nodes)
                    out_nodes.append({"op": "null", "name": var_for[(src, out)], "inputs": []})
                inputs.append([new_index[(src, out)], 0, 0])
            else:
                inputs.append([new_index[(src, 0)], out, *raw_entry[2:]])
                if not graph.nodes[src].is_op and graph.nodes[src].param_key:
                    used_params.add(graph.nodes[src].param_key)
        entry = dict(raw)
        entry["inputs"] = inputs
        new_index[(node.index, 0)] = len(out_nodes)
        out_nodes.append(entry)
    # variables only the folded nodes read are dropped
    keep_vars = {graph.nodes[i].name for i in range(len(graph.nodes))
                 if not graph.nodes[i].is_op and (graph.nodes[i].param_key is None
                                                  or graph.nodes[i].param_key in used_params)}
    final: List[Dict[str, Any]] = []
    remap: Dict[int, int] = {}
    for i, raw in enumerate(out_nodes):
        if raw["op"] == "null" and raw["name"] not in keep_vars and f"arg:{raw['name']}" not in new_params:
            continue
        remap[i] = len(final)
        final.append({**raw, "inputs": [[remap[e[0]], *e[1:]] for e in raw.get("inputs", [])]})
    new_doc = dict(doc)
    new_doc["nodes"] = final
    new_doc["arg_nodes"] = [i for i, n in enumerate(final) if n["op"] == "null"]
    new_doc["heads"] = [[remap[new_index[(h[0], 0)]], h[1], 0] for h in graph.heads]
    new_doc.pop("node_row_ptr", None)

    params = {k: v for k, v in graph.params.items() if k in used_params}
    params.update(new_params)
    symbol_new = mx.sym.load_json(json.dumps(new_doc, ensure_ascii=False))
    data_inputs = [name for name, _, _ in graph.inputs]
    new = _build_graph(graph.symbol_path, graph.params_path, new_doc, symbol_new, params, data_inputs,
                       {n: s for n, s, _ in graph.inputs}, {n: d for n, _, d in graph.inputs})
    new.symbol_sha256, new.params_sha256 = graph.symbol_sha256, graph.params_sha256
    new.renamed, new.unreachable = graph.renamed, graph.unreachable
    new.folded = dict(sorted(Counter(n.op for n in folded).items()))
    new.reference = graph
    new.input_ranges, new.ranges = graph.input_ranges, graph.ranges
    return new
