"""Op coverage across model architectures: how much of each model trtc puts into TensorRT.

    python benchmarks/coverage.py [--models resnet18_v1,wavenet,bert | --all | --quick]
                                  [--out docs/coverage.md] [--json] [--timeout 1200] [--keep DIR]

Two sources of models:

- ``trtc.zoo`` architectures (``resnet18_v1``, ``yolo3_darknet53_voc``, ...), exported with
  seeded random weights (activations normalized, see ``trtc.zoo.normalize_activations``);
- the issue-10 and issue-22 families of ``tests/models/families.py`` (``bert``, ``bert_small``,
  ``ssd_mobilenet``, ``faster_rcnn``, ``yolo3``, ``center_net``, ``video``, ``ops_block``,
  ``reused_block``; recurrent, attention, segmentation, instance segmentation and action
  recognition nets: ``lm_standard``, ``lm_awd``, ``bigru_classifier``, ``gru_encoder``,
  ``transformer_encoder``, ``self_attention``, ``psp``, ``deeplab``, ``fastscnn``,
  ``mask_rcnn``, ``i3d``, ``slowfast``, ``c3d``, ``tsn_vgg16``), exported with
  ordinary initialization (Xavier; BERT Normal(0.02)) and, where the module has a
  ``verify_inputs_<name>``, gated on those real-looking inputs (``--verify-inputs``: token ids,
  token types and valid lengths for BERT) instead of the gate's own random ones.

Each is compiled at fp32 with the Python API, accuracy gate on. Every model runs in a fresh subprocess (``--one NAME``, internal): memory of a
large model is released before the next, and a crash (segfault) or a hang is reported as that
model's failure instead of ending the run. Failures are listed with their error, never hidden.

Each is compiled with the default ``residual="onnxruntime"`` (``--residual onnxruntime``): ops
TensorRT's engines cannot take run in ONNX Runtime stages wherever they have an exact ONNX, and
only the rest in MXNet stages.

Per model: MXNet ops in total, in TensorRT engines, in ONNX Runtime stages and in MXNet stages,
the number of engines, whether the bundle needs MXNet at run time (the manifest's
``requires.mxnet``; the goal is "no" for every model), why ops stayed out of engines (reason codes
of the partition report, with the op types and where they run: ``-> ORT`` or ``-> MXNet``), the
worst fp32 error against MXNet's forward on the model outputs and on the tensors crossing a stage
boundary, compile time and bundle size; below the table, every op that runs in MXNet with the
compiler's reason why not in ONNX Runtime. The table is printed as it goes (progress on stderr) and written as
markdown to ``--out``; ``--json`` prints the rows as JSON instead of the table.

``--quick``: two small models (a smoke test for CI, under a minute).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from a checkout without `pip install -e`
    sys.path.insert(0, str(REPO))

FAMILIES_FILE = REPO / "tests" / "models" / "families.py"

# The issue-10 test models (tests/models/families.py MODELS): name -> family label.
FAMILY_MODELS = {
    "bert": "BERT-base (GluonNLP)",
    "bert_small": "BERT, 2 layers (GluonNLP)",
    "ssd_mobilenet": "SSD-512 MobileNet (detection)",
    "faster_rcnn": "Faster R-CNN (detection)",
    "yolo3": "YOLOv3 MobileNet (detection)",
    "center_net": "CenterNet ResNet-18 (detection)",
    "video": "R(2+1)D (video)",
    "ops_block": "LayerNorm/reduce/Embedding block",
    "reused_block": "reused block (duplicate names)",
    # issue 22: families no earlier test named
    "lm_standard": "LSTM language model (GluonNLP StandardRNN)",
    "lm_awd": "AWD-LSTM language model (GluonNLP AWDRNN)",
    "bigru_classifier": "biGRU text classifier, SequenceMask",
    "gru_encoder": "GRU seq2seq encoder (GNMT-style)",
    "transformer_encoder": "Transformer encoder (GluonNLP), valid_length",
    "self_attention": "multi-head self-attention (hand-written)",
    "psp": "PSPNet ResNet-50 (segmentation)",
    "deeplab": "DeepLabV3 ResNet-50 (segmentation)",
    "fastscnn": "Fast-SCNN (segmentation)",
    "mask_rcnn": "Mask R-CNN ResNet-18 (instance segmentation)",
    "i3d": "I3D ResNet-50 (video)",
    "slowfast": "SlowFast 4x16 ResNet-50 (video)",
    "c3d": "C3D (video)",
    "tsn_vgg16": "TSN VGG-16 (video, UCF101)",
    # families a new-user trial found gaps in (session 7)
    "hrnet_seg": "HRNet-W18-small segmentation (BilinearResize2D 'like')",
    "mobilenetv3": "MobileNetV3-small (hard-swish, SE)",
}

# One or two per family; the whole list takes about 15 minutes on a 2-core CPU-only machine
# (the zoo part about 10, BERT-base and Faster R-CNN about 1.5 each).
DEFAULT_MODELS = (
    "resnet18_v1", "resnet50_v2", "mobilenet1.0", "mobilenetv2_1.0", "squeezenet1.1",
    "densenet121", "inceptionv3", "alexnet", "vgg11_bn", "wavenet",
    "yolo3_darknet53_voc", "yolo3_mobilenet1.0_voc", "ssd_300_vgg16_atrous_voc",
    "fcn_resnet50_voc", "simple_pose_resnet18_v1b", "center_net_resnet18_v1b_voc",
    "bert", "ssd_mobilenet", "faster_rcnn", "yolo3", "center_net", "video", "ops_block",
    "reused_block",
    "lm_standard", "lm_awd", "bigru_classifier", "gru_encoder", "transformer_encoder",
    "self_attention", "psp", "deeplab", "fastscnn", "mask_rcnn", "i3d", "slowfast", "c3d",
    "tsn_vgg16", "hrnet_seg", "mobilenetv3",
)
QUICK_MODELS = ("resnet18_v1", "squeezenet1.1", "ops_block")
DEFAULT_OUT = REPO / "docs" / "coverage.md"
DEFAULT_TIMEOUT_S = 1200  # per model, export + compile + verify

# name prefix -> family, most specific first
FAMILIES = (
    ("resnet", "ResNet"), ("vgg", "VGG"), ("alexnet", "AlexNet"), ("densenet", "DenseNet"),
    ("squeezenet", "SqueezeNet"), ("inception", "Inception"), ("mobilenetv2", "MobileNetV2"),
    ("mobilenet", "MobileNet"), ("wavenet", "WaveNet (audio)"),
    ("yolo3", "YOLOv3 (detection)"), ("ssd", "SSD (detection)"),
    ("center_net", "CenterNet (detection)"), ("fcn", "FCN (segmentation)"),
    ("deeplab", "DeepLab (segmentation)"), ("simple_pose", "SimplePose (pose)"),
)

COLUMNS = (
    ("model", "a `trtc.zoo` architecture (`trtc example NAME`), or, in *italics*, an issue-10 "
              "test model of `tests/models/families.py`"),
    ("family", "architecture family"),
    ("input", "input shapes (batch 1), with the dtype where it is not float32"),
    ("ops", "MXNet op nodes in the model"),
    ("in engines", "op nodes compiled into TensorRT engines"),
    ("in ONNX Runtime", "op nodes kept out of engines that run in ONNX Runtime stages (their "
                        "exact ONNX, on the CPU and GPU paths alike)"),
    ("in MXNet", "op nodes that run in MXNet stages (no exact ONNX for them, or their ONNX "
                 "Runtime stage failed the accuracy gate)"),
    ("engines", "TensorRT engine segments"),
    ("runtime needs MXNet", "the bundle's `requires.mxnet`: whether `trtc.runtime` imports MXNet "
                            "to run it (goal: no for every model)"),
    ("kept out of engines because", "reason codes of the partition report: count, reason (op "
                                    "types) and where those ops run: `-> ORT` (an ONNX Runtime "
                                    "stage) or `-> MXNet` (an MXNet stage)"),
    ("output err", "worst fp32 error on the model outputs: max |trtc - MXNet| / max |MXNet|, "
                   "CPU path (ONNX Runtime running each engine's ONNX) against MXNet's forward, "
                   "end to end; `s` after it: an output downstream of a discontinuous op "
                   "(box_nms, topk, argmax...), compared order-insensitively (sorted values); "
                   "`ties` after it: such an output differs by tie order/selection, which the "
                   "gate does not count; `const` after it: the outputs are bit-identical for two "
                   "different inputs (the activations vanish before the outputs with these "
                   "weights), so the error says nothing about accuracy"),
    ("boundary err", "the same, worst over the tensors crossing a stage boundary ('-': one stage; "
                     "`ties` as above)"),
    ("engine err", "worst fp32 error of an engine run on MXNet's own values of its inputs (the "
                   "gate's local check: the engine's own error, free of its predecessors' noise)"),
    ("compile s", "`compile()` wall time: load, partition, ONNX export, engine build, verify, "
                  "write (the model's export from Gluon is not included)"),
    ("bundle MB", "size of the .trtb bundle"),
)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def family(name: str) -> str:
    if name in FAMILY_MODELS:
        return FAMILY_MODELS[name]
    for prefix, label in FAMILIES:
        if name.startswith(prefix):
            return label
    return "other"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {line}" if line else type(error).__name__


EXECUTOR = {"onnxruntime": "ORT", "mxnet": "MXNet"}  # Decision.runs_in -> the table's word


def reasons_summary(decisions: Sequence[Any]) -> str:
    """'3 parser_rejected (tile, where) -> ORT, 1 onnx_export_differs (_contrib_box_nms) -> MXNet'
    from the report's decisions: one entry per reason code and executor, the most frequent
    first."""
    def key(d: Any) -> tuple:
        return d.reason, getattr(d, "runs_in", "mxnet")

    counts: Counter = Counter(key(d) for d in decisions)
    ops: Dict[tuple, set] = {}
    for d in decisions:
        ops.setdefault(key(d), set()).add(d.op)
    return ", ".join(
        f"{n} {reason} ({', '.join(sorted(ops[(reason, runs_in)]))}) -> "
        f"{EXECUTOR.get(runs_in, runs_in)}"
        for (reason, runs_in), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def mxnet_ops_detail(decisions: Sequence[Any]) -> List[Dict[str, str]]:
    """Every op that runs in an MXNet stage: node, op type, reason code and why not in ONNX
    Runtime (the compiler's words)."""
    return [{"node": d.node, "op": d.op, "reason": d.reason,
             "why_not_onnxruntime": getattr(d, "mxnet_reason", "") or ""}
            for d in decisions if getattr(d, "runs_in", "mxnet") == "mxnet"]


REASON_CODES = (  # code -> what it means, in the order the doc lists them
    ("no_onnx_converter", "mxnet.onnx has no converter for the op"),
    ("onnx_export_failed", "its converter raised"),
    ("onnx_export_differs", "mxnet.onnx warns its ONNX computes something else"),
    ("random_op", "it draws random numbers (only MXNet's draws match MXNet's)"),
    ("parser_rejected", "TensorRT's ONNX parser refused it"),
    ("build_failed", "its segment did not build"),
    ("below_min_segment_size", "its engine segment was smaller than `--min-segment-size`"),
    ("excluded", "`--exclude-op`"),
)


def reason_codes_text() -> str:
    """The reason codes and where each sends its op, from trtc's own ``Reason.HAS_ONNX``
    (codes that leave an exact ONNX: such an op runs in an ONNX Runtime stage)."""
    try:
        from trtc.partition import Reason

        has_onnx = set(Reason.HAS_ONNX)
    except Exception:  # an older trtc: the codes as of this script
        has_onnx = {"parser_rejected", "build_failed", "below_min_segment_size", "excluded"}
    text = "; ".join(f"`{code}` {what}" for code, what in REASON_CODES) + ". "
    ort = [f"`{c}`" for c, _ in REASON_CODES if c in has_onnx]
    mx = [f"`{c}`" for c, _ in REASON_CODES if c not in has_onnx]
    return (text + f"With {', '.join(mx)} the op runs in MXNet (`-> MXNet`: no exact ONNX "
            f"of it); with {', '.join(ort)} it has an exact ONNX and runs in an ONNX Runtime "
            "stage (`-> ORT`) unless that stage fails the accuracy gate (then in MXNet).")


def _worst(values: List[float]) -> Optional[float]:
    return max(values) if values else None


# ---------------------------------------------------------------------------------------------
# one model (runs in the child process)


def families_module() -> Any:
    """tests/models/families.py, imported by path (it is not a package of the install)."""
    import importlib.util

    module = sys.modules.get("trtc_test_families")
    if module is None:
        spec = importlib.util.spec_from_file_location("trtc_test_families", FAMILIES_FILE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


# which optional package each issue-10 model is built with
_NEEDS = {"bert": "gluonnlp", "bert_small": "gluonnlp", "ssd_mobilenet": "gluoncv",
          "faster_rcnn": "gluoncv", "yolo3": "gluoncv", "center_net": "gluoncv",
          "video": "gluoncv", "lm_standard": "gluonnlp", "lm_awd": "gluonnlp",
          "transformer_encoder": "gluonnlp", "psp": "gluoncv", "deeplab": "gluoncv",
          "fastscnn": "gluoncv", "mask_rcnn": "gluoncv", "i3d": "gluoncv", "slowfast": "gluoncv",
          "c3d": "gluoncv", "tsn_vgg16": "gluoncv", "hrnet_seg": "gluoncv",
          "mobilenetv3": "gluoncv"}


def export_model(name: str, work_dir: Path) -> Dict[str, Any]:
    """Export ``name`` into ``work_dir``.

    Returns:
        ``params`` (the .params path), ``verify_inputs`` (an .npz of real-looking inputs, or
        None: the gate's random ones), ``input`` (shapes) and ``dtypes`` (their dtypes); or
        ``skipped`` (a reason) when the package the model is built with does not import.
    """
    package = _NEEDS.get(name)
    if package is None and name not in FAMILY_MODELS:
        from trtc.zoo import GLUONCV_MODELS

        package = "gluoncv" if name in GLUONCV_MODELS else None
    if package is not None:
        try:
            __import__(package)
        except Exception as exc:  # ImportError, or a numpy/mxnet mismatch inside the package
            name_ = {"gluoncv": "GluonCV", "gluonnlp": "GluonNLP"}[package]
            return {"skipped": f"{name_} is not importable ({_first_line(exc)})"}
    if name not in FAMILY_MODELS:
        from trtc.zoo import default_shape, export_example

        _, params = export_example(name, work_dir)
        shape = list(default_shape(name))
        return {"params": params, "verify_inputs": None, "input": [shape], "dtypes": ["float32"]}
    import numpy as np

    fam = families_module()
    params = fam.MODELS[name](work_dir)
    specs = fam.input_specs(name)
    verify = None
    make = getattr(fam, f"verify_inputs_{name}", None)
    if make is not None:
        verify = work_dir / f"{name}-verify.npz"
        np.savez(verify, **make(0))
    return {"params": params, "verify_inputs": verify,
            "input": [list(shape) for shape, _ in specs.values()],
            "dtypes": [dtype for _, dtype in specs.values()]}


def measure(name: str, work_dir: Path) -> Dict[str, Any]:
    """Export ``name`` (from the zoo or tests/models/families.py) and compile it; the row of
    the table.

    Returns:
        A dict with ``ok`` True and the columns, ``skipped`` (a reason) when GluonCV/GluonNLP is
        missing, or ``ok`` False with ``error`` (its first line) and, where the partition got
        that far, the op counts.
    """
    row: Dict[str, Any] = {"model": name, "family": family(name), "ok": False,
                           "source": "families" if name in FAMILY_MODELS else "zoo"}
    from trtc import CompileSettings, TrtcError, compile

    start = time.perf_counter()
    try:
        exported = export_model(name, work_dir)
    except Exception as exc:
        row["error"] = f"export failed: {_first_line(exc)}"
        return row
    if "skipped" in exported:
        row["skipped"] = exported["skipped"]
        return row
    row["input"], row["input_dtypes"] = exported["input"], exported["dtypes"]
    row["verify_inputs"] = "real-looking" if exported["verify_inputs"] else "random"
    row["export_s"] = round(time.perf_counter() - start, 2)
    output = work_dir / f"{name}.trtb"
    start = time.perf_counter()
    try:
        result = compile(CompileSettings(params=exported["params"], output=output,
                                         verify_inputs=exported["verify_inputs"]),
                         progress=None)
    except TrtcError as exc:
        row["error"] = _first_line(exc)
        row["compile_s"] = round(time.perf_counter() - start, 2)
        report = getattr(exc, "report", None)
        if report is not None:
            row.update(_report_columns(report))
        return row
    except Exception as exc:  # not a TrtcError: a trtc bug, reported as such
        row["error"] = f"unexpected {_first_line(exc)}"
        row["compile_s"] = round(time.perf_counter() - start, 2)
        return row
    row.update(_report_columns(result.report))
    manifest = result.manifest or {}
    if manifest.get("inputs"):
        row["input"] = [i["shape"] for i in manifest["inputs"]]
        row["input_dtypes"] = [i.get("dtype", "float32") for i in manifest["inputs"]]
    requires = manifest.get("requires") or {}
    row["needs_mxnet"] = bool(requires.get("mxnet", row["mxnet_ops"] > 0))
    row["mxnet_op_types"] = list(requires.get("mxnet_ops") or [])
    row.update(_check_columns(result.checks, manifest))
    try:
        row["input_independent"] = outputs_ignore_input(name, output)
    except Exception as exc:  # a measurement of ours, not trtc's result: say so, go on
        _say(f"{name}: could not check whether the outputs depend on the input: "
             f"{_first_line(exc)}")
    row.update({
        "ok": True,
        "compile_s": round(result.timings["total"], 2),
        "timings_s": {k: round(v, 2) for k, v in result.timings.items()},
        "bundle_mb": round(output.stat().st_size / 1e6, 2),
    })
    return row


def _two_inputs(name: str, model: Any) -> List[Dict[str, Any]]:
    import numpy as np

    if name in FAMILY_MODELS:
        fam = families_module()
        return [fam.random_inputs(name, seed) for seed in (0, 1)]
    feeds = []
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        feeds.append({n: rng.random(spec.shape).astype(spec.dtype)
                      for n, spec in model.inputs.items()})
    return feeds


def outputs_ignore_input(name: str, bundle: Path) -> bool:
    """Does the bundle give bit-identical outputs for two different inputs? Then the model's
    activations vanish (or saturate) before its outputs and the error columns say nothing about
    accuracy: every contender computes the same constants."""
    import numpy as np

    from trtc.runtime import load

    model = load(bundle, device="cpu")
    a, b = (model(**feeds) for feeds in _two_inputs(name, model))
    return all(np.array_equal(a[k], b[k]) for k in a)


def _check_columns(checks: Sequence[Any], manifest: Dict[str, Any]) -> Dict[str, Any]:
    """The error columns from the gate's checks: end-to-end outputs and boundaries, and the
    engines' local checks (each on MXNet's own inputs)."""
    outputs = {o["name"] for o in manifest.get("outputs", [])}

    def is_boundary(c: Any) -> bool:
        kind = getattr(c, "kind", None)
        return kind == "boundary" if kind is not None else c.name not in outputs

    e2e = [c for c in checks if getattr(c, "scope", "end_to_end") == "end_to_end"]
    local = [c for c in checks if getattr(c, "scope", "end_to_end") == "local"]
    model_outputs = [c for c in e2e if not is_boundary(c)]
    boundary = [c for c in e2e if is_boundary(c)]
    return {
        "output_err": _worst([float(c.relative) for c in model_outputs]),
        "output_sorted": any(getattr(c, "order_insensitive", False) for c in model_outputs),
        "output_ties": sum(1 for c in model_outputs if not c.ok),  # not ok, not blocking
        "after": sorted({c.after for c in e2e if getattr(c, "after", "")}),
        "boundary_err": _worst([float(c.relative) for c in boundary]),
        "boundary_ties": sum(1 for c in boundary if not c.ok),  # not ok, not blocking
        "boundary_tensors": len(boundary),
        "engine_err": _worst([float(c.relative) for c in local]),
    }


def _report_columns(report: Any) -> Dict[str, Any]:
    return {
        "total_ops": report.total_ops,
        "engine_ops": report.engine_ops,
        "residual_ops": report.residual_ops,  # outside engines: ONNX Runtime + MXNet
        "onnx_ops": report.ops_in("onnx"),
        "mxnet_ops": report.ops_in("residual"),
        "engines": len(report.engine_segments),
        "onnx_stages": report.stages_of("onnx"),
        "mxnet_stages": report.stages_of("residual"),
        "reasons": reasons_summary(report.decisions),
        "mxnet_decisions": mxnet_ops_detail(report.decisions),
    }


def run_one_here(name: str, work_dir: Path) -> int:
    """``--one``: measure one model and print its row as JSON, the only thing on stdout (native
    libraries' prints to fd 1 are sent to stderr meanwhile)."""
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        try:
            row = measure(name, work_dir)
        except Exception as exc:  # whatever escaped measure() is still this model's failure
            row = {"model": name, "family": family(name), "ok": False,
                   "error": f"unexpected {_first_line(exc)}"}
        sys.stdout.flush()
    finally:
        os.dup2(real_stdout, 1)
        os.close(real_stdout)
    print(json.dumps(row), flush=True)
    return 0


def run_one(name: str, work_dir: Path, timeout_s: float) -> Dict[str, Any]:
    """Measure ``name`` in a fresh Python process; a crash or a timeout is a failed row."""
    work_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", name,
           "--work-dir", str(work_dir)]
    failed: Dict[str, Any] = {"model": name, "family": family(name), "ok": False}
    start = time.perf_counter()
    # the child's stderr goes to a file: MXNet and TensorRT can print a lot, and a full pipe
    # would block the child
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True,
                                start_new_session=True)
        try:
            stdout, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the child's own process group only
            proc.communicate()
            failed["error"] = f"timed out after {timeout_s:g} s"
            return failed
        log.seek(0)
        tail = [l.strip() for l in log.read().splitlines() if l.strip()]
    lines = [l for l in stdout.splitlines() if l.strip()]
    if proc.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    if proc.returncode < 0:
        try:
            what = signal.Signals(-proc.returncode).name
        except ValueError:
            what = f"signal {-proc.returncode}"
        failed["error"] = f"crashed ({what}) after {time.perf_counter() - start:.0f} s"
    else:
        failed["error"] = f"exited with status {proc.returncode}"
    if tail:
        failed["error"] += f"; last stderr line: {tail[-1][:300]}"
    return failed


