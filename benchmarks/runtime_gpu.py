"""Time trtc's GPU path against a bare ``execute_async_v3`` loop on the same engine(s).

    python benchmarks/runtime_gpu.py [BUNDLE] [--iterations 500] [--warmup 50] [--model resnet18_v2]

Without BUNDLE it compiles ``--model`` from the zoo (needs MXNet). The bundle must hold engine
stages only. Rows (median latency of one call, ms):

- numpy: ``model(**numpy_inputs)`` vs copy to pinned, H2D, execute every engine, D2H, synchronize,
  copy out (the same work done by hand). The goal is a ratio of at most 1.03.
- device: ``model(output="device", **gpu_inputs)`` vs execute every engine and synchronize.
- numpy / device, no graph: the same with ``load(..., cuda_graph=False)``.

Exits 0 with the reason, measuring nothing, where TensorRT cannot run (no GPU, no cuda-python, no
TensorRT flavor for this GPU).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

GOAL = 1.03


def _reason_gpu_cannot_run(bundle: Optional[Path]) -> Optional[str]:
    from trtc.runtime import cuda
    from trtc.runtime.stages.engine_cuda import runtime_unavailable_reason

    reason = cuda.gpu_unavailable_reason(0)
    if reason:
        return reason
    major, minor = cuda.compute_capability(0)
    if bundle is None:
        backends = ["tensorrt" if importlib.util.find_spec("tensorrt") else "tensorrt_rtx"]
    else:
        from trtc.runtime.bundle import read_bundle

        backends = sorted({s["backend"] for s in read_bundle(bundle).engine_stages})
    for backend in backends:
        reason = runtime_unavailable_reason(backend, f"{major}.{minor}")
        if reason:
            return reason
    return None


def _compile(model: str, out_dir: Path) -> Path:
    from trtc import CompileSettings, compile
    from trtc.zoo import export_example

    _, params = export_example(model, out_dir)
    out = out_dir / f"{model}.trtb"
    compile(CompileSettings(params=params, output=out))
    return out


class BareLoop:
    """The engines of a bundle run by hand: buffers bound once, nothing else per call."""

    def __init__(self, bundle: Any, feeds: Dict[str, np.ndarray]):
        from trtc.runtime import cuda
        from trtc.runtime.stages.engine_cuda import import_backend

        cuda.set_device(0)
        self.stream = cuda.Stream()
        self.contexts: List[Any] = []
        self.device: Dict[str, Any] = {}
        self.host: Dict[str, Any] = {}
        self._keep: List[Any] = []
        for stage in bundle.engine_stages:
            trt = import_backend(stage["backend"])
            logger = trt.Logger(trt.Logger.ERROR)
            runtime = trt.Runtime(logger)
            engine = runtime.deserialize_cuda_engine(bundle.read_member(stage["engine"]))
            context = engine.create_execution_context()
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                if name not in self.device:
                    shape = tuple(engine.get_tensor_shape(name))
                    dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
                    self.host[name] = cuda.PinnedBuffer(shape, dtype)
                    self.device[name] = cuda.DeviceBuffer(self.host[name].nbytes)
                context.set_tensor_address(name, self.device[name].ptr)
            self._keep += [logger, runtime, engine]
            self.contexts.append(context)
        self.inputs = list(feeds)
        self.outputs = [t["name"] for t in bundle.manifest["outputs"]]

    def numpy_call(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        stream = self.stream
        for name in self.inputs:
            host = self.host[name]
            np.copyto(host.array, feeds[name])
            stream.copy_h2d(self.device[name].ptr, host.ptr, host.nbytes)
        self.device_call()
        for name in self.outputs:
            stream.copy_d2h(self.host[name].ptr, self.device[name].ptr, self.host[name].nbytes)
        stream.synchronize()
        return {name: self.host[name].array.copy() for name in self.outputs}

    def device_call(self, sync: bool = False) -> None:
        for context in self.contexts:
            context.execute_async_v3(self.stream.ptr)
        if sync:
            self.stream.synchronize()


def _median_ms(call: Callable[[], Any], warmup: int, iterations: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?", type=Path)
    parser.add_argument("--model", default="resnet18_v2")
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args(argv)

    reason = _reason_gpu_cannot_run(args.bundle)
    if reason:
        print(f"runtime_gpu: not measured: {reason}")
        return 0
    if args.bundle is None and importlib.util.find_spec("mxnet") is None:
        print("runtime_gpu: not measured: no bundle given, and MXNet, needed to compile one, "
              "is not installed")
        return 0

    from trtc.runtime import load
    from trtc.runtime.bundle import read_bundle
    from trtc.runtime.dlpack import DeviceArray

    with tempfile.TemporaryDirectory() as tmp:
        path = args.bundle or _compile(args.model, Path(tmp))
        bundle = read_bundle(path)
        if bundle.residual_stages:
            print("runtime_gpu: not measured: the bundle has residual (MXNet) stages; the bare "
                  "loop compares engine-only bundles")
            return 0
        graphed = load(path, device="cuda")
        eager = load(path, device="cuda", cuda_graph=False)
        rng = np.random.default_rng(0)
        feeds = {n: rng.standard_normal(s.shape).astype(s.dtype) for n, s in graphed.inputs.items()}
        bare = BareLoop(bundle, feeds)
        gpu_feeds = {}
        for name, value in feeds.items():
            array = DeviceArray.empty(value.shape, value.dtype, 0)
            bare.stream.copy_h2d(array.ptr, value.ctypes.data, value.nbytes)
            gpu_feeds[name] = array
        bare.stream.synchronize()

        rows = []
        bare_numpy = _median_ms(lambda: bare.numpy_call(feeds), args.warmup, args.iterations)
        bare_device = _median_ms(lambda: bare.device_call(sync=True), args.warmup, args.iterations)
        for label, model in (("", graphed), (", no graph", eager)):
            rows.append((f"numpy{label}", bare_numpy,
                         _median_ms(lambda: model(**feeds), args.warmup, args.iterations)))
            rows.append((f"device{label}", bare_device,
                         _median_ms(lambda: model(output="device", **gpu_feeds), args.warmup,
                                    args.iterations)))

    print(f"{path.name if args.bundle else args.model}: {len(bundle.engine_stages)} engine stage(s), "
          f"median of {args.iterations} calls")
    print(f"{'mode':<20}{'bare ms':>10}{'trtc ms':>10}{'ratio':>8}  goal <= {GOAL}")
    for mode, bare_ms, trtc_ms in rows:
        ratio = trtc_ms / bare_ms
        print(f"{mode:<20}{bare_ms:>10.3f}{trtc_ms:>10.3f}{ratio:>8.3f}  "
              f"{'ok' if ratio <= GOAL else 'over'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
