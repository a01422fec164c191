"""Serve one dynamic-batch bundle through a real Triton Inference Server and time it against direct
in-process ``trtc.runtime`` calls, in one run: throughput and p50/p99 latency over HTTP and gRPC at
several client concurrencies, with Triton's dynamic batching on and off (issue 13, part 5).

    python benchmarks/serve.py [BUNDLE] [--model resnet18_v1] [--max-batch 8]
                               [--concurrency 1,8,32] [--rounds 3] [--window 2.5] [--instances 1]
                               [--max-queue-delay-us 2000] [--device auto|cpu|cuda]
                               [--quick] [--json] [--out DIR]

Without BUNDLE it exports ``--model`` (a ``trtc.zoo`` architecture, seeded random weights) and
compiles one fp32 bundle whose first axis is a dynamic batch 1..``--max-batch``
(``inputs={"data": ((1, N), 3, 224, 224)}``). A given BUNDLE must have such a batch axis.

One ``tritonserver`` (``trtc.triton.TritonServer``: the nvidia-pytriton wheel's, or one on PATH)
serves a repository written by ``trtc.triton.write_repository`` with the bundle twice: ``NAME``
with ``dynamic_batching`` (max batch = the bundle's, ``--max-queue-delay-us``) and
``NAME_nobatch`` (``max_batch_size: 0``: every request runs alone, batch-1 serving). Both have
``--instances`` Python-backend instances that run the bundle with ``trtc.runtime`` on
``--device``.

Rows (every request/call carries one sample of shape 1xCxHxW unless said otherwise):

- direct, b1: ``model(data=x)`` in this process, one call after another (concurrency 1).
- direct, b8: ``model(data=x8)``, the bundle's max batch per call, one after another: the
  reference for goal 1 (what a caller who batches by hand gets). Its latency is per call.
- Triton {HTTP, gRPC} x {dynamic, off} x ``--concurrency``: closed-loop clients, one thread and
  one ``tritonclient`` client each, sending the next request as soon as the last one returned
  (inputs set once per client; outputs returned as binary tensors and read as numpy).

Timing: per row, the clients run until every one has finished at least one request (and at least
``WARMUP_S``), then a ``--window`` of seconds is measured: samples/s = the samples of every request
weighted by the part of its duration inside the window, / window (a few slow calls per window are
not rounded to whole calls); p50/p99 = latencies of the requests that finished inside the window;
the clients then finish their requests in flight before the next row starts. The rows run in a
different order each round (rotated, every other round reversed) so drift on a busy machine hits all
of them alike; reported is the median over rounds of samples/s, latency percentiles over all rounds'
requests pooled, and ratios as medians of the per-round ratios. "avg batch" is what the model
executed (Triton's ``inference_count / execution_count`` over the row, its warm-up included).
The clients run in this process on the same machine as the server: on a small CPU machine they
take cores from it, as a real client on that host would.

Goals (issue 13): (1) Triton with dynamic batching at concurrency 8 reaches >= 0.8x the throughput
of direct batched calls; (2) dynamic batching beats batch-1 serving (checked at every concurrency
> 1, where there is something to batch).

Where no tritonserver can start (or tritonclient is missing) the direct rows are still measured,
the Triton rows are replaced by "Triton not measured: REASON" and the exit status is 0.

``--quick``: mobilenetv2_0.25 with batch 1..4, concurrency 1 and 4, one round of 0.5 s windows (a
smoke test, not a measurement).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

GOAL_VS_DIRECT = 0.8  # Triton dynamic batching at GOAL_CONCURRENCY / direct batched calls
GOAL_CONCURRENCY = 8
DEFAULT_MODEL = "resnet18_v1"
DEFAULT_MAX_BATCH = 8
DEFAULT_CONCURRENCY = (1, 8, 32)
DEFAULT_QUEUE_DELAY_US = 2000
QUICK_MODEL = "mobilenetv2_0.25"
WARMUP_S = 0.3  # per row, at least; and until every client has finished one request
WARMUP_CAP_S = 60.0
PROTOCOLS = ("HTTP", "gRPC")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# closed-loop load


@dataclass
class Window:
    """What one row measured in one round."""

    seconds: float
    samples: float  # calls inside the window, partly inside ones by the part inside, x batch
    latencies_ms: List[float]
    avg_batch: Optional[float] = None

    @property
    def rate(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


def closed_loop(make_worker: Callable[[], Tuple[Callable[[], Any], Callable[[], None]]],
                concurrency: int, samples_per_call: int, window_s: float,
                warmup_s: float = WARMUP_S) -> Window:
    """``concurrency`` threads, each with its own worker from ``make_worker()`` (a call and a
    close), calling back to back. After every thread has finished one call (and ``warmup_s``), a
    window of ``window_s`` is measured; then the threads finish their call in flight and stop.
    Samples: each call's samples times the part of its duration inside the window; latencies:
    the calls that finished inside it.
    A call that raises stops the run with that error."""
    stop = threading.Event()
    lock = threading.Lock()
    done: List[Tuple[float, float]] = []
    first_done = [False] * concurrency
    errors: List[BaseException] = []
    ready = threading.Barrier(concurrency + 1)

    def loop(slot: int) -> None:
        try:
            call, close = make_worker()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            ready.abort()
            return
        try:
            ready.wait()
            while not stop.is_set():
                start = time.perf_counter()
                call()
                end = time.perf_counter()
                with lock:
                    done.append((start, end))
                first_done[slot] = True
        except threading.BrokenBarrierError:
            pass
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()
        finally:
            close()

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    began = time.perf_counter()
    while not errors and (not all(first_done) or time.perf_counter() - began < warmup_s):
        if time.perf_counter() - began > WARMUP_CAP_S:
            errors.append(TimeoutError(f"not every client finished a request in {WARMUP_CAP_S:g} s"))
            break
        time.sleep(0.01)
    window_start = time.perf_counter()
    if not errors:
        stop.wait(window_s)
    window_end = time.perf_counter()
    stop.set()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    # every call is credited with the part of its duration inside the window: exact for one
    # client calling back to back, and no rounding to whole calls (a window holds few slow ones)
    credit = sum((min(e, window_end) - max(s, window_start)) / (e - s)
                 for s, e in done if e > window_start and s < window_end and e > s)
    inside = [(s, e) for s, e in done if window_start <= e <= window_end]
    return Window(window_end - window_start, credit * samples_per_call,
                  [(e - s) * 1e3 for s, e in inside])


# ---------------------------------------------------------------------------------------------
# the bundle and its inputs


def make_bundle(model: str, max_batch: int, out_dir: Path) -> Path:
    from trtc import CompileSettings, compile
    from trtc.zoo import default_shape, export_example

    _say(f"exporting {model}")
    _, params = export_example(model, out_dir)
    shape = default_shape(model, 1)
    bundle = out_dir / f"{model}-b1-{max_batch}.trtb"
    _say(f"compiling {bundle.name} (data {(1, max_batch)}x{'x'.join(map(str, shape[1:]))})")
    compile(CompileSettings(params=params, output=bundle,
                            inputs={"data": ((1, max_batch),) + tuple(shape[1:])}))
    return bundle


def sample_feeds(model: Any, batch: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """Seeded inputs of batch ``batch``: the bundle's opt (else min) shape on the other axes; float
    inputs uniform [0, 1), integer inputs in [0, 2)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, spec in model.inputs.items():
        shape = spec.opt_shape or spec.min_shape or spec.shape
        shape = (batch,) + tuple(int(d) for d in shape[1:])
        dtype = np.dtype(spec.dtype)
        feeds[name] = (rng.random(shape).astype(dtype) if dtype.kind == "f"
                       else rng.integers(0, 2, size=shape).astype(dtype))
    return feeds


