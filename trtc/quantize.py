"""INT8 by explicit quantization: each engine segment's ONNX gets QuantizeLinear/DequantizeLinear
pairs (ONNX Runtime's ``quantize_static`` in QDQ format), calibrated on the segment's own inputs
as MXNet computes them from the user's calibration data. TensorRT builds int8 kernels from the
Q/DQ ONNX (implicit calibration is deprecated); the CPU path runs the very same Q/DQ ONNX.

What TensorRT requires and trtc therefore asks for: symmetric int8 (zero points 0), per-channel
weights, per-tensor activations, only Conv/Gemm/MatMul inputs quantized, biases left in float
(an int32 bias DequantizeLinear is refused by TensorRT's parser).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .runtime.errors import UsageError

__all__ = ["METHODS", "load_calibration", "quantize_segment", "int8_layers", "INT8_OPS"]

METHODS = ("minmax", "entropy", "percentile")
INT8_OPS = ("Conv", "Gemm", "MatMul")


def load_calibration(graph: Any, path: Path,
                     notes: Optional[List[str]] = None) -> List[Dict[str, np.ndarray]]:
    """Calibration samples from ``path``: a directory of ``.npy`` (single-input models, one sample
    each) / ``.npz`` files (arrays by input name; an extra leading axis holds several samples), or
    one ``.npz``. At least one sample; every input present with its shape.

    Raises:
        UsageError: no such path, no usable file, a missing input, a wrong shape.
    """
    from .frontend import path_problem
    from .verify import load_verify_inputs

    path = Path(path)
    problem = None if path.is_dir() else path_problem(path)
    if problem:
        problem = ": no such file or directory" if problem == "does not exist" else f" {problem}"
        raise UsageError(f"--calibration {path}{problem} (a directory of .npy/.npz files or one "
                         ".npz, arrays by input name)")
    files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy")) if path.is_dir() else [path]
    if not files:
        raise UsageError(f"--calibration {path}: no .npy or .npz file in it")
    samples: List[Dict[str, np.ndarray]] = []
    for file in files:
        if path_problem(file):  # a FIFO named x.npz would block the read forever
            raise UsageError(f"--calibration {file} {path_problem(file)}")
        first = len(samples)
        if file.suffix == ".npy":
            if len(graph.inputs) != 1:
                raise UsageError(f"--calibration {file.name}: a .npy holds one array, but the model has "
                                 f"{len(graph.inputs)} inputs; use .npz files with arrays by input name")
            try:
                array = np.load(file, allow_pickle=False)
            except Exception as exc:
                raise UsageError(f"--calibration {file.name}: not a readable .npy ({str(exc)[:100]})") from None
            with tempfile.TemporaryDirectory() as tmp:
                np.savez(os.path.join(tmp, "one.npz"), **{graph.inputs[0][0]: array})
                samples.extend(load_verify_inputs(graph, Path(tmp) / "one.npz", flag="--calibration",
                                                  notes=notes))
        else:
            samples.extend(load_verify_inputs(graph, file, flag="--calibration", notes=notes))
        _check_finite(samples[first:], file)
    return samples


def _check_finite(samples: Sequence[Mapping[str, np.ndarray]], file: Path) -> None:
    """Calibration data must be finite: a NaN/Inf makes every range it touches NaN/Inf, which
    ONNX Runtime's calibrators fail on ("scale issue", "range ... is not finite")."""
    for number, sample in enumerate(samples, 1):
        for name, value in sample.items():
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                bad = int(value.size - np.isfinite(value).sum())
                where = f"sample {number} of {len(samples)} in" if len(samples) > 1 else "the sample in"
                raise UsageError(f"--calibration: {where} {file.name}, input '{name}', holds {bad} "
                                 "NaN/Inf value(s); calibration data must be finite: fix or drop "
                                 "that sample")


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]]):
        self._items = iter([dict(f) for f in feeds])

    def get_next(self) -> Any:
        return next(self._items, None)

    def rewind(self) -> None:  # not needed by quantize_static
        pass


def quantize_segment(model: Any, feeds: Sequence[Mapping[str, np.ndarray]], method: str = "minmax") -> Any:
    """The Q/DQ int8 version of a segment's fp32 ONNX ``model``, calibrated on ``feeds`` (the
    segment's input tensors, by name). Returns an onnx ModelProto."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    for number, feed in enumerate(feeds, 1):  # finite model inputs, yet NaN/Inf inside MXNet
        for name, value in feed.items():
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise UsageError(f"--calibration sample {number}: MXNet's forward computes NaN/Inf "
                                 f"in '{name}' from it (an input of an int8 engine); calibration "
                                 "data must keep the model finite: check its scale and "
                                 "normalization")
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" hints; trtc reports what matters
    try:
        with tempfile.TemporaryDirectory(prefix="trtc-int8-") as tmp:
            source, target = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
            onnx.save(model, source)
            # its entropy/percentile calibrators print() their progress: not on trtc's stdout
            # (the Python API's caller's) nor on stderr; trtc says what it is doing itself
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_static(source, target, _Reader(feeds), quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=list(INT8_OPS), per_channel=True,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                calibrate_method=calibrate,
                                extra_options={"ActivationSymmetric": True,
                                               "WeightSymmetric": True, "QuantizeBias": False},
                                calibration_providers=["CPUExecutionProvider"])
            quantized = onnx.load(target)
    except (AssertionError, ValueError) as exc:  # "scale issue", "range ... is not finite"
        if not re.search(r"scale|finite|nan|inf", str(exc), re.I):
            raise
        raise UsageError(f"--calibration: ONNX Runtime's int8 calibration found no finite range "
                         f"inside the model ({str(exc)[:80]}): the calibration data drives "
                         "activations to NaN/Inf; check its scale and normalization") from None
    finally:
        root.setLevel(level)
    # the Q/DQ nodes keep the provenance of the layer they belong to (parser errors map back)
    producer = {o: n.name for n in model.graph.node for o in n.output}
    for node in quantized.graph.node:
        if "#" not in node.name and node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            source_node = producer.get(node.input[0].rsplit("_QuantizeLinear", 1)[0], "")
            tag = source_node.rsplit("#", 1)[0] if "#" in source_node else "node"
            node.name = f"{tag}#q{node.name}"
    return quantized


def int8_layers(model: Any) -> List[str]:
    """The MXNet nodes whose Conv/Gemm/MatMul run in int8 (their weights are Q/DQ-quantized)."""
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    layers = []
    for node in model.graph.node:
        if node.op_type in INT8_OPS and any(i in dq_outputs for i in node.input):
            tag = node.name.rsplit("#", 1)[0] if "#" in node.name else ""
            if tag and tag not in layers:
                layers.append(tag)
    return layers
