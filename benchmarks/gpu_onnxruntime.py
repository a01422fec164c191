"""Time trtc's GPU path where ONNX Runtime's CUDA execution provider runs the engines' ONNX (a GPU no
TensorRT flavor can run the bundle's engines on: TensorRT-RTX on H100/H200) against a bare ONNX
Runtime CUDA session on the same ONNX, and against torch fp16 with CUDA graphs on the same
architecture (torchvision, random weights: speed only).

    python benchmarks/gpu_onnxruntime.py BUNDLE[:TORCH_ARCH] ... [--rounds 6] [--warmup 20]
                                         [--iterations N] [--batch B] [--json]

Per bundle (engine-only, one engine: the bare session runs exactly that ONNX), contenders
alternating within each round, as benchmarks/runtime.py times them:

- numpy: ``model(**x)`` (numpy in, numpy out) vs ``session.run(None, x)`` (ONNX Runtime's own
  host I/O), same session options as trtc's (``ORT_ENABLE_ALL``). Goal trtc/bare <= 1.05.
- device: ``model(output="device", **gpu_x)`` vs I/O binding with the same device inputs,
  outputs left on the device; both complete when they return.
- torch: ``TORCH_ARCH`` (e.g. ``resnet18``, ``mobilenet_v2``) from torchvision, fp16,
  channels-last, one CUDA graph replayed on device input, synchronized: the ratio trtc/torch is
  reported as it is (no goal: a different executor).

Prints a table (or JSON); exits 0 with "not measured: <reason>" where there is no GPU or no
onnxruntime-gpu, or where TensorRT itself runs the engines (benchmarks/runtime.py's GPU table).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime import interleaved_medians, iterations_per_round, paired_ratio  # noqa: E402

GOAL = 1.05


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _feeds(model: Any, batch: Optional[int]) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for name, spec in model.inputs.items():
        shape = list(spec.opt_shape or spec.shape)
        if batch and spec.is_dynamic:
            shape[0] = batch
        feeds[name] = rng.random(shape, dtype=np.float32).astype(spec.dtype)
    return feeds


def torch_call(arch: str, feeds: Dict[str, np.ndarray]) -> Optional[Callable[[], Any]]:
    """torchvision ``arch`` in fp16, channels-last, captured as one CUDA graph on a device copy
    of the (single) input; None with the reason on stderr where torch cannot."""
    try:
        import torch
        import torchvision
    except ImportError as exc:
        _say(f"torch column: {exc}")
        return None
    (value,) = feeds.values()
    net = getattr(torchvision.models, arch)(weights=None).eval().half().cuda()
    net = net.to(memory_format=torch.channels_last)
    static = torch.from_numpy(value).cuda().half().to(memory_format=torch.channels_last)
    stream = torch.cuda.Stream()
    with torch.no_grad(), torch.cuda.stream(stream):
        for _ in range(3):
            net(static)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        out = net(static)

    def call() -> Any:
        graph.replay()
        torch.cuda.synchronize()
        return out

    return call


def bundle_row(path: Path, arch: Optional[str], rounds: int, warmup: int,
               iterations: Optional[int], batch: Optional[int]) -> Dict[str, Any]:
    import onnxruntime as ort

    from trtc.runtime import cuda, load
    from trtc.runtime.bundle import read_bundle
    from trtc.runtime.dlpack import DeviceArray

    model = load(path, device="cuda")
    eager = load(path, device="cuda", cuda_graph=False)
    if model.engine_executor != "onnxruntime":
        raise SystemExit(f"{path}: TensorRT runs its engines here; benchmarks/runtime.py times that")
    with read_bundle(path) as bundle:
        engines = bundle.engine_stages
        if len(engines) != 1 or len(bundle.manifest["stages"]) != 1:
            raise SystemExit(f"{path}: one engine stage and nothing else, please")
        onnx_bytes = bundle.read_member(engines[0]["onnx"])
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(onnx_bytes, sess_options=options,
                                   providers=[("CUDAExecutionProvider", {"device_id": 0}),
                                              "CPUExecutionProvider"])
    feeds = _feeds(model, batch)
    gpu_feeds = {}
    stream = cuda.Stream()
    for name, value in feeds.items():
        array = DeviceArray.empty(value.shape, value.dtype, 0)
        stream.copy_h2d(array.ptr, value.ctypes.data, value.nbytes)
        gpu_feeds[name] = array
    stream.synchronize()
    outputs = [o.name for o in session.get_outputs()]

    def bare_device() -> Any:
        binding = session.io_binding()
        for name, array in gpu_feeds.items():
            binding.bind_input(name, "cuda", 0, array.dtype, list(array.shape), array.ptr)
        for name in outputs:
            binding.bind_output(name, "cuda", 0)
        session.run_with_iobinding(binding)
        return binding.get_outputs()

    expected = session.run(None, feeds)
    got = model(**feeds)
    worst = max(float(np.abs(got[n] - e).max() / (np.abs(e).max() or 1.0))
                for n, e in zip(outputs, expected))
    groups: Dict[str, Dict[str, Callable[[], Any]]] = {
        "numpy": {"trtc": lambda: model(**feeds), "no graph": lambda: eager(**feeds),
                  "bare": lambda: session.run(None, feeds)},
        "device": {"trtc": lambda: model(output="device", **gpu_feeds),
                   "no graph": lambda: eager(output="device", **gpu_feeds), "bare": bare_device},
    }
    torch = torch_call(arch, feeds) if arch else None
    if torch is not None:
        groups["device"]["torch"] = torch
    row: Dict[str, Any] = {"bundle": path.name, "batch": next(iter(feeds.values())).shape[0],
                           "max_relative_vs_bare": worst}
    for io, calls in groups.items():
        n = iterations_per_round(calls, iterations)
        medians = interleaved_medians(calls, rounds, warmup, n)
        row[f"{io}_trtc_ms"] = statistics.median(medians["trtc"])
        row[f"{io}_bare_ms"] = statistics.median(medians["bare"])
        row[f"{io}_ratio"] = paired_ratio(medians["trtc"], medians["bare"])
        row[f"{io}_nograph_ms"] = statistics.median(medians["no graph"])
        row[f"{io}_nograph_ratio"] = paired_ratio(medians["no graph"], medians["bare"])
        if "torch" in calls:
            row["torch_ms"] = statistics.median(medians["torch"])
            row["trtc_vs_torch"] = paired_ratio(medians["trtc"], medians["torch"])
    return row


def table(rows: List[Dict[str, Any]]) -> str:
    def num(v: Optional[float]) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = [f"{'bundle':<18}{'batch':>6}  {'io':<7}{'bare ORT':>9}{'trtc':>8}{'ratio':>7}"
             f"{'no graph':>10}{'ratio':>7}{'torch fp16':>12}{'trtc/torch':>12}"
             f"  goal trtc/bare <= {GOAL}"]
    for r in rows:
        for io in ("numpy", "device"):
            ok = "ok" if r[f"{io}_ratio"] <= GOAL else "over"
            torch = io == "device"
            lines.append(f"{r['bundle']:<18}{r['batch']:>6}  {io:<7}{num(r[f'{io}_bare_ms']):>9}"
                         f"{num(r[f'{io}_trtc_ms']):>8}{num(r[f'{io}_ratio']):>7}"
                         f"{num(r[f'{io}_nograph_ms']):>10}{num(r[f'{io}_nograph_ratio']):>7}"
                         f"{num(r.get('torch_ms') if torch else None):>12}"
                         f"{num(r.get('trtc_vs_torch') if torch else None):>12}  {ok}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("bundles", nargs="+", help="BUNDLE or BUNDLE:TORCH_ARCH")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None, help="for dynamic bundles")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from trtc.runtime import cuda
    from trtc.runtime.stages.engine_cpu import cuda_provider_unavailable_reason

    reason = cuda.gpu_unavailable_reason(0) or cuda_provider_unavailable_reason()
    if reason:
        print(json.dumps({"rows": [], "not_measured": reason}) if args.json
              else f"not measured: {reason}")
        return 0
    rows = []
    for spec in args.bundles:
        path, _, arch = spec.partition(":")
        rows.append(bundle_row(Path(path), arch or None, args.rounds, args.warmup,
                               args.iterations, args.batch))
    if args.json:
        print(json.dumps({"rows": rows}, indent=1))
    else:
        print(f"GPU path, engines run by ONNX Runtime's CUDA provider: median of {args.rounds} "
              "rounds, contenders alternating; ms per call")
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