# ---------------------------------------------------------------------------------------------
# table


def _err(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1e}"


def _shape(shape: Any, dtypes: Optional[Sequence[str]] = None) -> str:
    if shape and isinstance(shape[0], list):
        dtypes = list(dtypes or []) + ["float32"] * len(shape)
        return ", ".join(_shape(s) + ("" if d == "float32" else f" {d}")
                         for s, d in zip(shape, dtypes))
    return "x".join(str(d) for d in shape) if shape else "?"


def _output_err(row: Dict[str, Any]) -> str:
    text = _err(row.get("output_err"))
    if row.get("input_independent"):
        text = f"{text} const"
    if row.get("output_ties"):
        return f"{text} ties"
    if row.get("output_sorted"):
        return f"{text} s"
    return text


def _model_cell(row: Dict[str, Any]) -> str:
    name = f"`{row['model']}`"
    return f"*{name}*" if row.get("source") == "families" or row["model"] in FAMILY_MODELS \
        else name


def table_header() -> str:
    names = [c for c, _ in COLUMNS]
    return "| " + " | ".join(names) + " |\n|" + "|".join(
        "---:" if c in ("ops", "in engines", "in ONNX Runtime", "in MXNet", "engines",
                        "output err", "boundary err", "engine err", "compile s", "bundle MB")
        else "---" for c in names) + "|"


