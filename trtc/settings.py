"""CompileSettings: every option of `trtc compile`, one field per CLI flag."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

from . import _defaults

__all__ = ["CompileSettings"]


@dataclass
class CompileSettings:
    """Options of one compilation. The CLI flags of `trtc compile` map one-to-one onto these.

    Attributes:
        params: the MXNet ``PREFIX-0000.params`` file.
        symbol: the ``PREFIX-symbol.json`` file (default: found by MXNet's naming convention).
        inputs: input name -> shape; overrides the shapes recorded in the symbol. A dimension
            given as a ``(min, max)`` tuple makes the bundle take any size in that range on that
            axis (``--input data:1..32x3x224x224``).
        opt_shapes: input name -> the shape engines are tuned for (``--opt-shape``; default:
            the symbol's recorded shape when inside the range, else the max).
        input_dtypes: input name -> dtype ('int32', 'float16', ...); overrides the symbol's
            ``__dtype__`` (default float32). ``--input NAME:DIMS:DTYPE`` sets both.
        output: the bundle to write (default: ``PREFIX.trtb`` beside the params).
        fp16: build fp16 engines (inputs and outputs stay float32).
        backend: 'auto' (tensorrt if importable, else tensorrt_rtx), 'tensorrt' or 'tensorrt_rtx'.
        exclude_ops: MXNet op names to keep in MXNet.
        min_segment_size: engine segments with fewer MXNet ops stay in MXNet.
        require_full: fail unless the whole model goes into TensorRT.
        dry_run: partition and print the report; build nothing, write nothing.
        verify: run the accuracy gate before writing the bundle.
        tolerance: accuracy-gate tolerance (default by precision, see _defaults).
        compute_capabilities: target GPUs like ('8.6',) (TensorRT-RTX; default: its defaults).
        imports: Python modules or .py files to import first (e.g. registering MXNet custom ops).
        seed: seed of the accuracy gate's random inputs.
        verify_inputs: an .npz of real inputs for the accuracy gate (arrays by input name; an
            extra leading axis holds several samples).
        strict_verify: fail the accuracy gate (not only warn) when its comparison proves little:
            a float output all zeros on every gate input, or the same for two different inputs
            (e.g. a sequence-length input that masked everything).
        allow_nonfinite_weights: compile a model whose weights hold NaN/Inf (else a UsageError).
        sign_key: an Ed25519 private key (PEM) to sign the bundle with.
        keep_fp32: with fp16, op types (``softmax``) or node names kept in fp32 inside the
            engines, on top of the layers trtc keeps automatically (reported).
        int8: int8 engines by explicit (Q/DQ) quantization; needs ``calibration``.
        calibration: a directory of .npy/.npz files or one .npz of representative inputs.
        calibration_method: 'minmax' (default), 'entropy' or 'percentile'.
        target: which execution paths the bundle carries: 'all' (default: engines and their
            ONNX), 'gpu' (engines only; verified on the ONNX first) or 'cpu' (ONNX only; no
            TensorRT needed to compile or run).
        strip_weights: build weight-stripped engines (TensorRT's ``STRIP_PLAN``): every weight
            stored once, in the ONNX the CPU path runs, refitted into the engines at load. Needs
            a builder that can (TensorRT-RTX: an NVIDIA GPU on the build machine).
        residual: where the ops kept out of engines run: 'onnxruntime' (default: ONNX Runtime
            stages wherever an exact ONNX exists and passes the accuracy gate, MXNet only for
            the rest) or 'mxnet' (every such op in MXNet stages, as before).
    """

    params: Path
    symbol: Optional[Path] = None
    inputs: Dict[str, Tuple[int, ...]] = field(default_factory=dict)
    input_dtypes: Dict[str, str] = field(default_factory=dict)
    opt_shapes: Dict[str, Tuple[int, ...]] = field(default_factory=dict)
    output: Optional[Path] = None
    fp16: bool = False
    backend: str = "auto"
    exclude_ops: Tuple[str, ...] = ()
    min_segment_size: int = _defaults.MIN_SEGMENT_SIZE
    require_full: bool = False
    dry_run: bool = False
    verify: bool = True
    tolerance: Optional[float] = None
    compute_capabilities: Tuple[str, ...] = ()
    imports: Tuple[str, ...] = ()
    seed: int = _defaults.VERIFY_SEED
    verify_inputs: Optional[Path] = None
    strict_verify: bool = False
    allow_nonfinite_weights: bool = False
    sign_key: Optional[Path] = None
    keep_fp32: Tuple[str, ...] = ()
    int8: bool = False
    calibration: Optional[Path] = None
    calibration_method: str = "minmax"
    target: str = "all"
    strip_weights: bool = False
    residual: str = "onnxruntime"

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else ("fp16" if self.fp16 else "fp32")

    @property
    def effective_tolerance(self) -> float:
        if self.tolerance is not None:
            return self.tolerance
        if self.int8:
            return _defaults.INT8_TOLERANCE
        return _defaults.FP16_TOLERANCE if self.fp16 else _defaults.FP32_TOLERANCE