# ---------------------------------------------------------------------------------------------
# Triton


def _free_ports(count: int) -> List[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def triton_unavailable_reason() -> Optional[str]:
    """Why no Triton row can run here (None: try the server)."""
    for module in ("tritonclient.http", "tritonclient.grpc"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"{module} cannot be imported ({exc}); pip install 'trtc[serve]'"
    from trtc import triton
    from trtc.runtime.errors import IncompatibleError

    try:
        triton.find_tritonserver()
    except IncompatibleError as exc:
        return f"no Triton server here: {exc}"
    return None



def _infer_worker(protocol: str, url: str, model: str, feeds: Dict[str, np.ndarray],
                  outputs: Sequence[str]) -> Tuple[Callable[[], Any], Callable[[], None]]:
    from tritonclient.utils import np_to_triton_dtype

    if protocol == "HTTP":
        import tritonclient.http as client_module
    else:
        import tritonclient.grpc as client_module
    client = client_module.InferenceServerClient(url)
    inputs = []
    for name, value in feeds.items():
        item = client_module.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        item.set_data_from_numpy(value)
        inputs.append(item)
    if protocol == "HTTP":
        wanted = [client_module.InferRequestedOutput(n, binary_data=True) for n in outputs]
    else:
        wanted = [client_module.InferRequestedOutput(n) for n in outputs]

    def call() -> Any:
        result = client.infer(model, inputs, outputs=wanted)
        return [result.as_numpy(n) for n in outputs]

    return call, client.close


def _model_stats(http_url: str, model: str) -> Tuple[int, int]:
    with urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/stats", timeout=30) as reply:
        stats = json.loads(reply.read())["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


# ---------------------------------------------------------------------------------------------
# rows


@dataclass
class Row:
    """One line of the table: how it is run, and what each round measured."""

    path: str  # "direct" or "Triton"
    protocol: str  # "in-process", "HTTP", "gRPC"
    batching: str  # direct: "b1", "bN" (samples per call); Triton: "dynamic", "off"
    concurrency: int
    run: Callable[[float], Window] = field(repr=False)
    windows: List[Window] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.path} {self.protocol} {self.batching} c{self.concurrency}"


def direct_rows(model: Any, max_batch: int) -> List[Row]:
    one, full = sample_feeds(model, 1), sample_feeds(model, max_batch, seed=1)

    def worker(feeds: Dict[str, np.ndarray]) -> Callable[[], Tuple[Callable[[], Any],
                                                                    Callable[[], None]]]:
        return lambda: ((lambda: model(**feeds)), (lambda: None))

    return [
        Row("direct", "in-process", "b1", 1,
            lambda w: closed_loop(worker(one), 1, 1, w)),
        Row("direct", "in-process", f"b{max_batch}", 1,
            lambda w: closed_loop(worker(full), 1, max_batch, w)),
    ]


def triton_rows(server: Any, names: Dict[str, str], feeds: Dict[str, np.ndarray],
                outputs: Sequence[str], concurrencies: Sequence[int]) -> List[Row]:
    rows = []
    for protocol in PROTOCOLS:
        url = server.http_url if protocol == "HTTP" else server.grpc_url
        for batching in ("dynamic", "off"):
            name = names[batching]
            for concurrency in concurrencies:
                def run(window_s: float, protocol: str = protocol, url: str = url,
                        name: str = name, concurrency: int = concurrency) -> Window:
                    before = _model_stats(server.http_url, name)
                    measured = closed_loop(
                        lambda: _infer_worker(protocol, url, name, feeds, outputs), concurrency,
                        1, window_s)
                    after = _model_stats(server.http_url, name)
                    inferences, executions = after[0] - before[0], after[1] - before[1]
                    measured.avg_batch = inferences / executions if executions else None
                    return measured

                rows.append(Row("Triton", protocol, batching, concurrency, run))
    return rows


def round_order(count: int, index: int) -> List[int]:
    """Row order of round ``index``: rotated by a different amount each round, every other round
    reversed."""
    order = list(range(count))
    shift = (index * max(1, count // 3)) % count if count else 0
    order = order[shift:] + order[:shift]
    return order[::-1] if index % 2 else order


def measure(rows: List[Row], rounds: int, window_s: float) -> None:
    for r in range(rounds):
        for i in round_order(len(rows), r):
            row = rows[i]
            row.windows.append(row.run(window_s))
            last = row.windows[-1]
            _say(f"round {r + 1}/{rounds}: {row.key}: {last.rate:.1f} samples/s, "
                 f"{len(last.latencies_ms)} requests")


def _percentile(values: List[float], q: float) -> Optional[float]:
    return float(np.percentile(values, q)) if values else None


def summarize(rows: List[Row], max_batch: int) -> List[Dict[str, Any]]:
    direct_full = next(r for r in rows if r.path == "direct" and r.batching != "b1")
    off = {(r.protocol, r.concurrency): r for r in rows if r.batching == "off"}
    out = []
    for row in rows:
        latencies = [v for w in row.windows for v in w.latencies_ms]
        batches = [w.avg_batch for w in row.windows if w.avg_batch is not None]
        vs_off = None
        if row.batching == "dynamic" and (row.protocol, row.concurrency) in off:
            other = off[(row.protocol, row.concurrency)]
            vs_off = statistics.median(a.rate / b.rate for a, b in zip(row.windows, other.windows)
                                       if b.rate > 0)
        elif row.batching == "off":
            vs_off = 1.0
        out.append({
            "path": row.path, "protocol": row.protocol, "batching": row.batching,
            "concurrency": row.concurrency,
            "samples_per_call": max_batch if row is direct_full else 1,
            "samples_per_s": statistics.median(w.rate for w in row.windows),
            "samples_per_s_rounds": [w.rate for w in row.windows],
            "p50_ms": _percentile(latencies, 50), "p99_ms": _percentile(latencies, 99),
            "requests": len(latencies),
            "avg_batch": (statistics.mean(batches) if batches
                          else float(max_batch if row is direct_full else 1)),
            "vs_direct_batched": statistics.median(
                a.rate / b.rate for a, b in zip(row.windows, direct_full.windows) if b.rate > 0),
            "dynamic_vs_off": vs_off,
        })
    return out


def goals(rows: List[Dict[str, Any]], concurrencies: Sequence[int]) -> Dict[str, Any]:
    """Goal 1 per protocol at GOAL_CONCURRENCY (None where that concurrency was not run); goal 2
    per protocol and concurrency > 1."""
    result: Dict[str, Any] = {"vs_direct_batched": {}, "dynamic_beats_batch1": {}}
    for row in rows:
        if row["path"] != "Triton" or row["batching"] != "dynamic":
            continue
        if row["concurrency"] == GOAL_CONCURRENCY:
            ratio = row["vs_direct_batched"]
            result["vs_direct_batched"][row["protocol"]] = {
                "ratio": ratio, "ok": ratio >= GOAL_VS_DIRECT}
        if row["concurrency"] > 1 and row["dynamic_vs_off"] is not None:
            ratio = row["dynamic_vs_off"]
            result["dynamic_beats_batch1"][f"{row['protocol']} c{row['concurrency']}"] = {
                "ratio": ratio, "ok": ratio > 1.0}
    return result


# ---------------------------------------------------------------------------------------------
# report


def _num(value: Optional[float], digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


HEADER = (f"{'path':<8}{'protocol':<12}{'batching':<10}{'conc':>5}{'samples/s':>11}{'p50 ms':>9}"
          f"{'p99 ms':>9}{'avg batch':>10}{'requests':>9}{'vs direct bN':>13}{'dyn/off':>9}")


def table(result: Dict[str, Any]) -> str:
    """The printed report of a ``--json`` result."""
    s = result["settings"]
    lines = [
        f"{s['model']} (batch 1..{s['max_batch']}, input {s['input']}), trtc.runtime on "
        f"{s['direct_device']}, {s['cpus']} CPU cores; Triton: {s['instances']} instance(s) per "
        f"model, max_queue_delay {s['max_queue_delay_us']} us",
        f"median of {s['rounds']} round(s) of {s['window_s']:g} s per row, rows interleaved; "
        f"closed-loop clients in this process, 1 sample per request (direct b{s['max_batch']}: "
        f"{s['max_batch']} per call); p50/p99 pooled over rounds; vs direct b{s['max_batch']}: "
        f"samples/s / direct b{s['max_batch']}'s",
        HEADER.replace("bN", f"b{s['max_batch']}"),
    ]
    for row in result["rows"]:
        lines.append(f"{row['path']:<8}{row['protocol']:<12}{row['batching']:<10}"
                     f"{row['concurrency']:>5}{row['samples_per_s']:>11.1f}"
                     f"{_num(row['p50_ms']):>9}{_num(row['p99_ms']):>9}"
                     f"{_num(row['avg_batch'], 2):>10}{row['requests']:>9}"
                     f"{row['vs_direct_batched']:>13.2f}{_num(row['dynamic_vs_off'], 2):>9}")
    if result.get("triton_not_measured"):
        lines.append(f"Triton not measured: {result['triton_not_measured']}")
        return "\n".join(lines)
    g = result["goals"]
    one = ", ".join(f"{p} {v['ratio']:.2f} {'ok' if v['ok'] else 'MISSED'}"
                    for p, v in g["vs_direct_batched"].items()) or "not run (no concurrency 8)"
    two = ", ".join(f"{k} {v['ratio']:.2f} {'ok' if v['ok'] else 'MISSED'}"
                    for k, v in g["dynamic_beats_batch1"].items()) or "not run (no concurrency > 1)"
    lines.append(f"goal 1, Triton dynamic at concurrency {GOAL_CONCURRENCY} >= {GOAL_VS_DIRECT} x "
                 f"direct b{s['max_batch']}: {one}")
    lines.append(f"goal 2, dynamic batching / batch-1 serving > 1: {two}")
    server = result.get("server") or {}
    if server:
        lines.append(f"server: {server['binary']} ({server['origin']}), ready in "
                     f"{server['startup_s']:.1f} s")
    return "\n".join(lines)


def _sizes(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 1,8,32, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes like 1,8,32, got {text!r}")
    return values


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", nargs="?", type=Path, default=None,
                        help="a bundle whose first axis is a dynamic batch from 1 (default: "
                             "compile --model)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="trtc.zoo architecture to export and compile (default: %(default)s)")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                        help="the compiled bundle's batch range 1..N (default: %(default)s)")
    parser.add_argument("--concurrency", type=_sizes, default=list(DEFAULT_CONCURRENCY),
                        help="concurrent Triton clients, one row each (default: 1,8,32)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default: %(default)s)")
    parser.add_argument("--window", type=float, default=2.5,
                        help="measured seconds per row and round (default: %(default)s)")
    parser.add_argument("--instances", type=int, default=1,
                        help="Triton model instances per model (default: %(default)s)")
    parser.add_argument("--max-queue-delay-us", type=int, default=DEFAULT_QUEUE_DELAY_US,
                        help="dynamic batcher's wait for more requests (default: %(default)s)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="trtc.runtime device, in this process and in Triton's instances "
                             "(default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {QUICK_MODEL}, batch 1..4, concurrency 1,4, one round "
                             "of 0.5 s windows")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser.add_argument("--out", type=Path, default=None,
                        help="keep the exported model, bundle and server log here (default: a "
                             "temp directory)")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.max_batch, args.concurrency = QUICK_MODEL, 4, [1, 4]
        args.rounds, args.window = 1, 0.5
    if args.rounds < 1 or args.window <= 0 or args.max_batch < 2 or args.instances < 1:
        parser.error("--rounds and --instances must be >= 1, --window > 0, --max-batch >= 2")

    if args.bundle is None and importlib.util.find_spec("mxnet") is None:
        message = ("no bundle given, and MXNet, needed to export and compile the model, is not "
                   "installed")
        print(json.dumps({"not_measured": message}) if args.json else f"serve: not measured: "
              f"{message}")
        return 0

    from trtc import triton
    from trtc.runtime import load
    from trtc.runtime.bundle import read_bundle
    from trtc.runtime.errors import TrtcError

    with tempfile.TemporaryDirectory(prefix="trtc-serve-bench-") as tmp, ExitStack() as stack:
        out_dir = args.out or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        bundle = args.bundle or make_bundle(args.model, args.max_batch, out_dir)
        span = triton.batch_range(read_bundle(bundle).manifest)
        if span is None:
            parser.error(f"{bundle}: its first axis is not a dynamic batch from 1 on every input "
                         "and output; compile it with e.g. --input data:1..8x3x224x224")
        max_batch = span[1]
        model = load(bundle, device=args.device)
        one = sample_feeds(model, 1)
        settings = {
            "model": args.model if args.bundle is None else bundle.name, "bundle": str(bundle),
            "max_batch": max_batch,
            "input": ", ".join(f"{n} {'x'.join(map(str, v.shape))}" for n, v in one.items()),
            "direct_device": model.device + (f" ({model.device_reason})"
                                             if model.device_reason else ""),
            "cpus": os.cpu_count(), "rounds": args.rounds, "window_s": args.window,
            "concurrency": args.concurrency, "instances": args.instances,
            "max_queue_delay_us": args.max_queue_delay_us, "device": args.device,
        }
        rows = direct_rows(model, max_batch)
        result: Dict[str, Any] = {"settings": settings, "rows": [], "goals": None,
                                  "server": None, "triton_not_measured": None}
        reason = triton_unavailable_reason()
        server = None
        if reason is None:
            repo = out_dir / "model_repository"
            name = "bench"
            names = {"dynamic": name, "off": f"{name}_nobatch"}
            triton.write_repository([bundle], repo, names=[names["dynamic"]],
                                    instances=args.instances, device=args.device,
                                    max_queue_delay_us=args.max_queue_delay_us)
            triton.write_repository([bundle], repo, names=[names["off"]],
                                    instances=args.instances, device=args.device,
                                    max_batch_size=0)
            http, grpc, metrics = _free_ports(3)
            server = triton.TritonServer(
                repo, http_port=http, grpc_port=grpc, metrics_port=metrics,
                log_file=(out_dir / "tritonserver.log") if args.out else None)
            _say(f"starting tritonserver on {repo}")
            try:
                stack.enter_context(server)
            except TrtcError as exc:
                binary = server.binary.path if server.binary else "tritonserver"
                reason = f"tritonserver ({binary}) cannot start here: {exc}"
                server = None
        if server is not None:
            result["server"] = {"binary": str(server.binary.path), "origin": server.binary.origin,
                                "startup_s": server.startup_seconds}
            rows += triton_rows(server, names, one, list(model.outputs), args.concurrency)
        result["triton_not_measured"] = reason
        if reason:
            _say(f"Triton not measured: {reason}")
        measure(rows, args.rounds, args.window)
    result["rows"] = summarize(rows, max_batch)
    if reason is None:
        result["goals"] = goals(result["rows"], args.concurrency)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