def _needs_mxnet(row: Dict[str, Any]) -> str:
    if not row.get("needs_mxnet"):
        return "no"
    ops = row.get("mxnet_op_types") or sorted({d["op"] for d in row.get("mxnet_decisions", [])})
    return "**yes**" + (f" ({', '.join(ops)})" if ops else "")


def table_row(row: Dict[str, Any]) -> str:
    cells = [_model_cell(row), row["family"], _shape(row.get("input"), row.get("input_dtypes")),
             str(row["total_ops"]), str(row["engine_ops"]), str(row["onnx_ops"]),
             str(row["mxnet_ops"]), str(row["engines"]), _needs_mxnet(row),
             row["reasons"] or "-", _output_err(row),
             _err(row["boundary_err"]) + (" ties" if row.get("boundary_ties") else ""),
             _err(row.get("engine_err")),
             f"{row['compile_s']:.1f}", f"{row['bundle_mb']:.1f}"]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def failure_line(row: Dict[str, Any]) -> str:
    counts = ""
    if "total_ops" in row:
        counts = (f" (partition: {row['engine_ops']}/{row['total_ops']} ops in "
                  f"{row['engines']} engine(s), {row.get('onnx_ops', 0)} in ONNX Runtime, "
                  f"{row.get('mxnet_ops', 0)} in MXNet; "
                  f"{row['reasons'] or 'nothing kept out of engines'})")
    return f"- `{row['model']}` ({row['family']}): {row['error']}{counts}"


