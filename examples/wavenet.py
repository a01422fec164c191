"""A Gluon WaveNet compiled with an exclusion that yields several engine segments, and the
before/after pictures of the partitioned graph (the origin's WaveNet example).

    python examples/wavenet.py [--out DIR] [--exclude-op sigmoid]

Keeping the gates' `sigmoid` in MXNet cuts the network at every layer: the report lists each
segment, and `wavenet.svg` shows engines as single nodes between the residual MXNet ops.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--exclude-op", action="append", default=None)
    args = parser.parse_args()

    import trtc.runtime as rt
    from trtc import CompileSettings, compile
    from trtc.inspection import render_graph
    from trtc.runtime.bundle import read_bundle
    from trtc.runtime.errors import UsageError
    from trtc.zoo import export_example

    out = args.out or Path(tempfile.mkdtemp(prefix="trtc-wavenet-"))
    out.mkdir(parents=True, exist_ok=True)
    _, params = export_example("wavenet", out)
    excluded = tuple(args.exclude_op or ["sigmoid"])
    whole = compile(CompileSettings(params=params, output=out / "wavenet-whole.trtb"))
    split = compile(CompileSettings(params=params, output=out / "wavenet.trtb", exclude_ops=excluded))
    print("before (no exclusion):")
    print(whole.report.to_text())
    print(f"\nafter (--exclude-op {' --exclude-op '.join(excluded)}):")
    print(split.report.to_text())
    for bundle, picture in ((whole.output, out / "wavenet-whole.svg"), (split.output, out / "wavenet.svg")):
        try:
            render_graph(read_bundle(bundle), picture)
            print(f"wrote {picture}")
        except UsageError as exc:  # no Graphviz: write the DOT source instead
            render_graph(read_bundle(bundle), picture.with_suffix(".dot"))
            print(f"{exc}; wrote {picture.with_suffix('.dot')}")
    model = rt.load(split.output, device="cpu")
    x = np.random.default_rng(0).random(model.inputs["data"].shape).astype("float32")
    y = next(iter(model(data=x).values()))
    print(f"\nran {model}: output {y.shape}, sums to 1 over classes: "
          f"{np.allclose(y.sum(axis=1), 1, atol=1e-3)}")


if __name__ == "__main__":
    main()
