"""Time trtc's runtime against what it must match: bare ONNX Runtime and MXNet on the CPU, a bare
``execute_async_v3`` loop on the GPU.

    python benchmarks/runtime.py [BUNDLE ...] [--models resnet18_v2,mobilenetv2_1.0,bert] [--batches 1,8]
                                 [--rounds 6] [--warmup 3] [--iterations N] [--device auto|cpu|cuda]
                                 [--inputs FILE.npz] [--dynamic [1,8,32]] [--dynamic-only]
                                 [--residual-compare [MODELS]] [--residual-only]
                                 [--quick] [--json] [--out DIR]

Without BUNDLE it exports each ``--models`` architecture and compiles one fp32 bundle per
``--batches`` entry (bundles have static shapes). A model is a ``trtc.zoo`` architecture (seeded
random weights) or an issue-10 test model of ``tests/models/families.py`` (``bert``,
``bert_small``, ``ssd_mobilenet``, ``faster_rcnn``, ``yolo3``, ``center_net``, ``video``,
``ops_block``, ``reused_block``;
ordinary initialization, exported at batch 1 only). Inputs are real-looking where random floats
would not do: a families model's ``verify_inputs_<name>`` (BERT: token ids, token types, valid
lengths), given to the compile as ``--verify-inputs`` and fed to every contender; a given bundle's
inputs come from ``--inputs FILE.npz`` (arrays by input name), else from ``bundle_feeds``' rule
(a dynamic bundle is timed at its opt shape):
float inputs uniform [0, 1) except inputs named like a length (the full length), integer inputs
in [0, 2) (valid ids for any table of 2 rows or more). Every contender gets the same input
arrays and the origin tutorial's loop: warmup calls, then timed calls, each returning
finished results. Contenders alternate within a round, in a different order each round; a round
times ``--iterations`` calls of each (default: as many as take it about a second), so drift on a
busy machine hits all of them alike. Reported: the median over rounds of each round's median call;
ratios are medians of the per-round ratios; samples/s is trtc's, batch / its median call.

CPU table (``trtc.runtime.load(bundle, device="cpu")``):

- trtc: ``model(data=x)``, numpy in, numpy out, input validation included.
- ORT: a bare ``onnxruntime.InferenceSession`` on the ONNX stored in the bundle, with the options a
  plain user would give, which are those of the CPU path (``runtime/stages/engine_cpu.py``: ORT's
  default thread pools, ``ORT_ENABLE_ALL``): ``session.run``, engine and ONNX Runtime stages
  chained in the manifest's order. Bundles without MXNet stages; goal trtc/ORT <= 1.05.
- MXNet: the source model, ``SymbolBlock.imports`` + ``hybridize(static_alloc=True,
  static_shape=True)``, ``net(*inputs)`` and every output ``.asnumpy()`` (exported models only,
  not given bundles).
- whole ORT: a bare ``onnxruntime.InferenceSession`` (same options) on ONE whole-model
  ``mxnet.onnx.export_model`` of the source model, as a user without trtc would run it: the
  reference of issue 10's goal (trtc within 1.1x of it, ``WHOLE_GOAL``), and the only ORT
  reference for bundles with residual (MXNet) stages. Exported models only; where the export or
  ORT fails the column says n/a and the reason goes to stderr (and to ``whole_error`` in JSON).
  The export pins ONNX opset 13 for mxnet.onnx and its checker alike (what trtc does; with
  onnx >= 1.14 an unpatched export declares the installed opset and its checker refuses
  mxnet.onnx's opset-13 reduce ops and LayerNorm). Its outputs are compared with trtc's (by
  position) for information only: mxnet.onnx's box_nms, for one, computes something else.

GPU table (``device="cuda"``, engine-only bundles): ``model(**numpy_inputs)`` vs copy to pinned,
H2D, execute every engine, D2H, synchronize, copy out, done by hand (goal <= 1.03); and
``model(output="device", **gpu_inputs)`` vs execute every engine and synchronize; both with and
without CUDA graphs. Where TensorRT cannot run (no GPU, no cuda-python, no TensorRT flavor for this
GPU) the GPU table is skipped with the reason, and the exit status stays 0.

Dynamic table (``--dynamic [BATCHES]``, default batches 1,8,32; CPU path; zoo architectures
only, since it compiles both kinds from the source model): per model ONE dynamic bundle taking
batch 1..max(BATCHES) (opt shape: batch ``DYNAMIC_OPT`` = 8, clipped into the range), and per batch
a static bundle of that batch (the CPU table's own where it has one). At each batch both run the
same input arrays, alternating as above, with bare ORT on each bundle's ONNX beside them
(engine-only bundles): "ORT dyn/static" tells how much of a difference is ONNX Runtime's on the
dynamic ONNX (symbolic batch dimension) rather than trtc's runtime. Goal: dynamic/static <= 1.05
(issue 12). Outputs of the two bundles are compared (max relative difference on stderr and in
JSON). ``--dynamic-only``: this table alone (no CPU or GPU table).

Residual table (``--residual-compare [MODELS]``, default the detectors ``RESIDUAL_MODELS``:
YOLOv3 MobileNet, SSD-300 VGG16, CenterNet ResNet-18 and Faster R-CNN; CPU path, batch 1): each
model exported once and compiled twice, everything else equal: with ``residual="onnxruntime"``
(the default: ops kept out of engines run in ONNX Runtime stages wherever they have an exact
ONNX) and with ``residual="mxnet"`` (all of them in MXNet stages, as before). Both bundles run the
same inputs, alternating as above; ORT/MX is the median of the per-round ratios, with their
range. Goal: ORT/MX <= 1.0 (``RESIDUAL_GOAL``; "noise" when the median is over but some round is
within it). Beside it, each bundle's time in its non-engine stages (timed stage by stage, not
interleaved: an explanation, not a contender) and the largest difference between the two
bundles' outputs. ``--residual-only``: this table alone.

``--quick``: one small model at batch 1, a few calls per round (a smoke test, not a measurement);
it includes the dynamic table at batches 1,2 (a 1..2 bundle). With ``--residual-compare`` or
``--residual-only``, the residual table is that model's, its ``Flatten`` excluded from its engine
(``--exclude-op``) so that each bundle has a non-engine stage.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import statistics
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

CPU_GOAL = 1.05  # trtc / bare ONNX Runtime
WHOLE_GOAL = 1.1  # trtc / bare ONNX Runtime on one whole-model export (issue 10, goal 3)
WHOLE_OPSET = 13  # trtc's opset (trtc/_defaults.py ONNX_OPSET)
GPU_GOAL = 1.03  # trtc / bare execute_async_v3 loop
DEFAULT_MODELS = ("resnet18_v2", "mobilenetv2_1.0")
DEFAULT_BATCHES = (1, 8)
DYNAMIC_GOAL = 1.05  # dynamic bundle / static bundle of the same batch, CPU path (issue 12)
DYNAMIC_BATCHES = (1, 8, 32)
DYNAMIC_OPT = 8  # the dynamic bundle's opt batch, clipped into its range
QUICK_DYNAMIC_BATCHES = (1, 2)
QUICK_MODEL = "mobilenetv2_0.25"
# --residual-compare: the detectors whose non-engine ops (box_nms, tile, gather_nd, ROIAlign...)
# run in ONNX Runtime stages by default, against the same models with --residual mxnet
RESIDUAL_MODELS = ("yolo3_mobilenet1.0_voc", "ssd_300_vgg16_atrous_voc",
                   "center_net_resnet18_v1b_voc", "faster_rcnn")
RESIDUAL_SETTINGS = ("onnxruntime", "mxnet")
RESIDUAL_GOAL = 1.0  # ORT-stage bundle / MXNet-stage bundle, CPU path (issue 20)
QUICK_RESIDUAL_EXCLUDE = ("Flatten",)  # --quick: the quick model's last op out of its engine
ROUND_SECONDS = 1.0  # per contender and round, when --iterations is not given
MIN_ITERATIONS = 5
MAX_ITERATIONS = 2000

Call = Callable[[], Any]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# timing


def interleaved_medians(calls: Dict[str, Call], rounds: int, warmup: int,
                        iterations: Mapping[str, int]) -> Dict[str, List[float]]:
    """Time every call in ``calls`` round by round: per round and contender, ``warmup`` untimed
    calls then ``iterations[contender]`` timed ones. The order cycles through every permutation
    of the contenders, so over whole cycles each one runs after each other equally often (what
    ran just before, MXNet's or ORT's spinning thread pools and evicted caches, shifts timings).

    Returns:
        contender -> the median call of each round, in ms.
    """
    from trtc.bench import time_calls

    orders = list(itertools.permutations(calls))
    medians: Dict[str, List[float]] = {name: [] for name in calls}
    for r in range(rounds):
        for name in orders[r % len(orders)]:
            times = time_calls(calls[name], warmup, iterations[name])
            medians[name].append(float(np.median(times)) * 1e3)
    return medians


def iterations_per_round(calls: Dict[str, Call], iterations: Optional[int]) -> Dict[str, int]:
    """``iterations`` for every contender, or by default as many calls of each as take about
    ROUND_SECONDS (MIN_ITERATIONS to MAX_ITERATIONS): a slow contender does not stretch a fast
    one's round."""
    from trtc.bench import time_calls

    if iterations:
        return {name: iterations for name in calls}
    counts = {}
    for name, call in calls.items():
        once = max(float(np.median(time_calls(call, 1, 3))), 1e-6)
        counts[name] = int(min(MAX_ITERATIONS, max(MIN_ITERATIONS, ROUND_SECONDS / once)))
    return counts


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median of the per-round ratios: rounds are adjacent in time, so drift cancels."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