def totals(rows: List[Dict[str, Any]], wall_s: float) -> Dict[str, Any]:
    ok = [r for r in rows if r.get("ok")]
    total_ops = sum(r["total_ops"] for r in ok)
    engine_ops = sum(r["engine_ops"] for r in ok)
    return {
        "onnx_ops": sum(r.get("onnx_ops", 0) for r in ok),
        "mxnet_ops": sum(r.get("mxnet_ops", 0) for r in ok),
        "models_needing_mxnet": [r["model"] for r in ok if r.get("needs_mxnet")],
        "models_ok": len(ok),
        "models_failed": sum(1 for r in rows if not r.get("ok") and not r.get("skipped")),
        "models_skipped": sum(1 for r in rows if r.get("skipped")),
        "ops": total_ops,
        "engine_ops": engine_ops,
        "engine_ops_pct": round(100.0 * engine_ops / total_ops, 1) if total_ops else None,
        "compile_s": round(sum(r.get("compile_s", 0.0) for r in rows), 1),
        "wall_s": round(wall_s, 1),
    }


def totals_line(t: Dict[str, Any]) -> str:
    pct = "n/a" if t["engine_ops_pct"] is None else f"{t['engine_ops_pct']:.1f}%"
    skipped = f", {t['models_skipped']} skipped" if t["models_skipped"] else ""
    needing = t["models_needing_mxnet"]
    return (f"**Totals:** {t['models_ok']} models ok, {t['models_failed']} failed{skipped}; "
            f"{t['engine_ops']} of {t['ops']} MXNet ops in TensorRT engines ({pct}, models ok), "
            f"{t['onnx_ops']} in ONNX Runtime stages, {t['mxnet_ops']} in MXNet stages; "
            f"models needing MXNet at run time: {len(needing)} of {t['models_ok']}"
            + (f" ({', '.join(needing)})" if needing else "")
            + f"; compile time {t['compile_s']:.1f} s (whole run {t['wall_s']:.0f} s with "
            f"export and process start-up)")


