"""The `trtc` command line (typer): example, compile, inspect, run, bench.

Every user mistake ends as one line on stderr and an exit code (README: errors and exit codes);
``--debug`` (or TRTC_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, List, Optional

os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

import typer  # noqa: E402

from .runtime.errors import TrtcError, UsageError  # noqa: E402

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compile Apache MXNet models into TensorRT bundles (.trtb) and run them.")
_STATE = {"debug": os.environ.get("TRTC_DEBUG", "") not in ("", "0")}


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
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
                typer.echo(json.dumps(payload, indent=1))
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

    return wrapper


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    if debug:
        _STATE["debug"] = True


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
        typer.echo("\n".join(zoo.available_models()))
        if name is None and not list_models:
            raise UsageError("give a model name (trtc example --list shows them)")
        return
    if name not in zoo.available_models():
        raise UsageError(f"unknown model '{name}'; choose one of: {', '.join(zoo.available_models())}")
    if batch < 1:
        raise UsageError("--batch must be at least 1")
    _err(f"exporting {name} with random weights (seed {seed})")
    symbol, params = zoo.export_example(name, output_dir, batch=batch, seed=seed)
    typer.echo(f"wrote {symbol}\nwrote {params}")


@app.command("compile")
@_handle_errors
def compile_command(
    params: Path = typer.Argument(..., help="PREFIX-0000.params (PREFIX-symbol.json is found next to it)."),
    symbol: Optional[Path] = typer.Option(None, "--symbol", help="The symbol JSON, if not PREFIX-symbol.json."),
    input_specs: List[str] = typer.Option([], "--input", help="NAME:1x3x224x224; overrides the symbol's shapes. Repeatable."),
    fp16: bool = typer.Option(False, "--fp16", help="fp16 engines (inputs/outputs stay float32)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Bundle to write (default PREFIX.trtb)."),
    backend: str = typer.Option("auto", "--backend", help="auto | tensorrt | tensorrt_rtx."),
    exclude_ops: List[str] = typer.Option([], "--exclude-op", help="MXNet op to keep in MXNet. Repeatable."),
    min_segment_size: Optional[int] = typer.Option(None, "--min-segment-size", help="Smaller engine segments stay in MXNet (default 3)."),
    require_full: bool = typer.Option(False, "--require-full", help="Fail if any op would stay in MXNet."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the partition report only; build nothing."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the accuracy gate."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help="Accuracy gate: max relative error (default 1e-4 fp32, 2e-2 fp16)."),
    compute_capability: List[str] = typer.Option([], "--compute-capability", help="Target GPU, e.g. 8.6 (TensorRT-RTX). Repeatable."),
    imports: List[str] = typer.Option([], "--import", help="Module or .py file to import first (e.g. registering custom ops). Repeatable."),
    seed: int = typer.Option(0, "--seed", help="Seed of the accuracy gate's inputs."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress output."),
) -> None:
    """Compile an MXNet model into one verified .trtb bundle."""
    from . import _defaults
    from .frontend import parse_input_spec
    from .settings import CompileSettings

    shapes = {}
    for spec in input_specs:
        name, shape = parse_input_spec(spec)
        if name in shapes:
            raise UsageError(f"--input {name} given twice")
        shapes[name] = shape
    for cc in compute_capability:
        if not cc.replace(".", "", 1).isdigit() or "." not in cc:
            raise UsageError(f"--compute-capability {cc!r}: expected MAJOR.MINOR like 8.6")
    if tolerance is not None and not tolerance > 0:
        raise UsageError("--tolerance must be a positive number")
    settings = CompileSettings(
        params=params, symbol=symbol, inputs=shapes, output=output, fp16=fp16, backend=backend,
        exclude_ops=tuple(exclude_ops),
        min_segment_size=_defaults.MIN_SEGMENT_SIZE if min_segment_size is None else min_segment_size,
        require_full=require_full, dry_run=dry_run, verify=not no_verify, tolerance=tolerance,
        compute_capabilities=tuple(compute_capability), imports=tuple(imports), seed=seed,
    )
    progress = None if quiet else (lambda line: _err(f"[trtc] {line}"))
    from .compiler import compile as run_compile

    result = run_compile(settings, progress=progress)
    if json_output:
        typer.echo(json.dumps(result.to_json(), indent=1))
        return
    _err(result.report.to_text())
    if result.output:
        typer.echo(str(result.output))


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
        typer.echo(json.dumps(summary_json(opened), indent=1))
    else:
        typer.echo(summary_text(opened))


@app.command()
@_handle_errors
def run(
    bundle: Path = typer.Argument(..., help="A .trtb bundle."),
    inputs: List[str] = typer.Option([], "--input", help="NAME=FILE.npy; random inputs when omitted."),
    device: str = typer.Option("auto", "--device", help="auto | cuda | cpu."),
    save: Optional[Path] = typer.Option(None, "--save", help="Write the outputs to FILE.npz."),
    json_output: bool = typer.Option(False, "--json", help="Print output summaries as JSON."),
) -> None:
    """Run a bundle once and print its outputs' shapes and statistics."""
    import numpy as np

    from .runtime import load

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
    for name, spec in model.inputs.items():
        if name not in feeds:
            feeds[name] = rng.random(spec.shape).astype(spec.dtype)
    outputs = model(**feeds)
    summary = {name: {"shape": list(v.shape), "dtype": str(v.dtype), "min": float(np.min(v)),
                      "max": float(np.max(v)), "mean": float(np.mean(v))} for name, v in outputs.items()}
    if save is not None:
        np.savez(save, **outputs)
    if json_output:
        typer.echo(json.dumps({"device": model.device, "outputs": summary}, indent=1))
    else:
        _err(f"device: {model.device}" + (f" ({model.device_reason})" if model.device_reason else ""))
        for name, s in summary.items():
            typer.echo(f"{name}: shape {tuple(s['shape'])} {s['dtype']} min {s['min']:.4g} "
                       f"max {s['max']:.4g} mean {s['mean']:.4g}")


@app.command()
@_handle_errors
def bench(
    bundle: Path = typer.Argument(..., help="A .trtb bundle."),
    device: str = typer.Option("auto", "--device", help="auto | cuda | cpu."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Batch size to time; must be the bundle's own (bundles have static shapes)."),
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
    result = bench_bundle(bundle, device=device, warmup=warmup, iterations=iterations, batch=batch)
    if json_output:
        typer.echo(json.dumps(result, indent=1))
    else:
        typer.echo(f"device {result['device']}  batch {result['batch']}  "
                   f"{result['samples_per_s']:.1f} samples/s  p50 {result['p50_ms']:.3f} ms  "
                   f"p99 {result['p99_ms']:.3f} ms  ({result['iterations']} iterations after "
                   f"{result['warmup']} warmup)")


def _terminated(signum: int, frame: Any) -> None:
    # SIGTERM (kill, timeout, CI cancel) unwinds like an exception, so `finally` blocks run and an
    # interrupted compile leaves no temp file behind; the output path is never touched mid-write.
    _err("terminated")
    raise SystemExit(128 + signum)


def main() -> None:
    """Console entry point."""
    signal.signal(signal.SIGTERM, _terminated)
    app()


if __name__ == "__main__":
    main()
