"""The origin's ResNet-18 tutorial with trtc: baseline MXNet vs the bundle, fp32 and fp16.

Same loop for every contender, as in MXNet's TensorRT tutorial: warmup, then timed iterations,
waiting for the results. On a machine without a usable GPU the bundles run on the CPU path
(ONNX Runtime), so the numbers compare CPU execution, not TensorRT.

    python examples/resnet18_tutorial.py [--batch 1] [--warmup 10] [--iterations 50] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")


def timed(fn, warmup: int, iterations: int) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(iterations):
        fn()  # every contender returns finished numpy arrays
    return iterations / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import mxnet as mx

    import trtc.runtime as rt
    from trtc import CompileSettings, compile
    from trtc.zoo import export_example

    out = args.out or Path(tempfile.mkdtemp(prefix="trtc-tutorial-"))
    symbol, params = export_example("resnet18_v2", out, batch=args.batch)
    x = np.random.default_rng(0).random((args.batch, 3, 224, 224)).astype("float32")

    # Baseline: MXNet's own executor on the exported model.
    net = mx.gluon.SymbolBlock.imports(str(symbol), ["data"], str(params))
    net.hybridize(static_alloc=True, static_shape=True)
    data = mx.nd.array(x)
    baseline = net(data).asnumpy()
    rows = [("MXNet (baseline)", timed(lambda: net(data).asnumpy(), args.warmup, args.iterations), 0.0)]

    for fp16 in (False, True):
        bundle = out / f"resnet18_v2{'-fp16' if fp16 else ''}.trtb"
        compile(CompileSettings(params=params, fp16=fp16, output=bundle))
        model = rt.load(bundle)
        name = next(iter(model.outputs))
        got = model(data=x)[name]
        err = float(np.abs(got - baseline).max() / np.abs(baseline).max())
        label = f"trtc {'fp16' if fp16 else 'fp32'} ({model.device})"
        rows.append((label, timed(lambda: model(data=x), args.warmup, args.iterations), err))

    print(f"\nResNet-18 v2, batch {args.batch}, {args.iterations} timed iterations after "
          f"{args.warmup} warmup")
    print(f"{'contender':<28}{'samples/s':>12}{'speedup':>10}{'rel. error':>12}")
    base = rows[0][1]
    for label, rate, err in rows:
        print(f"{label:<28}{rate * args.batch:>12.1f}{rate / base:>9.2f}x{err:>12.2e}")


if __name__ == "__main__":
    main()