def mxnet_section(rows: List[Dict[str, Any]]) -> List[str]:
    """Markdown lines: every op of the table's models that runs in MXNet, with why."""
    lines = ["## Ops that run in MXNet", ""]
    found = [(r, d) for r in rows if r.get("ok") for d in r.get("mxnet_decisions", [])]
    if not found:
        return lines + ["None: no bundle in the table needs MXNet at run time."]
    for row, d in found:
        why = d["why_not_onnxruntime"] or "no reason given"
        lines.append(f"- `{row['model']}`: {d['node']} (`{d['op']}`), {d['reason']}; not in "
                     f"ONNX Runtime because: {why}")
    stray = [r["model"] for r in rows if r.get("ok") and r.get("needs_mxnet")
             and not r.get("mxnet_decisions")]
    if stray:
        lines.append("- needing MXNet with no op in an MXNet stage (residual params only): "
                     + ", ".join(f"`{m}`" for m in stray))
    return lines


def _load_average() -> float:
    try:
        return round(os.getloadavg()[0], 1)
    except OSError:  # not on this platform
        return 0.0


def load_note(t: Dict[str, Any], cpus: Optional[int]) -> str:
    """' Timings were taken on a loaded machine (...).' when other work competed for the CPUs
    (a 1-minute load average above the cores' count while the models ran), else ''."""
    peak = t.get("load_max")
    if peak is None or not cpus or peak <= cpus:
        return ""
    return (f" Timings were taken on a loaded machine (other jobs ran alongside: 1-minute load "
            f"average up to {peak:g} on {cpus} cores as models started); compile times are "
            "longer than on an idle one.")


