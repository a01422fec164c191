"""The `trtc` command line (typer): example, compile, inspect, run, bench, keygen, sign, verify.

Every user mistake ends as one line on stderr and an exit code (README: errors and exit codes),
typer's own usage errors (unknown flag, bad value, missing argument) included; ``--debug`` (or
TRTC_DEBUG=1) shows the traceback instead. stdout carries trtc's own output only: while a command
runs, anything else printing there (ONNX Runtime's fallback banner, MXNet) goes to stderr.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

import typer  # noqa: E402
from typer.core import TyperGroup  # noqa: E402

try:  # typer >= 0.2x vendors click
    from typer._click import exceptions as _click_errors  # noqa: E402
except ImportError:  # pragma: no cover - older typer, on the click package
    from click import exceptions as _click_errors  # type: ignore[no-redef]  # noqa: E402

from .runtime.errors import IncompatibleError, TrtcError, UsageError  # noqa: E402

__all__ = ["app", "main"]

# This module imports only typer and trtc.runtime's light modules at load time: the runtime
# commands (inspect, run, bench, keygen, sign, verify, triton-repo) work in a runtime-only
# install (`pip install 'trtc[cpu]'`, Python 3.11-3.13, numpy 1.x or 2.x). The compile side
# (MXNet, onnx, onnx-graphsurgeon) is imported inside the commands that need it, after
# _require_compiler has checked it is there.
_COMPILER_INSTALL = "pip install 'trtc[compile]' (Python <= 3.11 with numpy < 1.24: MXNet 1.9.1)"


def _require_compiler(command: str, modules: Sequence[str] = ("mxnet", "onnx", "onnx_graphsurgeon",
                                                                "onnxruntime")) -> None:
    """The compile extra's packages ``modules`` are importable, else one line saying what to
    install (IncompatibleError, exit 4): ``trtc compile`` in a runtime-only install."""
    import importlib.util

    def installed(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    missing = [name for name in modules if not installed(name)]
    if missing:
        raise IncompatibleError(f"trtc {command} needs the compiler ({', '.join(missing)} not "
                                f"installed): {_COMPILER_INSTALL}")
    if "mxnet" in modules:
        import warnings

        try:
            with warnings.catch_warnings():  # its FutureWarnings about numpy, before it fails
                warnings.simplefilter("ignore")
                import mxnet  # noqa: F401  (numpy >= 1.24 breaks it with an AttributeError)
        except Exception as exc:  # noqa: BLE001
            import numpy

            detail = str(exc).splitlines()[0][:120].rstrip(".") if str(exc) else ""
            raise IncompatibleError(
                f"trtc {command} needs the compiler, and MXNet fails to import here "
                f"({type(exc).__name__}: {detail}; this is Python {sys.version_info[0]}."
                f"{sys.version_info[1]} with numpy {numpy.__version__}): {_COMPILER_INSTALL}"
            ) from None


class _OneLineErrors(TyperGroup):
    """typer's usage errors (unknown flag, bad value, missing argument) as one ``error:`` line on
    stderr and exit 2, like trtc's own UsageError, instead of a multi-line box."""

    def main(self, args: Optional[Sequence[str]] = None, prog_name: Optional[str] = None,
             complete_var: Optional[str] = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        args = list(sys.argv[1:] if args is None else args)
        if "--debug" in args[1:]:  # `trtc compile ... --debug` works like `trtc --debug compile ...`
            args.remove("--debug")
            args.insert(0, "--debug")
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except getattr(_click_errors, "NoArgsIsHelpError", ()) as exc:  # bare `trtc`: the help
            typer.echo(exc.format_message())
            sys.exit(exc.exit_code)
        except _click_errors.ClickException as exc:
            message = " ".join(exc.format_message().split())
            where = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "trtc"
            _err(f"error: {message} (see {where} --help)")
            sys.exit(exc.exit_code)
        except typer.Abort:
            _err("aborted")
            sys.exit(1)
        # Non-standalone mode returns an Exit's code (typer.Exit(n) raised by a command).
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(cls=_OneLineErrors, name="trtc", add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="Compile Apache MXNet models into TensorRT bundles (.trtb) and run them.")
_STATE: dict = {"debug": os.environ.get("TRTC_DEBUG", "") not in ("", "0"),
                "stdout": None, "written": None}


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _out(message: str) -> None:
    """trtc's own output: the only thing a command writes to stdout (see _handle_errors)."""
    typer.echo(message, file=_STATE["stdout"] or sys.stdout)


def _handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # stdout is trtc's (`--json` is parsed by pipelines): libraries printing to sys.stdout
        # while the command runs are sent to stderr, trtc's own output goes through _out.
        stdout, _STATE["stdout"], sys.stdout = sys.stdout, sys.stdout, sys.stderr
        try:
            return _run_reporting_errors(func, args, kwargs)
        finally:
            sys.stdout, _STATE["stdout"] = stdout, None

    return wrapper


def _run_reporting_errors(func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    try:
        return func(*args, **kwargs)
    except typer.Exit:
        raise
    except TrtcError as exc:
        if _STATE["debug"]:
            traceback.print_exc()
        report = getattr(exc, "report", None)
        if report is not None and not kwargs.get("json_output"):
            _err(report.to_text())
        if kwargs.get("json_output"):
            payload = {"error": str(exc), "exit_code": exc.exit_code}
            if report is not None:
                payload["partition"] = report.to_json()
            _out(json.dumps(payload, indent=1))
        _err(f"error: {exc}")
        raise typer.Exit(exc.exit_code)
    except KeyboardInterrupt:
        _err("interrupted")
        raise typer.Exit(130)
    except Exception as exc:  # a bug in trtc, not a user mistake: say so, briefly
        if _STATE["debug"]:
            traceback.print_exc()
        _err(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
             " (rerun with --debug for the traceback and report it)")
        raise typer.Exit(70)


def _print_version(value: bool) -> None:
    if value:
        from .runtime._version import __version__

        typer.echo(f"trtc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
          version: bool = typer.Option(False, "--version", callback=_print_version,
                                       is_eager=True, help="Print trtc's version and exit.")
          ) -> None:
    if debug:
        _STATE["debug"] = True
        os.environ["TRTC_DEBUG"] = "1"  # native libraries' captured log lines are shown too


@app.command()
@_handle_errors
def example(
    name: Optional[str] = typer.Argument(None, help="Architecture, e.g. resnet18_v2 (--list for all)."),
    output_dir: Path = typer.Option(Path("models"), "-o", "--output-dir", help="Directory to write."),
    batch: int = typer.Option(1, "--batch", help="Batch size recorded in the input shape."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
    list_models: bool = typer.Option(False, "--list", help="List the available architectures."),
) -> None:
    """Write a model zoo architecture with seeded random weights as NAME-symbol.json + NAME-0000.params."""
    from . import zoo

    if list_models or name is None:
        _out("\n".join(zoo.available_models()))
        if name is None and not list_models:
            raise UsageError("give a model name (trtc example --list shows them)")
        return
    if name not in zoo.available_models():
        raise UsageError(f"unknown model '{name}'; choose one of: {', '.join(zoo.available_models())}")
    if batch < 1:
        raise UsageError("--batch must be at least 1")
    _check_seed(seed)
    _require_compiler("example", ("mxnet",))
    _err(f"exporting {name} with random weights (seed {seed})")
    symbol, params = zoo.export_example(name, output_dir, batch=batch, seed=seed)
    _out(f"wrote {symbol}\nwrote {params}")


@app.command("compile")
@_handle_errors
def compile_command(
    params: Path = typer.Argument(..., help="PREFIX-0000.params (PREFIX-symbol.json is found next to it)."),
    symbol: Optional[Path] = typer.Option(None, "--symbol", help="The symbol JSON, if not PREFIX-symbol.json."),
    input_specs: List[str] = typer.Option([], "--input", help="NAME:1x3x224x224[:DTYPE] (int32, int64, float16, ...); overrides the symbol's shape and dtype; a dimension MIN..MAX takes any size in that range (data:1..32x3x224x224). Repeatable."),
    opt_specs: List[str] = typer.Option([], "--opt-shape", help="NAME:8x3x224x224: the shape engines are tuned for, inside the --input range (default: the symbol's shape if inside, else MAX). Repeatable."),
    fp16: bool = typer.Option(False, "--fp16", help="fp16 engines (inputs/outputs stay float32); layers that overflow or lose too much stay fp32, reported."),
    int8: bool = typer.Option(False, "--int8", help="int8 engines (explicit Q/DQ quantization, calibrated on --calibration)."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="With --int8: a directory of .npy/.npz inputs or one .npz (arrays by input name)."),
    calibration_method: str = typer.Option("minmax", "--calibration-method", help="minmax | entropy | percentile."),
    keep_fp32: List[str] = typer.Option([], "--keep-fp32", help="With --fp16: an op type (softmax) or node name to keep in fp32. Repeatable."),
    output_text: Optional[str] = typer.Option(None, "-o", "--output", help="Bundle to write (default PREFIX.trtb)."),
    backend: str = typer.Option("auto", "--backend", help="auto | tensorrt | tensorrt_rtx."),
    target: str = typer.Option("all", "--target", help="all (engines + their ONNX) | gpu (engines only) | cpu (ONNX only, no TensorRT needed)."),
    residual: str = typer.Option("onnxruntime", "--residual", help="Where ops kept out of engines run: onnxruntime (default: ONNX Runtime stages wherever an exact ONNX exists and passes the gate; MXNet only for the rest) | mxnet (all of them in MXNet stages, as before)."),
    strip_weights: bool = typer.Option(False, "--strip-weights", help="Weight-stripped engines refitted at load from the bundle's ONNX: every weight stored once (needs a builder that can: TensorRT-RTX with an NVIDIA GPU present)."),
    exclude_ops: List[str] = typer.Option([], "--exclude-op", help="MXNet op to keep in MXNet. Repeatable."),
    min_segment_size: Optional[int] = typer.Option(None, "--min-segment-size", help="Smaller engine segments stay in MXNet (default 3)."),
    require_full: bool = typer.Option(False, "--require-full", help="Fail if any op would stay in MXNet."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the partition report only; build nothing."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the accuracy gate."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help="Accuracy gate: max relative error (default 1e-4 fp32, 2e-2 fp16)."),
    compute_capability: List[str] = typer.Option([], "--compute-capability", help="Target GPU, e.g. 8.6 (TensorRT-RTX). Repeatable."),
    imports: List[str] = typer.Option([], "--import", help="Module or .py file to import first (e.g. registering custom ops). Repeatable."),
    seed: int = typer.Option(0, "--seed", help="Seed of the accuracy gate's inputs."),
    verify_inputs: Optional[Path] = typer.Option(None, "--verify-inputs", help="FILE.npz of real inputs for the accuracy gate (arrays by input name; a leading axis holds several samples)."),
    strict_verify: bool = typer.Option(False, "--strict-verify", help="Fail (not only warn) when the gate's comparison proves little: an output all zeros, or the same for two different inputs."),
    allow_nonfinite_weights: bool = typer.Option(False, "--allow-nonfinite-weights", help="Compile a model whose weights hold NaN/Inf."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress output."),
    sign_key: Optional[Path] = typer.Option(None, "--sign-key", help="Sign the bundle with this Ed25519 private key (PEM; trtc keygen makes one)."),
) -> None:
    """Compile an MXNet model into one verified .trtb bundle."""
    _require_compiler("compile")  # before any argument check: in a runtime-only install, say so
    from . import _defaults
    from .frontend import parse_input_spec
    from .settings import CompileSettings

    # a Path drops a trailing slash: `-o missingdir/` would write a file named missingdir
    if output_text is not None and output_text.endswith(("/", os.sep)) and not Path(output_text).is_dir():
        raise UsageError(f"-o {output_text}: directory {output_text.rstrip('/' + os.sep)} does not "
                         f"exist; create it first, and name the bundle file (like {output_text}model.trtb)")
    output = Path(output_text) if output_text is not None else None
    shapes, dtypes = {}, {}
    for spec in input_specs:
        name, shape, dtype = parse_input_spec(spec)
        if name in shapes:
            raise UsageError(f"--input {name} given twice")
        shapes[name] = shape
        if dtype:
            dtypes[name] = dtype
    opt_shapes = {}
    for spec in opt_specs:
        name, shape, _ = parse_input_spec(spec, flag="--opt-shape", ranges=False)
        if name in opt_shapes:
            raise UsageError(f"--opt-shape {name} given twice")
        opt_shapes[name] = shape
    if tolerance is not None and not tolerance > 0:
        raise UsageError("--tolerance must be a positive number")
    _check_seed(seed)
    signer = _signer(sign_key)  # a bad key fails now, not after minutes of compiling
    settings = CompileSettings(
        params=params, symbol=symbol, inputs=shapes, input_dtypes=dtypes, opt_shapes=opt_shapes,
        output=output, fp16=fp16,
        backend=backend, verify_inputs=verify_inputs, strict_verify=strict_verify, allow_nonfinite_weights=allow_nonfinite_weights,
        sign_key=sign_key, keep_fp32=tuple(keep_fp32), int8=int8, calibration=calibration,
        calibration_method=calibration_method, target=target, strip_weights=strip_weights,
        residual=residual,
        exclude_ops=tuple(exclude_ops),
        min_segment_size=_defaults.MIN_SEGMENT_SIZE if min_segment_size is None else min_segment_size,
        require_full=require_full, dry_run=dry_run, verify=not no_verify, tolerance=tolerance,
        compute_capabilities=tuple(compute_capability), imports=tuple(imports), seed=seed,
    )
    progress = None if quiet else (lambda line: _err(f"[trtc] {line}"))
    from .compiler import compile as run_compile

    with _writing(output if output is not None else _default_output(params, fp16)):
        result = run_compile(settings, progress=progress)
    if json_output:
        payload = result.to_json()
        if signer is not None and result.output:
            payload["signature"] = {"algorithm": "ed25519", "key_fingerprint": signer[1]}
        _out(json.dumps(payload, indent=1))
        return
    _err(result.report.to_text())
    if result.output:
        _out(str(result.output))


@app.command()
@_handle_errors
def inspect(
    bundle: Path = typer.Argument(..., help="A .trtb bundle."),
    json_output: bool = typer.Option(False, "--json", help="Print the manifest summary as JSON."),
    graph: Optional[Path] = typer.Option(None, "--graph", help="Draw the partitioned graph to FILE.svg or FILE.png."),
) -> None:
    """Show what a bundle holds and what it needs to run."""
    from .inspection import render_graph, summary_json, summary_text
    from .runtime.bundle import read_bundle

    opened = read_bundle(bundle)
    if graph is not None:
        render_graph(opened, graph)
        _err(f"wrote {graph}")
    if json_output:
        _out(json.dumps(summary_json(opened), indent=1))
    else:
        _out(summary_text(opened))


@app.command()
@_handle_errors
def strip(
    bundle: Path = typer.Argument(..., help="A .trtb bundle with each engine's ONNX (--target all or cpu)."),
    output: Path = typer.Option(..., "-o", "--output", help="Bundle to write (may be BUNDLE itself; only a bundle is replaced)."),
    backend: str = typer.Option("auto", "--backend", help="auto | tensorrt | tensorrt_rtx: the flavor that built the engines."),
    compute_capability: List[str] = typer.Option([], "--compute-capability", help="Target GPU for engines a --target cpu bundle lacks (TensorRT-RTX). Repeatable."),
    sign_key: Optional[Path] = typer.Option(None, "--sign-key", help="Sign the result with this Ed25519 private key (PEM)."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress output."),
) -> None:
    """Rebuild a bundle's engines weight-stripped from its ONNX (no MXNet needed; needs a GPU)."""
    from .strip import strip_bundle

    from .settings import check_compute_capabilities

    check_compute_capabilities(compute_capability, backend)
    _signer(sign_key)
    progress = None if quiet else (lambda line: _err(f"[trtc] {line}"))
    with _writing(output):
        result = strip_bundle(bundle, output, backend, tuple(compute_capability), sign_key,
                              progress)
    if json_output:
        _out(json.dumps(result, indent=1))
    else:
        _out(f"wrote {output}: {result['bytes_before'] / 1e6:.1f} MB -> "
             f"{result['bytes'] / 1e6:.1f} MB, {len(result['engines'])} weight-stripped engine(s)")


@app.command()
@_handle_errors
def run(
    bundle: Path = typer.Argument(..., help="A .trtb bundle."),
    inputs: List[str] = typer.Option([], "--input", help="NAME=FILE.npy; random inputs when omitted."),
    device: str = typer.Option("auto", "--device", help="auto | cuda | cuda:N | cpu."),
    save: Optional[Path] = typer.Option(None, "--save", help="Write the outputs to FILE.npz."),
    json_output: bool = typer.Option(False, "--json", help="Print output summaries as JSON."),
) -> None:
    """Run a bundle once and print its outputs' shapes and statistics."""
    import numpy as np

    from .runtime import load

    if save is not None:  # before running: a typo in the path must not cost a model run
        _check_writable_file(save, "--save")
    model = load(bundle, device=device)
    feeds = {}
    for item in inputs:
        name, sep, file = item.partition("=")
        if not sep:
            raise UsageError(f"--input {item!r}: expected NAME=FILE.npy")
        try:
            feeds[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--input {item}: cannot read {file} as .npy ({exc})") from None
    rng = np.random.default_rng(0)
    used = {name: f"from {file}" for name, _, file in (i.partition("=") for i in inputs)}
    for name, spec in model.inputs.items():
        if name not in feeds:  # random inputs at the shape the engines are tuned for
            shape = spec.opt_shape or spec.shape
            if spec.index_range is not None:  # ids into a table: valid ones
                feeds[name] = rng.integers(*spec.index_range, size=shape).astype(spec.dtype)
                how = f"random ids in [{spec.index_range[0]}, {spec.index_range[1]})"
            else:
                feeds[name] = rng.random(shape).astype(spec.dtype)
                how = "random uniform [0, 1)" if spec.dtype.kind == "f" else "zeros"
            used[name] = f"{how}, {'x'.join(map(str, shape))} {spec.dtype} (seed 0)"
    outputs = model(**feeds)
    if not json_output:  # what it made up (the --input ones are the user's own), once it ran
        for name, how in used.items():
            if not how.startswith("from "):
                _err(f"input {name}: {how}; --input NAME=FILE.npy for real data")
    summary = {name: {"shape": list(v.shape), "dtype": str(v.dtype), "min": float(np.min(v)),
                      "max": float(np.max(v)), "mean": float(np.mean(v))} for name, v in outputs.items()}
    if save is not None:
        try:
            np.savez(save, **outputs)
        except OSError as exc:
            raise UsageError(f"--save {save}: cannot write it ({exc.strerror})") from None
    if json_output:
        _out(json.dumps({"device": model.device, "inputs": used, "outputs": summary}, indent=1))
    else:
        _err(f"device: {model.device}" + (f" ({model.device_reason})" if model.device_reason else ""))
        for name, s in summary.items():
            _out(f"{name}: shape {tuple(s['shape'])} {s['dtype']} min {s['min']:.4g} "
                       f"max {s['max']:.4g} mean {s['mean']:.4g}")


@app.command()
@_handle_errors
def bench(
    bundle: Path = typer.Argument(..., help="A .trtb bundle."),
    device: str = typer.Option("auto", "--device", help="auto | cuda | cuda:N | cpu."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Batch size to time, inside the bundle's range (default: its opt batch)."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Untimed calls first (default 1000 on the GPU, 10 on the CPU)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Timed calls (default 10000 on the GPU, 100 on the CPU)."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Time model(**inputs) on random inputs: samples/s and p50/p99 latency (the origin tutorial's
    loop: warmup calls, then timed calls)."""
    from .bench import bench_bundle

    if (warmup is not None and warmup < 0) or (iterations is not None and iterations < 1):
        raise UsageError("--warmup must be >= 0 and --iterations >= 1")
    if batch is not None and batch < 1:
        raise UsageError("--batch must be at least 1")
    result = bench_bundle(bundle, device=device, warmup=warmup, iterations=iterations, batch=batch,
                          progress=lambda line: _err(f"[trtc] {line}"))
    if json_output:
        _out(json.dumps(result, indent=1))
    else:
        _out(f"device {result['device']}  batch {result['batch']}  "
                   f"{result['samples_per_s']:.1f} samples/s  p50 {result['p50_ms']:.3f} ms  "
                   f"p99 {result['p99_ms']:.3f} ms  first call {result['first_call_ms']:.1f} ms  "
                   f"({result['iterations']} iterations after {result['warmup']} warmup)")


# ----------------------------------------------------------------------------------------------
# keys and signatures
# ----------------------------------------------------------------------------------------------
@app.command()
@_handle_errors
def keygen(
    private_key: Path = typer.Argument(..., help="Private key file to write (PEM, mode 600). Keep it secret."),
    public_key: Path = typer.Argument(..., help="Public key file to write (PEM); give it to whoever loads the bundles."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Make an Ed25519 key pair for signing bundles (never overwrites a file)."""
    from .runtime.signing import generate_keypair

    fingerprint = generate_keypair(private_key, public_key)
    if json_output:
        _out(json.dumps({"private_key": str(private_key), "public_key": str(public_key),
                         "algorithm": "ed25519", "key_fingerprint": fingerprint}, indent=1))
    else:
        _out(f"wrote {private_key} (secret) and {public_key}: ed25519 key {fingerprint}")


@app.command()
@_handle_errors
def sign(
    bundle: Path = typer.Argument(..., help="A .trtb bundle, signed in place."),
    key: Path = typer.Option(..., "--key", help="Ed25519 private key (PEM)."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Sign a bundle in place (verified first; rewritten atomically; an old signature is replaced)."""
    from .runtime.signing import sign_bundle

    _key_file(key, "--key")
    with _writing(bundle):
        fingerprint = sign_bundle(bundle, key)
    if json_output:
        _out(json.dumps({"bundle": str(bundle), "signed": True, "algorithm": "ed25519",
                         "key_fingerprint": fingerprint}, indent=1))
    else:
        _out(f"{bundle}: signed with ed25519 key {fingerprint}")


@app.command("verify")
@_handle_errors
def verify_command(
    bundle: Path = typer.Argument(..., help="A .trtb bundle."),
    keys: List[Path] = typer.Option(..., "--key", help="Trusted Ed25519 public key (PEM). Repeatable: any one of them may have signed."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check that a bundle is intact and signed by a trusted key (exit 0), else exit 3."""
    from .runtime.signing import verify_bundle

    for key in keys:
        _key_file(key, "--key")
    for key in keys:  # works (its public half is used), but a private key has no place here
        if key.is_file() and b"PRIVATE KEY" in key.read_bytes()[:4096]:
            _err(f"warning: --key {key} is a PRIVATE key; verifying needs only the public key "
                 "(trtc keygen wrote it beside, as PUBLIC.pem): keep private keys off the "
                 "machines that verify")
    fingerprint = verify_bundle(bundle, keys)
    if json_output:
        _out(json.dumps({"bundle": str(bundle), "verified": True, "algorithm": "ed25519",
                         "key_fingerprint": fingerprint}, indent=1))
    else:
        _out(f"{bundle}: signature OK, ed25519 key {fingerprint}")


# ----------------------------------------------------------------------------------------------
# checks shared by the commands
# ----------------------------------------------------------------------------------------------
def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**32:  # numpy's and MXNet's seeds alike
        raise UsageError(f"--seed {seed}: expected an integer in [0, 2^32)")


def _check_writable_file(path: Path, flag: str) -> None:
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a directory; pass a file name like {path}/out.npz")
    if not path.parent.is_dir() and str(path.parent) not in ("", "."):
        raise UsageError(f"{flag} {path}: directory {path.parent} does not exist; create it first")


def _key_file(path: Path, flag: str) -> None:
    """A key file must be a regular file: reading a FIFO blocks until something writes to it
    (a hung command), a directory is no key. Asked with stat(), nothing is opened."""
    from .frontend import path_problem

    problem = path_problem(path)
    if problem == "does not exist":
        raise UsageError(f"{flag} {path}: no such file")
    if problem:
        raise UsageError(f"{flag} {path} {problem}; pass the PEM key file trtc keygen wrote")


def _signer(sign_key: Optional[Path]) -> Optional[Tuple[Any, str]]:
    """(private key, its fingerprint) for --sign-key, loaded before any work is done."""
    if sign_key is None:
        return None
    _key_file(sign_key, "--sign-key")
    from .runtime.signing import key_fingerprint, load_private_key

    key = load_private_key(sign_key)
    return key, key_fingerprint(key.public_key())


def _default_output(params: Path, fp16: bool) -> Path:
    """The compiler's default bundle path (PREFIX.trtb beside PREFIX-0000.params)."""
    match = re.match(r"^(.+)-\d{4}\.params$", params.name)
    stem = match.group(1) if match else params.stem
    return params.with_name(f"{stem}{'-fp16' if fp16 else ''}.trtb")


# ----------------------------------------------------------------------------------------------
# signals
# ----------------------------------------------------------------------------------------------
def _identity(path: Path) -> Optional[Tuple[int, int, int]]:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns


@contextlib.contextmanager
def _writing(target: Path) -> Iterator[None]:
    """Mark ``target`` as what the command writes (a temp file renamed over it), for
    :func:`_terminated`: a SIGTERM or SIGINT once the rename happened no longer undoes the
    command. Leaving the block with the target replaced seals that (:func:`_seal`)."""
    before = _identity(target)
    _STATE["written"] = lambda: _identity(target) not in (before, None)
    try:
        yield
    finally:
        if _STATE["written"]():
            _seal()
        _STATE["written"] = None


def _seal() -> None:
    """The output is in place: the command has succeeded whatever comes next. SIGTERM and
    SIGINT are ignored from here to the process's end, by the kernel (SIG_IGN), not by a Python
    handler: Python resets its handlers to SIG_DFL during interpreter shutdown, and a signal
    there killed the process (exit -15 / -2) after the bundle was written. Only where main()
    installed trtc's handlers (not under CliRunner or the Python API: not our process)."""
    if _STATE.get("handlers"):
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM (kill, timeout, CI cancel) and SIGINT (Ctrl-C).

    Before the command's output file was replaced: unwind like an exception (SIGTERM: exit 143;
    SIGINT: KeyboardInterrupt, exit 130), so `finally` blocks run, the temp file is removed
    and the output path is never touched. After it was replaced (compile, sign, strip: the
    verified bundle is already in place, os.replace is the commit): the signal is ignored, the
    command finishes its last steps (reporting, printing the result) and exits 0, so the exit
    status never says "failed" about a bundle that was written.
    """
    written = _STATE.get("written")
    if written is not None and written():
        _err(f"[trtc] signal {signum} after the output was written: finishing")
        _seal()
        return
    _STATE["signal"] = signum
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    _err("terminated")
    raise SystemExit(128 + signum)


def _signal_lost(unraisable: Any) -> None:
    """sys.unraisablehook: Python runs a signal's handler at the next bytecode, which may be
    where an exception cannot propagate (a __del__, a weakref or at-fork callback); there
    :func:`_terminated`'s KeyboardInterrupt / SystemExit was printed as "Exception ignored"
    and lost, and the command went on. Such a one is sent again instead, silently, 50 ms later
    from another thread (sent from here, its handler would run here again): its handler then
    runs where the main thread is by then, which can unwind."""
    tb = getattr(unraisable.exc_value, "__traceback__", None)
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None and tb.tb_frame.f_code is _terminated.__code__ and _STATE.get("signal"):
        import _thread
        import time

        def resend(signum: int = _STATE["signal"]) -> None:
            time.sleep(0.05)
            os.kill(os.getpid(), signum)

        try:
            _thread.start_new_thread(resend, ())
            return
        except RuntimeError:  # interpreter shutdown: no new threads; say it as Python would
            pass
    sys.__unraisablehook__(unraisable)


def _install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGINT, _terminated)
    sys.unraisablehook = _signal_lost
    _STATE["handlers"] = True


def _stdout_for_trtc_only() -> None:
    """Point file descriptor 1 at stderr and keep the real stdout for trtc alone (sys.stdout), so
    native code writing to fd 1 (C++ std::cout in MXNet or ONNX Runtime) cannot break --json."""
    try:
        sys.stdout.flush()
        real = os.dup(sys.stdout.fileno())
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real stdout (closed, a pipe object): leave
        return
    sys.stdout = os.fdopen(real, "w", buffering=1 if sys.stdout.line_buffering else -1,
                           encoding=sys.stdout.encoding, errors=sys.stdout.errors)


def main() -> None:
    """Console entry point."""
    _install_signal_handlers()
    _stdout_for_trtc_only()
    app()



# ----------------------------------------------------------------------------------------------
# serving on NVIDIA Triton Inference Server (trtc/triton.py)
# ----------------------------------------------------------------------------------------------
@app.command("triton-repo")
@_handle_errors
def triton_repo(
    bundles: List[Path] = typer.Argument(..., help=".trtb bundles; one Triton model each."),
    output: Path = typer.Option(..., "-o", "--output", help="Model repository directory (made if missing); models of other names in it are left alone."),
    names: List[str] = typer.Option([], "--name", help="Model name, one per bundle in order (default: the bundle's file stem). Repeatable."),
    instances: int = typer.Option(1, "--instances", help="Model instances (instance_group count; per GPU on GPUs)."),
    max_batch_size: Optional[int] = typer.Option(None, "--max-batch-size", help="Triton max_batch_size, at most the bundle's batch range (default: its maximum; 0: no batching). Needs a bundle compiled with a dynamic batch (--input data:1..32x...)."),
    max_queue_delay_us: Optional[int] = typer.Option(None, "--max-queue-delay-us", help="Dynamic batcher: how long a request may wait for others (default: Triton's, 0)."),
    device: str = typer.Option("auto", "--device", help="auto (Triton places instances; GPU path when it can serve the bundle) | cuda (KIND_GPU) | cpu (KIND_CPU)."),
    native: bool = typer.Option(False, "--native", help="Also write NAME_plan, a tensorrt_plan model of the bundle's one full-TensorRT engine."),
    python_env: Optional[Path] = typer.Option(None, "--python-env", help="EXECUTION_ENV_PATH for the Python backend: a packed or unpacked environment with trtc (default: the server's python3)."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="GPU indices, e.g. 0,1,2,3: --instances instances on each (KIND_GPU with gpus); each loads on the GPU Triton assigns it."),
    json_output: bool = typer.Option(False, "--json", help="Print the models written as JSON."),
) -> None:
    """Write a Triton Inference Server model repository serving bundles (Python backend + trtc.runtime)."""
    from .triton import write_repository

    gpu_list: List[int] = []
    if gpus is not None:
        parts = [p.strip() for p in gpus.split(",")]
        if not parts or not all(p.isascii() and p.isdigit() and len(p) <= 4 for p in parts):
            raise UsageError(f"--gpus {gpus!r}: GPU indices separated by commas, like 0,1,2,3")
        gpu_list = [int(p) for p in parts]
    models = write_repository(bundles, output, names=names, instances=instances, device=device,
                              max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
                              native=native, python_env=python_env, gpus=gpu_list)
    if json_output:
        _out(json.dumps([{"name": m.name, "directory": str(m.directory), "bundle": str(m.bundle),
                          "kind": m.kind, "max_batch_size": m.max_batch_size, "needs": m.needs}
                         for m in models], indent=1))
        return
    for model in models:
        _out(f"wrote {model.directory}  ({model.describe().split(': ', 1)[1]})")
    _err(f"serve it: tritonserver --model-repository={output}  (a Triton container or a "
         "tritonserver on PATH; with pip install 'trtc[serve]' instead: trtc serve "
         + " ".join(str(b) for b in bundles) + ", which sets up the wheel's server)")


@app.command("serve")
@_handle_errors
def serve_command(
    bundles: List[Path] = typer.Argument(..., help=".trtb bundles to serve."),
    http_port: int = typer.Option(8000, "--http-port", help="HTTP/REST (KServe v2) port."),
    grpc_port: int = typer.Option(8001, "--grpc-port", help="gRPC port."),
    metrics_port: int = typer.Option(8002, "--metrics-port", help="Prometheus metrics port."),
    address: str = typer.Option("127.0.0.1", "--address", help="Address to listen on (0.0.0.0: every interface)."),
    names: List[str] = typer.Option([], "--name", help="Model name, one per bundle in order. Repeatable."),
    instances: int = typer.Option(1, "--instances", help="Model instances."),
    max_batch_size: Optional[int] = typer.Option(None, "--max-batch-size", help="As for triton-repo."),
    max_queue_delay_us: Optional[int] = typer.Option(None, "--max-queue-delay-us", help="As for triton-repo."),
    device: str = typer.Option("auto", "--device", help="auto | cuda | cpu, as for triton-repo."),
    tritonserver: Optional[Path] = typer.Option(None, "--tritonserver", help="The tritonserver binary (default: one on PATH, else the nvidia-pytriton wheel's: pip install 'trtc[serve]')."),
    log_file: Optional[Path] = typer.Option(None, "--log-file", help="Keep the server's log in this file."),
    startup_timeout: float = typer.Option(120.0, "--startup-timeout", help="Seconds to wait for the server to be ready."),
) -> None:
    """Serve bundles on a local Triton Inference Server until Ctrl-C / SIGTERM."""
    from .triton import serve

    if log_file is not None:
        _check_writable_file(log_file, "--log-file")
    serve(bundles, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
          address=address, tritonserver=tritonserver, log_file=log_file,
          startup_timeout=startup_timeout, say=_out, note=_err, names=names, instances=instances,
          device=device, max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us)


if __name__ == "__main__":
    main()