# ---------------------------------------------------------------------------------------------
# what is timed


REPO = Path(__file__).resolve().parent.parent
FAMILIES_FILE = REPO / "tests" / "models" / "families.py"
FAMILY_MODELS = ("bert", "bert_small", "ssd_mobilenet", "faster_rcnn", "yolo3", "center_net",
                 "video", "ops_block", "reused_block")
_LENGTH_NAME = ("valid_length", "valid_len", "length", "lengths", "seq_len", "seq_length")


@dataclass
class Case:
    """One bundle to time, with the MXNet model it came from when known, and the inputs every
    contender gets (None: made from the bundle's input specs, see ``bundle_feeds``)."""

    name: str
    batch: int
    bundle: Path
    symbol: Optional[Path] = None
    params: Optional[Path] = None
    feeds: Optional[Dict[str, np.ndarray]] = None


def families_module() -> Any:
    """tests/models/families.py, imported by path (it is not a package of the install)."""
    module = sys.modules.get("trtc_test_families")
    if module is None:
        spec = importlib.util.spec_from_file_location("trtc_test_families", FAMILIES_FILE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def zoo_cases(models: Sequence[str], batches: Sequence[int], out_dir: Path) -> List[Case]:
    """Export each model once; compile one fp32 bundle per batch size (issue-10 models: batch 1
    only, gated on their real-looking inputs where they have them)."""
    from trtc import CompileSettings, compile
    from trtc.zoo import default_shape, export_example

    cases = []
    for name in models:
        _say(f"exporting {name}")
        if name in FAMILY_MODELS:
            fam = families_module()
            params = fam.MODELS[name](out_dir)
            symbol = params.with_name(f"{name}-symbol.json")
            feeds = fam.random_inputs(name, 0)  # verify_inputs_<name> where it exists
            verify = None
            if getattr(fam, f"verify_inputs_{name}", None) is not None:
                verify = out_dir / f"{name}-verify.npz"
                np.savez(verify, **feeds)
            skipped = [b for b in batches if b != 1]
            if skipped:
                _say(f"{name}: batch {','.join(map(str, skipped))} skipped: the issue-10 models "
                     "are exported at batch 1")
            bundle = out_dir / f"{name}-b1.trtb"
            _say(f"compiling {bundle.name}")
            compile(CompileSettings(params=params, output=bundle, verify_inputs=verify))
            cases.append(Case(name, 1, bundle, symbol, params, feeds))
            continue
        symbol, params = export_example(name, out_dir)
        for batch in batches:
            bundle = out_dir / f"{name}-b{batch}.trtb"
            _say(f"compiling {bundle.name}")
            compile(CompileSettings(params=params, output=bundle,
                                    inputs={"data": default_shape(name, batch)}))
            cases.append(Case(name, batch, bundle, symbol, params))
    return cases


def bundle_case(path: Path, inputs: Optional[Path] = None) -> Case:
    from trtc.bench import bundle_batch
    from trtc.runtime.bundle import read_bundle

    feeds = None
    if inputs is not None:
        with np.load(inputs, allow_pickle=False) as npz:
            feeds = {name: npz[name] for name in npz.files}
    return Case(path.name, bundle_batch(read_bundle(path).manifest), path, feeds=feeds)


def feed_shapes(model: Any, batch: Optional[int] = None) -> Dict[str, tuple]:
    """The shape to feed each input: a static input's shape; a dynamic one's opt shape, with
    the leading axis set to ``batch`` where that axis varies and ``batch`` is given."""
    shapes = {}
    for name, spec in model.inputs.items():
        dynamic = getattr(spec, "is_dynamic", False)
        shape = list(spec.opt_shape or spec.shape) if dynamic else list(spec.shape)
        if dynamic and batch is not None and shape and spec.shape[0] == -1:
            shape[0] = batch
        shapes[name] = tuple(shape)
    return shapes


def bundle_feeds(model: Any, batch: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Seeded inputs from the bundle's input specs alone (shapes: ``feed_shapes``): float
    inputs uniform [0, 1), except one named like a length, which gets the full length (the
    largest non-batch dimension of the other inputs); integer inputs in [0, 2) (ids valid for
    any table of 2 rows or more, BERT's token types included)."""
    rng = np.random.default_rng(0)
    specs = dict(model.inputs)
    shapes = feed_shapes(model, batch)
    feeds = {}
    for name, spec in specs.items():
        dtype = np.dtype(spec.dtype)
        shape = shapes[name]
        others = [shapes[n] for n in specs if n != name and len(shapes[n]) >= 2]
        if name.lower() in _LENGTH_NAME and others:
            feeds[name] = np.full(shape, max(max(s[1:]) for s in others), dtype=dtype)
        elif dtype.kind == "f":
            feeds[name] = rng.random(shape).astype(dtype)
        else:
            feeds[name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds


def bare_ort(bundle: Any) -> Optional[Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]]:
    """The bundle's engine stages and ONNX Runtime stages, in the manifest's order, as plain
    ONNX Runtime sessions chained by hand; None when the bundle has residual (MXNet) stages."""
    if bundle.residual_stages:
        return None
    import onnxruntime as ort

    options = _ort_options()
    sessions = []
    for stage in [s for s in bundle.manifest["stages"] if s["kind"] in ("engine", "onnx")]:
        session = ort.InferenceSession(bundle.read_member(stage["onnx"]), sess_options=options,
                                       providers=["CPUExecutionProvider"])
        sessions.append((session, [t["name"] for t in stage["inputs"]],
                         [t["name"] for t in stage["outputs"]]))
    if len(sessions) == 1:  # the common case without a dict of intermediate tensors
        session, _, outputs = sessions[0]
        return lambda feeds: dict(zip(outputs, session.run(outputs, feeds)))

    def run(feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        tensors = dict(feeds)
        for session, inputs, outputs in sessions:
            tensors.update(zip(outputs, session.run(outputs, {n: tensors[n] for n in inputs})))
        return tensors

    return run


def mxnet_forward(case: Case, feeds: Dict[str, np.ndarray]) -> Call:
    """MXNet's own hybridized forward of the source model on ``feeds``, returning numpy."""
    import mxnet as mx

    names = list(feeds)
    with warnings.catch_warnings():  # "cannot decide type for data": the forward decides it
        warnings.simplefilter("ignore", UserWarning)
        net = mx.gluon.SymbolBlock.imports(str(case.symbol), names, str(case.params))
    net.hybridize(static_alloc=True, static_shape=True)
    arrays = [mx.nd.array(feeds[n], dtype=feeds[n].dtype) for n in names]

    def call() -> Any:
        out = net(*arrays)
        return [o.asnumpy() for o in out] if isinstance(out, (list, tuple)) else out.asnumpy()

    return call


def _symbol_inputs(symbol: Path, params: Path) -> List[str]:
    """The symbol's data inputs in mxnet.onnx's order (variable nodes without a weight)."""
    import mxnet as mx

    weights = {k.split(":", 1)[-1] for k in mx.nd.load(str(params))}
    nodes = json.loads(symbol.read_text())["nodes"]
    return [n["name"] for n in nodes if n["op"] == "null" and n["name"] not in weights]


def whole_model_onnx(case: Case, feeds: Dict[str, np.ndarray]) -> bytes:
    """ONE ``mxnet.onnx.export_model`` of the whole source model, as a user without trtc would
    export it (opset pinned to 13 for the export and its checker alike; see the module doc)."""
    import mxnet.onnx as mx_onnx
    import onnx.checker
    import onnx.defs

    names = _symbol_inputs(case.symbol, case.params)
    newest = onnx.defs.onnx_opset_version
    saved = dict(onnx.checker.DEFAULT_CONTEXT.opset_imports)
    onnx.defs.onnx_opset_version = lambda: WHOLE_OPSET
    onnx.checker.DEFAULT_CONTEXT.opset_imports = {"": WHOLE_OPSET}
    try:
        with tempfile.TemporaryDirectory(prefix="trtc-whole-") as tmp:
            path = Path(tmp) / "model.onnx"
            mx_onnx.export_model(str(case.symbol), str(case.params),
                                 in_shapes=[list(feeds[n].shape) for n in names],
                                 in_types=[feeds[n].dtype.type for n in names],
                                 onnx_file_path=str(path))
            return path.read_bytes()
    finally:
        onnx.defs.onnx_opset_version = newest
        onnx.checker.DEFAULT_CONTEXT.opset_imports = saved


def _ort_options() -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def whole_ort(case: Case, feeds: Dict[str, np.ndarray]) -> Call:
    """A bare ORT session on the whole-model export; raises where the export or ORT fails."""
    import onnxruntime as ort

    with _quiet_logs():
        onnx_bytes = whole_model_onnx(case, feeds)
    session = ort.InferenceSession(onnx_bytes, sess_options=_ort_options(),
                                   providers=["CPUExecutionProvider"])
    del onnx_bytes
    names = {i.name for i in session.get_inputs()}
    whole_feeds = {n: v for n, v in feeds.items() if n in names}
    missing = names - set(whole_feeds)
    if missing:
        raise RuntimeError(f"the whole-model ONNX wants inputs {sorted(missing)}")
    return lambda: session.run(None, whole_feeds)


class _quiet_logs:
    """mxnet.onnx logs a line per converter warning and per export; not part of the table."""

    def __enter__(self) -> None:
        import logging

        self._root = logging.getLogger()
        self._level = self._root.level
        self._root.setLevel(logging.ERROR)

    def __exit__(self, *exc: Any) -> None:
        self._root.setLevel(self._level)


def _max_relative(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("nan")
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    return diff / scale if scale > 0 else diff


def cpu_row(case: Case, rounds: int, warmup: int, iterations: Optional[int]) -> Dict[str, Any]:
    from trtc.runtime import load
    from trtc.runtime.bundle import read_bundle

    model = load(case.bundle, device="cpu")
    feeds = case.feeds if case.feeds is not None else bundle_feeds(model, case.batch)
    feeds = {n: np.ascontiguousarray(v, dtype=model.inputs[n].dtype) for n, v in feeds.items()}
    bundle = read_bundle(case.bundle)
    calls: Dict[str, Call] = {"trtc": lambda: model(**feeds)}
    expected = model(**feeds)
    ort_run = bare_ort(bundle)
    if ort_run is not None:
        got = ort_run(feeds)
        for name in model.outputs:  # the same ONNX under the same ORT: the same numbers
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)
        calls["ORT"] = lambda: ort_run(feeds)
    whole_error = None
    whole_diff = None
    mxnet_diff = None
    if case.symbol is not None:
        calls["MXNet"] = mxnet_forward(case, feeds)
        outs = calls["MXNet"]()
        outs = outs if isinstance(outs, list) else [outs]
        mxnet_diff = [_max_relative(expected[n], o) for o, n in zip(outs, model.outputs)]
        _say(f"CPU {case.name}: trtc's outputs vs MXNet's, max relative difference: "
             + ", ".join(f"{d:.2g}" for d in mxnet_diff))
        try:
            whole = whole_ort(case, feeds)
            outs = whole()
            whole_diff = [_max_relative(o, expected[n]) for o, n in zip(outs, model.outputs)]
            calls["whole ORT"] = whole
        except Exception as exc:  # a missing reference is reported, not fatal
            text = str(exc).strip().splitlines()
            whole_error = f"{type(exc).__name__}: {text[0][:200] if text else ''}"
            _say(f"CPU {case.name}: whole-model ORT not measured: {whole_error}")
        if whole_diff is not None:
            _say(f"CPU {case.name}: whole-model ORT outputs vs trtc's, max relative difference: "
                 + ", ".join(f"{d:.2g}" for d in whole_diff))
    n = iterations_per_round(calls, iterations)
    _say(f"CPU {case.name} batch {case.batch}: {rounds} rounds of "
         + ", ".join(f"{count} {name}" for name, count in n.items()) + " calls")
    medians = interleaved_medians(calls, rounds, warmup, n)
    trtc_ms = statistics.median(medians["trtc"])
    row: Dict[str, Any] = {
        "model": case.name, "batch": case.batch, "rounds": rounds, "iterations": n,
        "stages": [s["kind"] for s in bundle.manifest.get("stages", [])],
        "trtc_ms": trtc_ms, "ort_ms": None, "mxnet_ms": None, "whole_ort_ms": None,
        "samples_per_s": case.batch * 1e3 / trtc_ms,
        "trtc_vs_ort": None, "trtc_vs_mxnet": None, "trtc_vs_whole_ort": None,
        "whole_error": whole_error, "whole_vs_trtc_max_rel": whole_diff,
        "trtc_vs_mxnet_max_rel": mxnet_diff,
    }
    if "ORT" in medians:
        row["ort_ms"] = statistics.median(medians["ORT"])
        row["trtc_vs_ort"] = paired_ratio(medians["trtc"], medians["ORT"])
    if "MXNet" in medians:
        row["mxnet_ms"] = statistics.median(medians["MXNet"])
        row["trtc_vs_mxnet"] = paired_ratio(medians["trtc"], medians["MXNet"])
    if "whole ORT" in medians:
        row["whole_ort_ms"] = statistics.median(medians["whole ORT"])
        row["trtc_vs_whole_ort"] = paired_ratio(medians["trtc"], medians["whole ORT"])
    return row


# ---------------------------------------------------------------------------------------------
# dynamic vs static bundles (CPU path)


@dataclass
class DynamicCase:
    """One model's dynamic bundle and, per batch it is timed at, a static bundle of that batch."""

    name: str
    dynamic: Path
    low: int
    high: int
    opt: int
    static: Dict[int, Path]


def dynamic_opt(low: int, high: int) -> int:
    return min(max(DYNAMIC_OPT, low), high)


def dynamic_cases(models: Sequence[str], batches: Sequence[int], out_dir: Path,
                  static: Mapping[tuple, Case]) -> List[DynamicCase]:
    """Per zoo model: one dynamic bundle of batch 1..max(batches), and a static bundle per batch
    (reusing ``static``: (model, batch) -> the CPU table's case, where it has one)."""
    from trtc import CompileSettings, compile
    from trtc.zoo import default_shape, export_example

    cases = []
    low, high = 1, max(batches)
    opt = dynamic_opt(low, high)
    for name in models:
        if name in FAMILY_MODELS:
            _say(f"dynamic {name}: skipped: the issue-10 models are exported at batch 1 only")
            continue
        known = next((c for (m, _), c in static.items() if m == name), None)
        if known is not None:
            params = known.params
        else:
            _say(f"exporting {name}")
            _, params = export_example(name, out_dir)
        shape = default_shape(name, 1)
        bundle = out_dir / f"{name}-b{low}-{high}.trtb"
        _say(f"compiling {bundle.name} (opt batch {opt})")
        compile(CompileSettings(params=params, output=bundle,
                                inputs={"data": ((low, high),) + tuple(shape[1:])},
                                opt_shapes={"data": default_shape(name, opt)}))
        bundles = {}
        for batch in batches:
            if (name, batch) in static:
                bundles[batch] = static[(name, batch)].bundle
                continue
            path = out_dir / f"{name}-b{batch}.trtb"
            _say(f"compiling {path.name}")
            compile(CompileSettings(params=params, output=path,
                                    inputs={"data": default_shape(name, batch)}))
            bundles[batch] = path
        cases.append(DynamicCase(name, bundle, low, high, opt, bundles))
    return cases


def dynamic_rows(case: DynamicCase, rounds: int, warmup: int,
                 iterations: Optional[int]) -> List[Dict[str, Any]]:
    """One row per batch: the dynamic bundle vs the static one of that batch, on the same
    inputs, with bare ORT on each bundle's ONNX beside them where both are engine-only."""
    from trtc.runtime import load
    from trtc.runtime.bundle import read_bundle

    dynamic = load(case.dynamic, device="cpu")
    dynamic_ort = bare_ort(read_bundle(case.dynamic))
    rows = []
    for batch, path in sorted(case.static.items()):
        static = load(path, device="cpu")
        feeds = {n: np.ascontiguousarray(v, dtype=static.inputs[n].dtype)
                 for n, v in bundle_feeds(static).items()}
        want = static(**feeds)
        got = dynamic(**feeds)
        diff = [_max_relative(got[n], want[n]) for n in static.outputs]
        _say(f"dynamic {case.name} batch {batch}: dynamic vs static outputs, max relative "
             "difference: " + ", ".join(f"{d:.2g}" for d in diff))
        calls: Dict[str, Call] = {"static": lambda: static(**feeds),
                                  "dynamic": lambda: dynamic(**feeds)}
        static_ort = bare_ort(read_bundle(path))
        if static_ort is not None and dynamic_ort is not None:
            calls["static ORT"] = lambda: static_ort(feeds)
            calls["dynamic ORT"] = lambda: dynamic_ort(feeds)
        n = iterations_per_round(calls, iterations)
        _say(f"dynamic {case.name} batch {batch}: {rounds} rounds of "
             + ", ".join(f"{count} {name}" for name, count in n.items()) + " calls")
        medians = interleaved_medians(calls, rounds, warmup, n)
        static_ms = statistics.median(medians["static"])
        dynamic_ms = statistics.median(medians["dynamic"])
        row: Dict[str, Any] = {
            "model": case.name, "batch": batch, "range": f"{case.low}..{case.high}",
            "opt_batch": case.opt, "rounds": rounds, "iterations": n,
            "static_ms": static_ms, "dynamic_ms": dynamic_ms,
            "static_samples_per_s": batch * 1e3 / static_ms,
            "dynamic_samples_per_s": batch * 1e3 / dynamic_ms,
            "dynamic_vs_static": paired_ratio(medians["dynamic"], medians["static"]),
            "ort_dynamic_vs_static": None, "dynamic_vs_static_max_rel": diff,
        }
        if "dynamic ORT" in medians:
            row["ort_dynamic_vs_static"] = paired_ratio(medians["dynamic ORT"],
                                                        medians["static ORT"])
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# ONNX Runtime stages vs MXNet stages for the ops kept out of engines (CPU path)


@dataclass
class ResidualCase:
    """One model compiled twice: ops kept out of engines in ONNX Runtime stages (the default,
    ``residual="onnxruntime"``) and in MXNet stages (``residual="mxnet"``)."""

    name: str
    ort: Path
    mxnet: Path
    feeds: Optional[Dict[str, np.ndarray]] = None
    compile_s: Optional[Dict[str, float]] = None


def residual_cases(models: Sequence[str], out_dir: Path,
                   exclude_ops: Sequence[str] = ()) -> List[ResidualCase]:
    """Export each model once (zoo: batch 1, seeded random weights; issue-10 models: their
    families.py export, gated on real-looking inputs where they have them) and compile it with
    each ``residual`` setting, everything else equal."""
    import time

    from trtc import CompileSettings, compile
    from trtc.zoo import export_example

    cases = []
    for name in models:
        _say(f"residual {name}: exporting")
        feeds = verify = None
        if name in FAMILY_MODELS:
            fam = families_module()
            params = fam.MODELS[name](out_dir)
            feeds = fam.random_inputs(name, 0)  # verify_inputs_<name> where it exists
            if getattr(fam, f"verify_inputs_{name}", None) is not None:
                verify = out_dir / f"{name}-verify.npz"
                np.savez(verify, **feeds)
        else:
            _, params = export_example(name, out_dir)
        bundles: Dict[str, Path] = {}
        seconds: Dict[str, float] = {}
        for residual in RESIDUAL_SETTINGS:
            bundle = out_dir / f"{name}-residual-{residual}.trtb"
            _say(f"residual {name}: compiling {bundle.name} (residual={residual})")
            start = time.perf_counter()
            compile(CompileSettings(params=params, output=bundle, verify_inputs=verify,
                                    residual=residual, exclude_ops=tuple(exclude_ops)),
                    progress=None)
            seconds[residual] = round(time.perf_counter() - start, 2)
            bundles[residual] = bundle
        cases.append(ResidualCase(name, bundles["onnxruntime"], bundles["mxnet"], feeds,
                                  seconds))
    return cases


def _stage_counts(manifest: Mapping[str, Any]) -> Dict[str, int]:
    kinds = [s["kind"] for s in manifest.get("stages", [])]
    return {kind: kinds.count(kind) for kind in ("engine", "onnx", "residual")}


def _stages_text(counts: Mapping[str, int]) -> str:
    """'3E+1O' (3 engine stages, 1 ONNX Runtime stage; M: MXNet stages)."""
    return "+".join(f"{counts[k]}{letter}" for k, letter in
                    (("engine", "E"), ("onnx", "O"), ("residual", "M")) if counts.get(k))


def stage_split_ms(model: Any, feeds: Dict[str, np.ndarray], calls: int,
                   warmup: int = 1) -> Optional[Dict[str, float]]:
    """Where a CPU-path call spends its time: the median over ``calls`` calls of the time in
    each stage kind ('engine', 'onnx', 'residual'), in ms, timed stage by stage as
    ``Model.run`` chains them (``model.stages`` in the manifest's order; input validation and
    output dict not included). Not interleaved: an explanation of the table's totals, not a
    contender. None where the model's stages cannot be walked (a different runtime layout)."""
    import time

    try:
        kinds = [s["kind"] for s in model.manifest["stages"]]
        stages = list(model.stages)
        if len(stages) != len(kinds):
            return None
        per_kind: Dict[str, List[float]] = {k: [] for k in set(kinds)}
        for i in range(warmup + calls):
            tensors: Dict[str, Any] = model.validate_inputs(feeds)
            spent = dict.fromkeys(per_kind, 0.0)
            for kind, stage in zip(kinds, stages):
                start = time.perf_counter()
                tensors.update(stage.run(tensors))
                spent[kind] += time.perf_counter() - start
            if i >= warmup:
                for kind, seconds in spent.items():
                    per_kind[kind].append(seconds * 1e3)
        return {kind: float(np.median(values)) for kind, values in per_kind.items()}
    except Exception as exc:  # a measurement of ours, not the runtime's: say so, go on
        _say(f"stage split not measured: {type(exc).__name__}: {str(exc)[:200]}")
        return None


def residual_row(case: ResidualCase, rounds: int, warmup: int,
                 iterations: Optional[int]) -> Dict[str, Any]:
    """The two bundles of ``case`` on the CPU path, on the same inputs, alternating round by
    round: ORT-stage bundle / MXNet-stage bundle, with the time each spends outside engines."""
    from trtc.runtime import load

    ort_model = load(case.ort, device="cpu")
    mx_model = load(case.mxnet, device="cpu")
    feeds = case.feeds if case.feeds is not None else bundle_feeds(ort_model, 1)
    feeds = {n: np.ascontiguousarray(v, dtype=ort_model.inputs[n].dtype)
             for n, v in feeds.items()}
    want = mx_model(**feeds)
    got = ort_model(**feeds)
    diff = [_max_relative(got[n], want[n]) for n in mx_model.outputs]
    _say(f"residual {case.name}: ORT-stage vs MXNet-stage outputs, max relative difference: "
         + ", ".join(f"{d:.2g}" for d in diff))
    calls: Dict[str, Call] = {"ORT stages": lambda: ort_model(**feeds),
                              "MXNet stages": lambda: mx_model(**feeds)}
    n = iterations_per_round(calls, iterations)
    _say(f"residual {case.name}: {rounds} rounds of "
         + ", ".join(f"{count} {name}" for name, count in n.items()) + " calls")
    medians = interleaved_medians(calls, rounds, warmup, n)
    ratios = [a / b for a, b in zip(medians["ORT stages"], medians["MXNet stages"])]
    ratio = paired_ratio(medians["ORT stages"], medians["MXNet stages"])
    split_calls = max(MIN_ITERATIONS, min(n.values()))
    ort_split = stage_split_ms(ort_model, feeds, split_calls)
    mx_split = stage_split_ms(mx_model, feeds, split_calls)
    ort_counts = _stage_counts(ort_model.manifest)
    mx_counts = _stage_counts(mx_model.manifest)
    requires = {which: bool(m.manifest.get("requires", {}).get("mxnet"))
                for which, m in (("onnxruntime", ort_model), ("mxnet", mx_model))}
    return {
        "model": case.name, "batch": 1, "rounds": rounds, "iterations": n,
        "stages_ort": ort_counts, "stages_mxnet": mx_counts,
        "ort_needs_mxnet": requires["onnxruntime"], "mxnet_needs_mxnet": requires["mxnet"],
        "ort_ms": statistics.median(medians["ORT stages"]),
        "mxnet_ms": statistics.median(medians["MXNet stages"]),
        "ort_vs_mxnet": ratio, "ort_vs_mxnet_rounds": ratios,
        "verdict": residual_verdict(ratio, ratios),
        # time outside engines: ONNX Runtime stages of the one, MXNet stages of the other
        "ort_split_ms": ort_split, "mxnet_split_ms": mx_split,
        "outside_ort_ms": None if ort_split is None else ort_split.get("onnx", 0.0)
        + ort_split.get("residual", 0.0),
        "outside_mxnet_ms": None if mx_split is None else mx_split.get("onnx", 0.0)
        + mx_split.get("residual", 0.0),
        "ort_vs_mxnet_max_rel": diff, "compile_s": case.compile_s,
    }


def residual_verdict(ratio: float, rounds: Sequence[float]) -> str:
    """'ok': the median ratio is within the goal; 'noise': it is not, but some round's ratio
    is (the rounds straddle the goal); 'over': every round is over."""
    if ratio <= RESIDUAL_GOAL:
        return "ok"
    return "noise" if min(rounds) <= RESIDUAL_GOAL else "over"


def residual_table(rows: List[Dict[str, Any]]) -> str:
    lines = [f"{'residual model':<30}{'stages ORT':>11}{'stages MX':>11}{'ORT-stage ms':>14}"
             f"{'MX-stage ms':>13}{'ORT/MX':>8}{'rounds':>14}{'outside ORT':>13}"
             f"{'outside MX':>12}{'max rel diff':>14}  goal ORT/MX <= {RESIDUAL_GOAL}"]
    for row in rows:
        spread = row["ort_vs_mxnet_rounds"]
        worst = max(row["ort_vs_mxnet_max_rel"]) if row["ort_vs_mxnet_max_rel"] else 0.0
        lines.append(f"{row['model']:<30}{_stages_text(row['stages_ort']):>11}"
                     f"{_stages_text(row['stages_mxnet']):>11}{row['ort_ms']:>14.2f}"
                     f"{row['mxnet_ms']:>13.2f}{row['ort_vs_mxnet']:>8.3f}"
                     f"{f'{min(spread):.2f}-{max(spread):.2f}':>14}"
                     f"{_num(row['outside_ort_ms']):>13}{_num(row['outside_mxnet_ms']):>12}"
                     f"{worst:>14.1e}  {row['verdict']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# GPU path


def gpu_unavailable_reason(bundle_path: Optional[Path]) -> Optional[str]:
    """Why the GPU path cannot run ``bundle_path`` (or, with None, any bundle built here)."""
    from trtc.runtime import cuda
    from trtc.runtime.stages.engine_cuda import runtime_unavailable_reason

    reason = cuda.gpu_unavailable_reason(0)
    if reason:
        return reason
    if bundle_path is not None:
        from trtc.runtime.bundle import read_bundle
        from trtc.runtime.model import select_device

        return select_device(read_bundle(bundle_path), "auto")[1]
    major, minor = cuda.compute_capability(0)
    backend = "tensorrt" if importlib.util.find_spec("tensorrt") else "tensorrt_rtx"
    return runtime_unavailable_reason(backend, f"{major}.{minor}")


class BareLoop:
    """The engines of a bundle run by hand: buffers bound once, nothing else per call.

    A dynamic bundle's engines have -1 on the axes that vary: buffers are sized for the
    manifest's ``max_shape`` of each tensor (what trtc's GPU path does too), and each context's
    input shapes are set once, here, to those of ``feeds`` (every call of a timing gets the same
    arrays; trtc sets them only when they change, so neither side pays per call). Copies move
    the bytes of the actual shapes, read back from the contexts."""

    def __init__(self, bundle: Any, feeds: Dict[str, np.ndarray]):
        from trtc.runtime import cuda
        from trtc.runtime.stages.engine_cuda import import_backend

        cuda.set_device(0)
        self.stream = cuda.Stream()
        self.contexts: List[Any] = []
        self.device: Dict[str, Any] = {}
        self.host: Dict[str, Any] = {}
        self.shapes: Dict[str, tuple] = {n: tuple(v.shape) for n, v in feeds.items()}
        self._keep: List[Any] = []
        specs = _tensor_specs(bundle.manifest)
        for stage in bundle.engine_stages:
            trt = import_backend(stage["backend"])
            logger = trt.Logger(trt.Logger.ERROR)
            runtime = trt.Runtime(logger)
            engine = runtime.deserialize_cuda_engine(bundle.read_member(stage["engine"]))
            context = engine.create_execution_context()
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            for name in names:
                if engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
                    continue
                shape = self.shapes.get(name) or tuple(specs[name]["shape"])
                if -1 in tuple(engine.get_tensor_shape(name)):
                    if not context.set_input_shape(name, shape):
                        raise RuntimeError(f"the engine refuses shape {shape} for '{name}'")
            for name in names:
                if name not in self.device:
                    largest = tuple(engine.get_tensor_shape(name))
                    if -1 in largest:
                        spec = specs[name]
                        largest = tuple(spec.get("max_shape") or spec["shape"])
                    dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
                    self.host[name] = cuda.PinnedBuffer(largest, dtype)
                    self.device[name] = cuda.DeviceBuffer(self.host[name].nbytes)
                if engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
                    self.shapes[name] = tuple(int(d) for d in context.get_tensor_shape(name))
                context.set_tensor_address(name, self.device[name].ptr)
            self._keep += [logger, runtime, engine]
            self.contexts.append(context)
        self.inputs = list(feeds)
        self.outputs = [t["name"] for t in bundle.manifest["outputs"]]
        self.views = {n: self.host[n].view(self.shapes[n]) for n in [*self.inputs, *self.outputs]}

    def numpy_call(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        stream = self.stream
        views = self.views
        for name in self.inputs:
            view = views[name]
            np.copyto(view, feeds[name])
            stream.copy_h2d(self.device[name].ptr, self.host[name].ptr, view.nbytes)
        self.device_call()
        for name in self.outputs:
            stream.copy_d2h(self.host[name].ptr, self.device[name].ptr, views[name].nbytes)
        stream.synchronize()
        return {name: views[name].copy() for name in self.outputs}

    def device_call(self, sync: bool = False) -> None:
        for context in self.contexts:
            context.execute_async_v3(self.stream.ptr)
        if sync:
            self.stream.synchronize()


def _tensor_specs(manifest: Mapping[str, Any]) -> Dict[str, Mapping[str, Any]]:
    """Every tensor of a manifest (model inputs and outputs, stage tensors) by name."""
    specs: Dict[str, Mapping[str, Any]] = {}
    for stage in manifest.get("stages", []):
        for t in [*stage.get("inputs", []), *stage.get("outputs", [])]:
            specs.setdefault(t["name"], t)
    for t in [*manifest["inputs"], *manifest["outputs"]]:
        specs[t["name"]] = t
    return specs


def gpu_rows(case: Case, rounds: int, warmup: int,
             iterations: Optional[int]) -> List[Dict[str, Any]]:
    """numpy and device rows, with and without CUDA graphs; [] for bundles with MXNet stages."""
    from trtc.runtime import load
    from trtc.runtime.bundle import read_bundle
    from trtc.runtime.dlpack import DeviceArray

    bundle = read_bundle(case.bundle)
    if bundle.residual_stages:
        _say(f"GPU {case.name}: skipped: it has residual (MXNet) stages; the bare loop compares "
             "engine-only bundles")
        return []
    graphed = load(case.bundle, device="cuda")
    eager = load(case.bundle, device="cuda", cuda_graph=False)
    feeds = case.feeds if case.feeds is not None else bundle_feeds(graphed, case.batch)
    bare = BareLoop(bundle, feeds)
    gpu_feeds = {}
    for name, value in feeds.items():
        array = DeviceArray.empty(value.shape, value.dtype, 0)
        bare.stream.copy_h2d(array.ptr, value.ctypes.data, value.nbytes)
        gpu_feeds[name] = array
    bare.stream.synchronize()

    groups = {
        "numpy": {"bare": lambda: bare.numpy_call(feeds), "graph": lambda: graphed(**feeds),
                  "no graph": lambda: eager(**feeds)},
        "device": {"bare": lambda: bare.device_call(sync=True),
                   "graph": lambda: graphed(output="device", **gpu_feeds),
                   "no graph": lambda: eager(output="device", **gpu_feeds)},
    }
    rows = []
    for io, calls in groups.items():
        n = iterations_per_round(calls, iterations)
        _say(f"GPU {case.name} batch {case.batch} {io}: {rounds} rounds of "
             + ", ".join(f"{count} {name}" for name, count in n.items()) + " calls")
        medians = interleaved_medians(calls, rounds, warmup, n)
        for label in ("graph", "no graph"):
            rows.append({
                "model": case.name, "batch": case.batch, "mode": f"{io}, {label}",
                "rounds": rounds, "iterations": n,
                "bare_ms": statistics.median(medians["bare"]),
                "trtc_ms": statistics.median(medians[label]),
                "ratio": paired_ratio(medians[label], medians["bare"]),
            })
    return rows


# ---------------------------------------------------------------------------------------------
# report


def _num(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _not_measured(message: str, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"cpu": [], "gpu": [], "dynamic": [], "residual": [],
                          "not_measured": message}, indent=1))
    else:
        print(f"runtime: not measured: {message}")
    return 0


def cpu_table(rows: List[Dict[str, Any]]) -> str:
    lines = [f"{'model':<20}{'batch':>6}{'trtc ms':>11}{'ORT ms':>11}{'MXNet ms':>11}"
             f"{'samples/s':>11}{'trtc/ORT':>10}{'trtc/MXNet':>12}  {'goal':<5}"
             f"{'whole ORT ms':>14}{'trtc/whole':>12}  goal trtc/ORT <= {CPU_GOAL}, "
             f"trtc/whole <= {WHOLE_GOAL}"]
    for row in rows:
        verdict = "-" if row["trtc_vs_ort"] is None else (
            "ok" if row["trtc_vs_ort"] <= CPU_GOAL else "over")
        whole = row.get("trtc_vs_whole_ort")
        whole_verdict = "" if whole is None else ("ok" if whole <= WHOLE_GOAL else "over")
        lines.append(f"{row['model']:<20}{row['batch']:>6}{_num(row['trtc_ms']):>11}"
                     f"{_num(row['ort_ms']):>11}{_num(row['mxnet_ms']):>11}"
                     f"{row['samples_per_s']:>11.1f}{_num(row['trtc_vs_ort']):>10}"
                     f"{_num(row['trtc_vs_mxnet']):>12}  {verdict:<5}"
                     f"{_num(row.get('whole_ort_ms')):>14}{_num(whole):>12}  {whole_verdict}")
    return "\n".join(lines)


def gpu_table(rows: List[Dict[str, Any]]) -> str:
    lines = [f"{'model':<20}{'batch':>6}  {'mode':<18}{'bare ms':>10}{'trtc ms':>10}"
             f"{'ratio':>8}  goal <= {GPU_GOAL}"]
    for row in rows:
        lines.append(f"{row['model']:<20}{row['batch']:>6}  {row['mode']:<18}"
                     f"{row['bare_ms']:>10.3f}{row['trtc_ms']:>10.3f}{row['ratio']:>8.3f}  "
                     f"{'ok' if row['ratio'] <= GPU_GOAL else 'over'}")
    return "\n".join(lines)


def dynamic_table(rows: List[Dict[str, Any]]) -> str:
    lines = [f"{'dynamic model':<20}{'batch':>6}{'range':>8}{'static ms':>11}{'dynamic ms':>12}"
             f"{'static/s':>10}{'dynamic/s':>11}{'dyn/static':>12}{'ORT dyn/static':>16}  "
             f"goal dyn/static <= {DYNAMIC_GOAL}"]
    for row in rows:
        ratio = row["dynamic_vs_static"]
        lines.append(f"{row['model']:<20}{row['batch']:>6}{row['range']:>8}"
                     f"{row['static_ms']:>11.3f}{row['dynamic_ms']:>12.3f}"
                     f"{row['static_samples_per_s']:>10.1f}{row['dynamic_samples_per_s']:>11.1f}"
                     f"{ratio:>12.3f}{_num(row['ort_dynamic_vs_static']):>16}  "
                     f"{'ok' if ratio <= DYNAMIC_GOAL else 'over'}")
    return "\n".join(lines)


def _batches(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 1,8, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes like 1,8, got {text!r}")
    return values


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="*", type=Path,
                        help="time these bundles (no MXNet column) instead of zoo models")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help="zoo architectures or issue-10 models (" + ",".join(FAMILY_MODELS)
                             + "), comma-separated (default: %(default)s)")
    parser.add_argument("--inputs", type=Path, default=None,
                        help="FILE.npz: the inputs to feed given BUNDLEs (arrays by input name; "
                             "default: made from the bundle's input specs)")
    parser.add_argument("--batches", type=_batches, default=list(DEFAULT_BATCHES),
                        help="batch sizes, one bundle each (default: 1,8)")
    parser.add_argument("--rounds", type=int, default=6,
                        help="rounds; 6 runs 3 contenders in every order (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed calls per contender and round (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=None,
                        help=f"timed calls per contender and round (default: each contender's "
                             f"calls in about {ROUND_SECONDS:g} s)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="cpu: CPU table; cuda: GPU table; auto: both, the GPU one where it "
                             "can run (default)")
    parser.add_argument("--dynamic", type=_batches, nargs="?", default=None,
                        const=list(DYNAMIC_BATCHES), metavar="BATCHES",
                        help="also time one dynamic bundle per zoo model (batch 1..max) against "
                             "static bundles at these batches (default: "
                             + ",".join(map(str, DYNAMIC_BATCHES)) + "), on the CPU path")
    parser.add_argument("--dynamic-only", action="store_true",
                        help="the dynamic table alone (implies --dynamic)")
    parser.add_argument("--residual-compare", nargs="?", default=None,
                        const=",".join(RESIDUAL_MODELS), metavar="MODELS",
                        help="also compile each of these models twice, ops kept out of engines "
                             "in ONNX Runtime stages (default) and in MXNet stages (--residual "
                             "mxnet), and time both on the CPU path, alternating (default: "
                             + ",".join(RESIDUAL_MODELS) + ")")
    parser.add_argument("--residual-only", action="store_true",
                        help="the residual table alone (implies --residual-compare)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {QUICK_MODEL}, batch 1, 3 rounds of 3 calls; the "
                             "dynamic table at batches "
                             + ",".join(map(str, QUICK_DYNAMIC_BATCHES)) + "; with "
                             "--residual-compare/--residual-only: the residual table for "
                             f"{QUICK_MODEL} with its {', '.join(QUICK_RESIDUAL_EXCLUDE)} "
                             "excluded from its engine")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
    parser.add_argument("--out", type=Path, default=None,
                        help="keep exported models and bundles here (default: a temp directory)")
    args = parser.parse_args(argv)
    if args.dynamic_only and args.dynamic is None:
        args.dynamic = list(DYNAMIC_BATCHES)
    if args.quick:
        args.models, args.batches, args.rounds, args.warmup = QUICK_MODEL, [1], 3, 1
        args.iterations = args.iterations or 3
        if args.dynamic is not None or args.device != "cuda":  # a GPU-only smoke: no table
            args.dynamic = list(QUICK_DYNAMIC_BATCHES)
    if args.dynamic_only and args.bundles:
        parser.error("--dynamic-only compiles zoo models; it takes no BUNDLE")
    if args.residual_only and (args.bundles or args.dynamic_only):
        parser.error("--residual-only compiles models and prints the residual table alone; it "
                     "takes no BUNDLE nor --dynamic-only")
    if args.residual_only and args.residual_compare is None:
        args.residual_compare = ",".join(RESIDUAL_MODELS)
    residual_exclude: Sequence[str] = ()
    if args.quick and args.residual_compare is not None:
        args.residual_compare, residual_exclude = QUICK_MODEL, QUICK_RESIDUAL_EXCLUDE
    if args.residual_only:
        args.dynamic = None
    if args.rounds < 1 or args.warmup < 0 or (args.iterations is not None and args.iterations < 1):
        parser.error("--rounds and --iterations must be >= 1, --warmup >= 0")

    result: Dict[str, Any] = {"cpu": [], "gpu": [], "gpu_not_measured": None, "dynamic": [],
                              "dynamic_not_measured": None, "residual": [],
                              "residual_not_measured": None}
    if not args.bundles and importlib.util.find_spec("mxnet") is None:
        return _not_measured("no bundle given, and MXNet, needed to export and compile the zoo "
                             "models, is not installed", args.json)
    gpu_reason = None
    if args.dynamic_only or args.residual_only:
        args.device = "cpu"
    elif args.device != "cpu":
        gpu_reason = gpu_unavailable_reason(args.bundles[0] if args.bundles else None)
        if gpu_reason and args.device == "cuda":
            return _not_measured(f"GPU path: {gpu_reason}", args.json)

    with tempfile.TemporaryDirectory(prefix="trtc-bench-") as tmp:
        out_dir = args.out or Path(tmp)
        models = [m for m in args.models.split(",") if m]
        if args.bundles:
            cases = [bundle_case(path, args.inputs) for path in args.bundles]
        elif args.dynamic_only or args.residual_only:
            cases = []
        else:
            cases = zoo_cases(models, args.batches, out_dir)
        if args.device != "cuda":
            result["cpu"] = [cpu_row(c, args.rounds, args.warmup, args.iterations) for c in cases]
        if args.dynamic and args.bundles:
            result["dynamic_not_measured"] = ("given bundles: the dynamic table compiles a "
                                              "dynamic and static bundles from a zoo model")
            _say(f"dynamic table not measured: {result['dynamic_not_measured']}")
        elif args.dynamic and args.device == "cuda":
            result["dynamic_not_measured"] = "the dynamic table times the CPU path"
        elif args.dynamic:
            static = {(c.name, c.batch): c for c in cases if c.symbol is not None
                      and c.name not in FAMILY_MODELS}
            for dyn in dynamic_cases(models, args.dynamic, out_dir, static):
                result["dynamic"] += dynamic_rows(dyn, args.rounds, args.warmup, args.iterations)
        if args.residual_compare is not None and args.bundles:
            result["residual_not_measured"] = ("given bundles: the residual table compiles each "
                                               "model with both --residual settings")
            _say(f"residual table not measured: {result['residual_not_measured']}")
        elif args.residual_compare is not None and args.device == "cuda":
            result["residual_not_measured"] = "the residual table times the CPU path"
        elif args.residual_compare is not None:
            names = [m for m in args.residual_compare.split(",") if m]
            for rc in residual_cases(names, out_dir, residual_exclude):
                result["residual"].append(residual_row(rc, args.rounds, args.warmup,
                                                       args.iterations))
        if args.device != "cpu" and not gpu_reason:
            for case in cases:
                reason = gpu_unavailable_reason(case.bundle)
                if reason:
                    _say(f"GPU {case.name} batch {case.batch}: not measured: {reason}")
                    gpu_reason = reason
                    continue
                result["gpu"] += gpu_rows(case, args.rounds, args.warmup, args.iterations)
    result["gpu_not_measured"] = gpu_reason

    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    if result["cpu"]:
        print(f"CPU path (ONNX Runtime){'' if args.bundles else ', fp32'}: median of "
              f"{args.rounds} rounds, contenders alternating; ms per call; ORT: the bundle's "
              "own ONNX (bundles without MXNet stages), whole ORT: one mxnet.onnx export of the whole "
              "model")
        print(cpu_table(result["cpu"]))
    if result["gpu"]:
        print(f"GPU path (TensorRT){'' if args.bundles else ', fp32'}: median of "
              f"{args.rounds} rounds; ms per call")
        print(gpu_table(result["gpu"]))
    elif gpu_reason and args.device != "cpu":
        print(f"GPU path not measured: {gpu_reason}")
    if result["dynamic"]:
        print(f"Dynamic vs static bundles, CPU path (ONNX Runtime), fp32: median of "
              f"{args.rounds} rounds, contenders alternating; ms per call, samples/s; one dynamic "
              "bundle per model against a static bundle of each batch; ORT dyn/static: bare "
              "ORT on each bundle's ONNX")
        print(dynamic_table(result["dynamic"]))
    elif result["dynamic_not_measured"]:
        print(f"Dynamic table not measured: {result['dynamic_not_measured']}")
    if result["residual"]:
        print(f"ONNX Runtime stages vs MXNet stages for the ops kept out of engines, CPU path, "
              f"fp32, batch 1: each model compiled with --residual onnxruntime (default) and "
              f"--residual mxnet; median of {args.rounds} rounds, the two alternating; ms per "
              "call; ORT/MX: median of the per-round ratios, rounds: their range; stages: E "
              "engine (its ONNX on ONNX Runtime here), O ONNX Runtime, M MXNet; outside: ms "
              "per call in the O (ORT bundle) or M (MX bundle) stages, timed stage by stage; "
              "max rel diff: the two bundles' outputs; ok: ratio <= goal, noise: some round "
              "within it, over: none")
        print(residual_table(result["residual"]))
    elif result["residual_not_measured"]:
        print(f"Residual table not measured: {result['residual_not_measured']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