def machine() -> Dict[str, str]:
    """What the header says about where the numbers come from."""
    info = {"cpus": str(os.cpu_count()), "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(), "builder": "not installed"}
    try:
        with open("/proc/cpuinfo") as f:
            names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    except OSError:
        pass
    info["gpu"] = "no GPU"
    if shutil.which("nvidia-smi"):
        try:
            found = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                   capture_output=True, text=True, timeout=30).stdout.split("\n")
            names = sorted({n.strip() for n in found if n.strip()})
            if names:
                info["gpu"] = "GPU " + ", ".join(names)
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        from trtc.backends import get_backend

        backend = get_backend("auto")
        info["builder"] = f"{backend.name} {backend.version}"
    except Exception:
        pass
    return info


def markdown(rows: List[Dict[str, Any]], command: str, started: datetime.datetime,
             t: Dict[str, Any]) -> str:
    from trtc import __version__

    m = machine()
    lines = [
        "# Model coverage",
        "",
        f"Produced by `{command}` on {started:%Y-%m-%d} (UTC): trtc {__version__}, "
        f"{m['builder']}, fp32, `--residual onnxruntime` (the default), accuracy gate on; machine: {m['cpus']} CPU cores "
        f"({m['cpu']}), {m['gpu']}, Python {m['python']}." + load_note(t, os.cpu_count()),
        "",
        "Every model is compiled with `trtc.compile()` at fp32, each in a fresh process, from "
        "one of two sources. **`trtc.zoo` architectures** (`trtc example NAME`): seeded random "
        "weights (seed 0), activations normalized to an RMS of 1 layer by layer as trained "
        "models' are (`trtc.zoo.normalize_activations`). **Test models of issues 10 and 22** (in *italics*;"
        " `tests/models/families.py`: GluonNLP BERT, language models and Transformer encoder, "
        "GluonCV detectors, segmentation and video nets, hand-written recurrent and attention "
        "blocks, at small input sizes, with "
        "ordinary `Xavier()` initialization (BERT: `Normal(0.02)`)): "
        "what a user gets from `net.initialize()`, not rescaled. The errors are the accuracy "
        "gate's: trtc's CPU path (ONNX Runtime running each engine's ONNX and the ONNX Runtime "
        "stages, MXNet the MXNet stages, if any) against MXNet's own forward pass, on one seeded random input, except "
        "where the model has real-looking inputs (`verify_inputs_NAME` of families.py, given as "
        "`--verify-inputs`: " + (", ".join(f"`{r['model']}`" for r in rows
                                         if r.get("verify_inputs") == "real-looking") or "none")
        + "). Random weights exercise every op but say nothing of trained accuracy.",
        "",
        "Columns:",
        "",
    ]
    lines += [f"- **{name}**: {text}" for name, text in COLUMNS]
    lines += ["", "Reason codes (`trtc compile` prints the same report): " + reason_codes_text(),
              ""]
    ok = [r for r in rows if r.get("ok")]
    if ok:
        lines += [table_header()] + [table_row(r) for r in ok] + [""]
    lines += [totals_line(t), ""]
    lines += mxnet_section(rows) + [""]
    failed = [r for r in rows if not r.get("ok") and not r.get("skipped")]
    lines += ["## Failures", ""]
    lines += [failure_line(r) for r in failed] or ["None."]
    skipped = [r for r in rows if r.get("skipped")]
    if skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- `{r['model']}`: {r['skipped']}" for r in skipped]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--models", default=None,
                       help="zoo architectures and issue-10 models (" + ",".join(FAMILY_MODELS)
                            + "), comma-separated (default: one or two per family: "
                            + ",".join(DEFAULT_MODELS) + ")")
    which.add_argument("--all", action="store_true",
                       help="every model of trtc.zoo and every issue-10 model")
    which.add_argument("--quick", action="store_true",
                       help=f"smoke test: {', '.join(QUICK_MODELS)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="markdown report to write (default: docs/coverage.md in the checkout)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds per model before it counts as failed (default: %(default)s)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the exported models and bundles here (default: deleted)")
    parser.add_argument("--one", metavar="NAME", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:
        return run_one_here(args.one, args.work_dir or Path(tempfile.mkdtemp(prefix="trtc-cov-")))

    from trtc.zoo import available_models

    if args.all:
        models = list(available_models()) + list(FAMILY_MODELS)
    elif args.quick:
        models = list(QUICK_MODELS)
    elif args.models:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
    else:
        models = list(DEFAULT_MODELS)
    known = list(available_models()) + list(FAMILY_MODELS)
    unknown = [m for m in models if m not in known]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from: " + ", ".join(known))
    if args.timeout <= 0:
        parser.error("--timeout must be positive")

    command = "python benchmarks/coverage.py" + "".join(
        f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))
    started = datetime.datetime.now(datetime.timezone.utc)
    start = time.perf_counter()
    rows: List[Dict[str, Any]] = []
    loads: List[float] = []  # the 1-minute load average as each model starts
    if not args.json:
        print(table_header(), flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="trtc-coverage-"))
    try:
        for i, name in enumerate(models, 1):
            loads.append(_load_average())
            _say(f"[{i}/{len(models)}] {name} ...")
            work_dir = (args.keep or scratch) / name
            row = run_one(name, work_dir, args.timeout)
            rows.append(row)
            if args.keep is None:
                shutil.rmtree(work_dir, ignore_errors=True)
            if row.get("ok"):
                _say(f"[{i}/{len(models)}] {name}: {row['engine_ops']}/{row['total_ops']} ops in "
                     f"{row['engines']} engine(s), {row['onnx_ops']} in ONNX Runtime, "
                     f"{row['mxnet_ops']} in MXNet (runtime needs MXNet: "
                     f"{'yes' if row['needs_mxnet'] else 'no'}), compiled in "
                     f"{row['compile_s']:.1f} s")
                if not args.json:
                    print(table_row(row), flush=True)
            elif row.get("skipped"):
                _say(f"[{i}/{len(models)}] {name}: skipped: {row['skipped']}")
            else:
                _say(f"[{i}/{len(models)}] {name}: FAILED: {row['error']}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    t = totals(rows, time.perf_counter() - start)
    t["load_max"] = max(loads) if loads else None
    if args.json:
        print(json.dumps({"rows": rows, "totals": t}, indent=1))
    else:
        print()
        print(totals_line(t))
        for row in rows:
            if not row.get("ok") and not row.get("skipped"):
                print(failure_line(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows, command, started, t))
    _say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
