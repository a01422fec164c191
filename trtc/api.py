"""trtc.compile: one call from a Gluon HybridBlock, a Symbol with its params, or a params file to
a verified bundle; options are CompileSettings' fields by name.

A block or symbol is written to a temporary directory as ``PREFIX-symbol.json`` +
``PREFIX-0000.params`` (what ``HybridBlock.export`` writes, example input shapes and non-float32
dtypes recorded in the symbol), compiled by :func:`trtc.compiler.compile` exactly as
``trtc compile`` would compile those files, and the directory removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import inspect
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import compiler
from .frontend import DTYPES, check_shape, parse_input_spec
from .partition import PartitionReport
from .runtime import _native
from .runtime.errors import TrtcError, UsageError
from .settings import CompileSettings

__all__ = ["compile", "CompileResult", "Report"]

logger = logging.getLogger("trtc")

Shape = Tuple[Any, ...]  # ints, or (min, max) tuples for ranged dimensions
Examples = Dict[str, Tuple[Tuple[int, ...], str]]  # input name -> an example's (shape, dtype)

_FIELDS = {f.name: f for f in dataclasses.fields(CompileSettings)}
# Fields the source fills in; ``symbol`` is an option only next to a params path.
_FROM_SOURCE = ("params",)


class Report(PartitionReport):
    """The partition report; ``str()`` / ``print()`` give the text ``trtc compile`` prints."""

    def __str__(self) -> str:
        return self.to_text()


@dataclass(repr=False)
class CompileResult(compiler.CompileResult):
    """What :func:`compile` produced: a :class:`trtc.compiler.CompileResult` plus the bundle's
    bytes when no ``output`` file was asked for.

    Attributes:
        output: the bundle file written (None with ``output=None`` or ``dry_run=True``).
        report: the partition report (``print(result.report)``: the text ``trtc compile`` prints).
        manifest: the bundle's manifest (None with ``dry_run``).
        checks: the accuracy gate's comparisons with MXNet.
        timings: seconds per step, and ``total``.
        warnings: what the compiler warned about.
        bundle: the bundle's bytes with ``output=None`` (nothing was written), else None.
    """

    bundle: Optional[bytes] = None

    def __repr__(self) -> str:
        text = super().__repr__()
        return text if self.bundle is None else f"{text[:-1]}, bundle={len(self.bundle)} bytes)"

    def load(self, device: str = "auto", **kwargs: Any) -> Any:
        """Load the compiled bundle for inference (``output`` or, with ``output=None``, ``bundle``).

        Args:
            device: 'auto', 'cuda' or 'cpu', as for :func:`trtc.runtime.load`.
            **kwargs: other arguments of :func:`trtc.runtime.load` (``cuda_graph``, ...).

        Returns:
            A :class:`trtc.runtime.Model`.

        Raises:
            UsageError: nothing was built (``dry_run``).
        """
        from .runtime import load

        if self.output is not None:
            return load(self.output, device=device, **kwargs)
        if self.bundle is None:
            raise UsageError("nothing to load: this compilation was a dry run")
        # The runtime reads a bundle from a file, all of it into memory; the file can go after.
        with tempfile.TemporaryDirectory(prefix="trtc-") as workdir:
            path = Path(workdir) / "bundle.trtb"
            path.write_bytes(self.bundle)
            return load(path, device=device, **kwargs)

    def to_json(self) -> Dict[str, Any]:
        payload = super().to_json()
        if self.bundle is not None:
            payload["bundle_bytes"] = len(self.bundle)
        return payload


def compile(source: Any, *example_inputs: Any, progress: Optional[compiler.Progress] = None,
            **options: Any) -> compiler.CompileResult:
    """Compile an MXNet model into a verified ``.trtb`` bundle, in one call.

    Examples::

        net.initialize(); net.hybridize()
        result = trtc.compile(net, x, fp16=True, output="r18.trtb")   # x: NDArray or numpy
        result = trtc.compile(net, inputs={"data": "1..32x3x224x224"}, output="r18.trtb")
        result = trtc.compile(symbol, arg_and_aux_params, x, output="m.trtb")
        result = trtc.compile("model-0000.params", output="m.trtb")
        print(result.report)                                # as `trtc compile` prints it
        model = result.load()                               # or trtc.runtime.load("r18.trtb")

    Args:
        source: what to compile, one of
            - a Gluon ``HybridBlock``, initialized (``net.initialize()`` or
              ``net.load_parameters(FILE)``) and hybridized (``net.hybridize()``). Its inputs are
              named as ``HybridBlock.export`` names them: ``data``, or ``data0``, ``data1``, ...;
            - an MXNet ``Symbol``, followed by its params: a dict name -> NDArray/numpy array
              (keys plain or ``arg:``/``aux:``-prefixed, as ``mx.nd.load`` returns them) or an
              ``(arg_params, aux_params)`` pair. Its inputs are its arguments without params;
            - a path to ``PREFIX-0000.params`` (``PREFIX-symbol.json`` beside it, or ``symbol=``),
              what ``trtc compile`` takes;
            - a :class:`CompileSettings` (then no other option: ``compile(settings, progress)``,
              exactly :func:`trtc.compiler.compile`).
        *example_inputs: for a block or symbol, one array per input (MXNet NDArray or numpy),
            giving its shape and dtype; their values are not used (the accuracy gate runs on
            seeded random inputs, or ``verify_inputs=FILE.npz``). Optional when ``inputs=`` or
            shapes recorded in the symbol give the shapes.
        progress: called with each progress line. Default: each line is logged to the ``trtc``
            logger (INFO; ``warning:`` lines at WARNING); nothing is printed to stdout.
        **options: :class:`CompileSettings` fields by name (``help(trtc.CompileSettings)``), e.g.
            ``fp16=True``, ``output="m.trtb"``, ``exclude_ops=("Pooling",)``, ``tolerance=1e-3``.
            ``inputs`` maps input name -> shape: a string ``"1..32x3x224x224"`` (a dimension is
            ``N`` or ``MIN..MAX``; ``"1x128:int32"`` sets the dtype too) or a tuple whose elements
            are ints or ``(min, max)`` tuples; it overrides an example's shape, which must lie in
            the range (inside a range the example's shape is the one engines are tuned for).
            ``opt_shapes`` takes ``"8x3x224x224"`` or tuples; list options take a list or one
            string; paths take str or Path. ``output=None`` (default): no file is written and
            the bundle's bytes are in ``result.bundle`` (``result.load()`` runs them).

    Returns:
        :class:`CompileResult`: ``report``, ``checks``, ``timings``, ``manifest``, ``output``
        (the file written) or ``bundle`` (its bytes, with ``output=None``). The CompileSettings
        form returns :func:`trtc.compiler.compile`'s result unchanged.

    Raises:
        UsageError: a bad source or option (an un-hybridized or un-initialized block, an unknown
            option, a shape out of range, ...), as ``trtc compile`` exits 2 for.
        CompileError: nothing could be built, ``require_full`` failed, or the accuracy gate
            failed (``error.report`` holds the partition report).
    """
    if isinstance(source, CompileSettings):
        if len(example_inputs) == 1 and progress is None and (example_inputs[0] is None
                                                              or callable(example_inputs[0])):
            progress, example_inputs = example_inputs[0], ()  # compile(settings, progress)
        if example_inputs or options:
            raise UsageError("trtc.compile(CompileSettings(...)) takes no other inputs or options; "
                             "set them as CompileSettings fields")
        return compiler.compile(source, progress=progress)

    with tempfile.TemporaryDirectory(prefix="trtc-") as workdir, _logging_kept():
        settings = _settings_for(source, example_inputs, options, Path(workdir))
        in_memory = settings.output is None and not settings.dry_run
        if in_memory:
            settings.output = Path(workdir) / "bundle.trtb"
        say = _progress(progress or _log_line, f"wrote {settings.output} " if in_memory else None)
        try:
            built = compiler.compile(settings, progress=say)
        except TrtcError as exc:
            if isinstance(getattr(exc, "report", None), PartitionReport):
                exc.report = _printable(exc.report)  # type: ignore[attr-defined]
            raise
        report = built.report
        if report.residual_ops:  # the CLI prints the report; here it may go unread
            say(f"warning: {report.residual_ops} of {report.total_ops} MXNet ops run outside "
                f"TensorRT engines ({report.ops_in('onnx')} in ONNX Runtime, {report.mxnet_ops} in "
                "MXNet); print(result.report) says which and why")
        values = {f.name: getattr(built, f.name) for f in dataclasses.fields(built)}
        values["report"] = _printable(built.report)
        if in_memory:
            values["output"] = None
            values["bundle"] = built.output.read_bytes() if built.output else None
        return CompileResult(**values)


def _progress(say: compiler.Progress, temp_output: Optional[str]) -> compiler.Progress:
    """``say``, with the temporary bundle's "wrote PATH" line told as what it is."""
    if temp_output is None:
        return say
    return lambda line: say(line.replace(temp_output, "built the bundle in memory ", 1))


@contextlib.contextmanager
def _logging_kept() -> Iterator[None]:
    """The caller's logging levels, as they were, for the whole call: the mxnet.onnx export
    sets the root logger to WARNING (trtc/export.py), which would drop the ``trtc`` INFO lines
    mid-compile and change the application's logging after it."""
    root = logging.getLogger()
    root_level, own_level = root.level, logger.level
    logger.setLevel(logger.getEffectiveLevel())
    try:
        yield
    finally:
        root.setLevel(root_level)
        logger.setLevel(own_level)


def _log_line(line: str) -> None:
    """One progress line to the ``trtc`` logger. While ``quiet_native`` holds file descriptors
    1 and 2 (native libraries' logs go to a sink), a handler writing to them is pointed at the
    sys.stdout/sys.stderr that quiet_native keeps reaching the terminal, so no line is lost."""
    warning = line.startswith("warning:")
    level, text = (logging.WARNING, line[len("warning:"):].strip()) if warning else (logging.INFO, line)
    if not logger.isEnabledFor(level):
        return
    swapped = []
    if _native._DEPTH[0]:
        streams = {1: sys.stdout, 2: sys.stderr}
        node: Optional[logging.Logger] = logger
        while node is not None:
            for handler in node.handlers:
                fd = _fileno(getattr(handler, "stream", None))
                if isinstance(handler, logging.StreamHandler) and fd in streams \
                        and _fileno(streams[fd]) not in (1, 2):
                    swapped.append((handler, handler.setStream(streams[fd])))
            node = node.parent if node.propagate else None
    try:
        logger.log(level, text)
    finally:
        for handler, stream in swapped:
            handler.setStream(stream)


def _fileno(stream: Any) -> int:
    try:
        return stream.fileno()
    except Exception:
        return -1


def _printable(report: PartitionReport) -> Report:
    return Report(**{f.name: getattr(report, f.name) for f in dataclasses.fields(report)})


# ----------------------------------------------------------------------------------------------
# Options -> CompileSettings
# ----------------------------------------------------------------------------------------------
def _settings_for(source: Any, example_inputs: Sequence[Any], options: Mapping[str, Any],
                  workdir: Path) -> CompileSettings:
    """The CompileSettings of one call; a block or symbol is written into ``workdir``."""
    values = _coerce_options(options)
    if isinstance(source, (str, os.PathLike)):
        if example_inputs:
            raise UsageError("example inputs apply to a block or symbol; for a params file give "
                             "shapes with inputs={'data': '1x3x224x224'} (or record them in the "
                             "symbol)")
        return CompileSettings(params=Path(source), **values)
    if "symbol" in values:
        raise UsageError("symbol= goes with a params file path; for a Symbol source pass it "
                         "first: trtc.compile(symbol, params, ...)")
    kind = _source_kind(source)
    if kind == "symbol":
        if not example_inputs:
            raise UsageError("trtc.compile(symbol, params, *example_inputs): the params (a dict "
                             "name -> array, or (arg_params, aux_params)) must follow the symbol")
        params, example_inputs = example_inputs[0], example_inputs[1:]
        names = _symbol_inputs(source, params)
    else:
        params = None
        names = _block_inputs(source, example_inputs, values.get("inputs", {}))
    examples = _examples(names, example_inputs)
    _check_examples_in_range(examples, values.get("inputs", {}))
    if kind == "symbol":
        symbol_path, params_path = _write_symbol(source, params, workdir / "model")
    else:
        symbol_path, params_path = _write_block(source, names, examples, values, workdir)
    _record_inputs(symbol_path, examples)
    return CompileSettings(params=params_path, symbol=symbol_path, **values)


def _coerce_options(options: Mapping[str, Any]) -> Dict[str, Any]:
    """Check option names against CompileSettings' fields and convert the convenient forms
    (strings for shapes, a string for a one-element list, str for paths)."""
    valid = [name for name in _FIELDS if name not in _FROM_SOURCE]
    values: Dict[str, Any] = {}
    for name, value in options.items():
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            source = " (the source, the first argument, gives it)" if name in _FROM_SOURCE else ""
            raise UsageError(f"unknown option {name!r}{hint}{source}; valid options are the "
                             f"CompileSettings fields: {', '.join(valid)}")
        values[name] = _coerce(name, value, values)
    return values


def _coerce(name: str, value: Any, values: Dict[str, Any]) -> Any:
    default = _FIELDS[name].default
    kind = str(_FIELDS[name].type)
    if name == "inputs":
        shapes: Dict[str, Shape] = {}
        for input_name, shape in _mapping(name, value).items():
            shapes[input_name], dtype = _shape(input_name, shape, ranges=True)
            if dtype:
                values.setdefault("input_dtypes", {})[input_name] = dtype
        return shapes
    if name == "opt_shapes":
        return {n: _shape(n, s, ranges=False)[0] for n, s in _mapping(name, value).items()}
    if name == "input_dtypes":
        given = {}
        for input_name, dtype in _mapping(name, value).items():
            try:
                given[str(input_name)] = dtype if isinstance(dtype, str) else np.dtype(dtype).name
            except TypeError:
                raise UsageError(f"option input_dtypes: {dtype!r:.40} for '{input_name}' is not a "
                                 f"dtype; use one of {', '.join(DTYPES)}") from None
            if given[str(input_name)] not in DTYPES:
                raise UsageError(f"option input_dtypes: {dtype!r:.40} for '{input_name}' is not a "
                                 f"dtype trtc takes; use one of {', '.join(DTYPES)}")
        return {**given, **values.get("input_dtypes", {})}
    if value is None:
        if "Optional" in kind:
            return None
        raise UsageError(f"option {name}=None: expected a value like {default!r}")
    if isinstance(default, bool):
        if not isinstance(value, (bool, np.bool_)):
            raise UsageError(f"option {name}={value!r}: expected True or False")
        return bool(value)
    if isinstance(default, int):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise UsageError(f"option {name}={value!r}: expected an integer")
        return int(value)
    if isinstance(default, tuple):
        items = (value,) if isinstance(value, (str, os.PathLike)) else value
        try:
            return tuple(os.fspath(v) if isinstance(v, os.PathLike) else str(v) for v in items)
        except TypeError:
            raise UsageError(f"option {name}={value!r}: expected a list of strings") from None
    if "Path" in kind:
        if not isinstance(value, (str, os.PathLike)):
            raise UsageError(f"option {name}={value!r}: expected a file path (str or Path)")
        return Path(value)
    if "float" in kind:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            raise UsageError(f"option {name}={value!r}: expected a number")
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise UsageError(f"option {name}={value!r}: expected a string like {default!r}")
    return value


def _mapping(option: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UsageError(f"option {option}= takes a dict input name -> value, like "
                         f"{option}={{'data': '1x3x224x224'}}; got {type(value).__name__}")
    return value


def _shape(name: str, shape: Any, ranges: bool) -> Tuple[Shape, Optional[str]]:
    """``"1..32x3x224x224"`` (with ``:DTYPE`` optionally) or a tuple -> (dims, dtype or None)."""
    if isinstance(shape, str):
        _, dims, dtype = parse_input_spec(f"{name}:{shape}", flag="inputs" if ranges else "opt_shapes",
                                          ranges=ranges)
        return dims, dtype
    return check_shape(name, shape, ranges, "inputs" if ranges else "opt_shapes"), None


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------
def _source_kind(source: Any) -> str:
    import mxnet as mx

    if isinstance(source, mx.sym.Symbol):
        return "symbol"
    if isinstance(source, mx.gluon.HybridBlock):
        return "block"
    if isinstance(source, mx.gluon.Block):
        raise UsageError(f"{type(source).__name__} is a Block, which runs imperatively only; trtc "
                         "compiles a HybridBlock: build the model from HybridBlock layers "
                         "(nn.HybridSequential, HybridBlock.hybrid_forward)")
    raise UsageError(f"cannot compile a {type(source).__module__}.{type(source).__name__}: pass a "
                     "Gluon HybridBlock, an MXNet Symbol and its params, a PREFIX-0000.params path "
                     "or a CompileSettings")


def _block_inputs(net: Any, example_inputs: Sequence[Any], shapes: Mapping[str, Shape]) -> List[str]:
    """The block's input names, as HybridBlock.export names them; checks that it can be traced."""
    calls, why = [], []  # one error naming every call still missing
    uninitialized = [p.name for p in net.collect_params().values() if _state(p) == "uninitialized"]
    if uninitialized:
        calls.append("net.initialize() (or net.load_parameters(FILE))")
        why.append(f"parameter '{uninitialized[0]}'"
                   + (f" and {len(uninitialized) - 1} more" if len(uninitialized) > 1 else "")
                   + " not initialized")
    if not getattr(net, "_active", False):
        calls.append("net.hybridize()")
        why.append("not hybridized: trtc compiles the graph hybridize() makes")
    if calls:
        raise UsageError(f"{type(net).__name__} is not ready to compile: call {' and '.join(calls)} "
                         f"before trtc.compile ({'; '.join(why)})")
    count = len(example_inputs) or len(shapes)
    if count == 0:
        raise UsageError("give the block's inputs: example arrays, trtc.compile(net, x, ...), or "
                         "shapes, trtc.compile(net, inputs={'data': '1x3x224x224'})")
    takes = _arity(net)
    if takes is not None and not takes[0] <= count <= takes[1]:
        want = str(takes[0]) if takes[0] == takes[1] else f"{takes[0]} to {takes[1]}"
        raise UsageError(f"{type(net).__name__}.hybrid_forward takes {want} input(s), got {count} "
                         + ("example input(s)" if example_inputs else "in inputs="))
    names = ["data"] if count == 1 else [f"data{i}" for i in range(count)]
    unknown = [n for n in shapes if n not in names]
    if unknown:
        raise UsageError(f"inputs={{{unknown[0]!r}: ...}}: the block's inputs are named "
                         f"{', '.join(names)} (as HybridBlock.export names them)")
    return names


def _arity(net: Any) -> Optional[Tuple[int, int]]:
    """How many data inputs hybrid_forward takes, (required, all); None when it takes *args.
    Its parameters after F are the inputs, then the block's weights (passed by name)."""
    try:
        signature = inspect.signature(net.hybrid_forward)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values()):
        return None
    inputs = [p for p in list(signature.parameters.values())[1:]
              if p.kind in kinds and p.name not in getattr(net, "_reg_params", {})]
    return sum(p.default is inspect.Parameter.empty for p in inputs), len(inputs)


def _state(param: Any) -> str:
    from mxnet.gluon.parameter import DeferredInitializationError

    try:
        param.list_data()
    except DeferredInitializationError:
        return "deferred"
    except RuntimeError:
        return "uninitialized"
    return "ready"


def _symbol_inputs(symbol: Any, params: Any) -> List[str]:
    names = set(_param_arrays(params))
    return [a for a in symbol.list_arguments() if a not in names]


def _param_arrays(params: Any) -> Dict[str, Any]:
    """A symbol's params by plain name (prefixes ``arg:``/``aux:`` dropped)."""
    if isinstance(params, tuple) and len(params) == 2 and all(isinstance(p, Mapping) for p in params):
        params = {**params[0], **params[1]}
    if not isinstance(params, Mapping):
        raise UsageError("a Symbol's params must follow it: a dict name -> NDArray/numpy array "
                         "(as mx.nd.load returns) or (arg_params, aux_params), got "
                         f"{type(params).__name__}")
    return {re.sub(r"^(arg|aux):", "", str(k)): v for k, v in params.items()}


def _examples(names: Sequence[str], example_inputs: Sequence[Any]) -> Examples:
    """Input name -> (shape, dtype) of the example arrays."""
    if not example_inputs:
        return {}
    if len(example_inputs) != len(names):
        raise UsageError(f"{len(example_inputs)} example input(s) for {len(names)} model "
                         f"input(s) ({', '.join(names)}); give one array per input, in order")
    examples = {}
    for name, value in zip(names, example_inputs):
        module = type(value).__module__.split(".")[0]
        if not (isinstance(value, np.ndarray) or (module == "mxnet" and hasattr(value, "asnumpy"))):
            raise UsageError(f"example input for '{name}': expected an MXNet NDArray or a numpy "
                             f"array, got {type(value).__module__}.{type(value).__name__}")
        examples[name] = (tuple(int(d) for d in value.shape), np.dtype(value.dtype).name)
    return examples


def _check_examples_in_range(examples: Examples, shapes: Mapping[str, Shape]) -> None:
    for name, dims in shapes.items():
        if name not in examples:
            continue
        shape = examples[name][0]
        fits = len(shape) == len(dims) and all(
            lo <= d <= hi for d, (lo, hi) in zip(shape, ((x, x) if isinstance(x, int) else x
                                                         for x in dims)))
        if not fits:
            text = "x".join(str(d) if isinstance(d, int) else f"{d[0]}..{d[1]}" for d in dims)
            raise UsageError(f"example input '{name}' has shape {'x'.join(map(str, shape))}, "
                             f"outside inputs={{'{name}': '{text}'}}; give an example inside the "
                             "range (its shape is the one engines are tuned for)")


def _write_block(net: Any, names: Sequence[str], examples: Examples, values: Mapping[str, Any],
                 workdir: Path) -> Tuple[Path, Path]:
    """What HybridBlock.export writes, traced with symbol variables; weights copied through
    numpy (export() can fail on oneDNN-laid-out weights after a forward: see zoo.save_block)."""
    import mxnet as mx

    params = net.collect_params()
    if any(_state(p) == "deferred" for p in params.values()):  # one forward sets their shapes
        ctx = next(iter(params.values())).list_ctx()[0]
        shapes = values.get("inputs", {})
        dtypes = {**{n: e[1] for n, e in examples.items()}, **values.get("input_dtypes", {})}
        feeds = []
        for name in names:
            shape = examples[name][0] if name in examples else tuple(
                d if isinstance(d, int) else d[0] for d in shapes[name])
            feeds.append(mx.nd.zeros(shape, ctx=ctx, dtype=dtypes.get(name, "float32")))
        try:
            net(*feeds)
        except Exception as exc:
            raise UsageError(f"{type(net).__name__} fails on inputs of shape "
                             f"{', '.join('x'.join(map(str, f.shape)) for f in feeds)} (one forward "
                             f"pass sets its deferred parameter shapes): {_first_line(exc)}") from None
    try:
        symbol = net(*[mx.sym.var(n) for n in names])
    except Exception as exc:
        raise UsageError(f"cannot trace {type(net).__name__} as a symbolic graph "
                         f"({_first_line(exc)}); hybrid_forward must use F.* operators only (no "
                         ".shape, .asnumpy(), Python control flow on values)") from None
    if isinstance(symbol, (list, tuple)):
        symbol = mx.sym.Group(list(symbol))
    args, aux = set(symbol.list_arguments()), set(symbol.list_auxiliary_states())
    arrays = {}
    for name, param in params.items():
        if name in args or name in aux:
            arrays[f"{'arg' if name in args else 'aux'}:{name}"] = mx.nd.array(
                param.list_data()[0].asnumpy(), dtype=param.dtype)
    prefix = workdir / (re.sub(r"[^A-Za-z0-9_.]+", "_", str(getattr(net, "name", "")) or "") or "model")
    symbol_path, params_path = Path(f"{prefix}-symbol.json"), Path(f"{prefix}-0000.params")
    symbol.save(str(symbol_path))
    mx.nd.save(str(params_path), arrays)
    return symbol_path, params_path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"


def _write_symbol(symbol: Any, params: Any, prefix: Path) -> Tuple[Path, Path]:
    import mxnet as mx

    args, aux = set(symbol.list_arguments()), set(symbol.list_auxiliary_states())
    arrays = {}
    for name, value in _param_arrays(params).items():
        if name not in args and name not in aux:
            continue  # not this symbol's (e.g. params of a larger model)
        if hasattr(value, "list_data"):  # a gluon Parameter
            value = value.list_data()[0]
        try:
            host = value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
        except Exception:
            host = None  # e.g. a ragged list
        if host is None or host.dtype.name not in DTYPES:
            array = isinstance(value, np.ndarray) or hasattr(value, "asnumpy")
            what = (f"an array of {host.dtype}" if array and host is not None
                    else f"a {type(value).__module__}.{type(value).__name__}")
            raise UsageError(f"param '{name[:80]}' is {what}; a Symbol's params are MXNet "
                             f"NDArrays or numpy arrays of {', '.join(DTYPES)}")
        arrays[f"{'arg' if name in args else 'aux'}:{name}"] = mx.nd.array(host, dtype=host.dtype)
    symbol_path, params_path = Path(f"{prefix}-symbol.json"), Path(f"{prefix}-0000.params")
    symbol.save(str(symbol_path))
    mx.nd.save(str(params_path), arrays)
    return symbol_path, params_path


def _record_inputs(symbol_path: Path, examples: Examples) -> None:
    """The examples' shapes as ``__shape__`` and non-float32 dtypes as ``__dtype__`` (MXNet's
    dtype code), as a Gluon export with typed inputs records them."""
    import json

    from .frontend import _MX_DTYPE_CODES
    from .zoo import record_input_shapes

    if not examples:
        return
    record_input_shapes(symbol_path, {n: shape for n, (shape, _) in examples.items()})
    codes = {dtype: str(code) for code, dtype in _MX_DTYPE_CODES.items()}
    typed = {n: dtype for n, (_, dtype) in examples.items() if dtype != "float32"}
    if not typed:
        return
    unknown = [d for d in typed.values() if d not in codes]
    if unknown:
        raise UsageError(f"example input dtype {unknown[0]} is not one MXNet takes "
                         f"({', '.join(codes)})")
    doc = json.loads(symbol_path.read_text(encoding="utf-8"))
    for node in doc["nodes"]:
        if node["op"] == "null" and node["name"] in typed:
            node.setdefault("attrs", {})["__dtype__"] = codes[typed[node["name"]]]
    symbol_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
