"""CompileSettings: every option of `trtc compile`, one field per CLI flag."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from . import _defaults
from .runtime.errors import UsageError

__all__ = ["CompileSettings", "checked_settings", "check_compute_capabilities"]


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


# CompileSettings fields by the kind of value they take (checked_settings).
_PATH_FIELDS = ("params",)
_OPTIONAL_PATH_FIELDS = ("symbol", "output", "verify_inputs", "sign_key", "calibration")
_BOOL_FIELDS = ("fp16", "require_full", "dry_run", "verify", "strict_verify",
                "allow_nonfinite_weights", "int8", "strip_weights")
_STR_FIELDS = ("backend", "calibration_method", "target", "residual")
_STR_LIST_FIELDS = ("exclude_ops", "compute_capabilities", "imports", "keep_fp32")
_INT_FIELDS = ("min_segment_size", "seed")


def checked_settings(settings: CompileSettings) -> CompileSettings:
    """Every field of ``settings`` of the type it takes, normalized: a str path made a Path, a
    list a tuple, numpy ints ints, shapes checked as ``--input`` checks them. The Python API
    builds CompileSettings without the CLI's parsing; a wrong type here is a UsageError naming
    the field, not a TypeError minutes later.

    Returns:
        A normalized copy (``settings`` itself is not changed).

    Raises:
        UsageError: the field, its value and what it takes.
    """
    import numpy as np

    from .frontend import DTYPES, check_shape

    if not isinstance(settings, CompileSettings):
        raise UsageError(f"expected a CompileSettings, got {type(settings).__name__}")

    def bad(name: str, what: str) -> UsageError:
        value = getattr(settings, name)
        return UsageError(f"CompileSettings.{name}={value!r:.80}: expected {what}")

    values: Dict[str, Any] = {}
    for name in _PATH_FIELDS + _OPTIONAL_PATH_FIELDS:
        value = getattr(settings, name)
        if value is None and name in _OPTIONAL_PATH_FIELDS:
            continue
        if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
            raise bad(name, "a file path (str or Path)")
        values[name] = Path(value)
    for name in _BOOL_FIELDS:
        if not isinstance(getattr(settings, name), (bool, np.bool_)):
            raise bad(name, "True or False")
        values[name] = bool(getattr(settings, name))
    for name in _STR_FIELDS:
        if not isinstance(getattr(settings, name), str):
            raise bad(name, f"a string like {getattr(_DEFAULTS, name)!r}")
    for name in _STR_LIST_FIELDS:
        value = getattr(settings, name)
        if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) \
                or not all(isinstance(v, str) for v in value):
            raise bad(name, f"a tuple of strings, like {getattr(_EXAMPLES, name)!r}")
        values[name] = tuple(value)
    for name in _INT_FIELDS:
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise bad(name, f"an integer like {getattr(_DEFAULTS, name)!r}")
        values[name] = int(value)
    tolerance = settings.tolerance
    if tolerance is not None:
        if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) \
                or not 0 < float(tolerance) < math.inf:
            raise bad("tolerance", "a positive number, or None for the precision's default")
        values["tolerance"] = float(tolerance)
    for name, ranges in (("inputs", True), ("opt_shapes", False)):
        shapes = getattr(settings, name)
        if not isinstance(shapes, Mapping) or not all(isinstance(k, str) for k in shapes):
            raise bad(name, "a dict input name -> shape, like {'data': (1, 3, 224, 224)}")
        values[name] = {k: check_shape(k, v, ranges, f"CompileSettings.{name}")
                        for k, v in shapes.items()}
    dtypes = settings.input_dtypes
    if not isinstance(dtypes, Mapping) or not all(isinstance(k, str) for k in dtypes):
        raise bad("input_dtypes", "a dict input name -> dtype, like {'ids': 'int32'}")
    values["input_dtypes"] = {}
    for key, dtype in dtypes.items():
        try:  # numpy's dtypes too: np.float16, np.dtype("int32")
            name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
        except TypeError:
            name = None
        if name not in DTYPES:
            raise UsageError(f"CompileSettings.input_dtypes: {dtype!r:.40} for '{key[:80]}' is not a "
                             f"dtype trtc takes; use one of {', '.join(DTYPES)}")
        values["input_dtypes"][key] = name
    return dataclasses.replace(settings, **values)


_DEFAULTS = CompileSettings(params=Path("model-0000.params"))
_EXAMPLES = CompileSettings(params=Path("model-0000.params"), exclude_ops=("Pooling",),
                            compute_capabilities=("8.6",), imports=("my_ops",),
                            keep_fp32=("softmax",))


# Full TensorRT records the targets and builds hardware-compatible engines (AMPERE_PLUS): 8.0 on.
_TENSORRT_COMPUTE_CAPABILITIES = ((8, 0), (12, 9))


def check_compute_capabilities(values: Sequence[str], backend: str) -> None:
    """Each --compute-capability is MAJOR.MINOR (ASCII digits) and one the builder can target:
    TensorRT-RTX's own list (its ComputeCapability enum), or 8.0 to 12.x for full TensorRT.

    Raises:
        UsageError: the first value that is not, and what the builder takes.
    """
    for cc in values:
        if not isinstance(cc, str) or not re.fullmatch(r"[0-9]{1,2}\.[0-9]", cc):
            raise UsageError(f"--compute-capability {cc!r}: expected MAJOR.MINOR like 8.6")
    if not values:
        return
    from .backends import get_backend

    builder = get_backend(backend)
    if builder.name == "tensorrt_rtx":
        valid = _rtx_compute_capabilities(builder.trt)
        for cc in values:
            if cc not in valid:
                raise UsageError(f"--compute-capability {cc}: TensorRT-RTX {builder.version} "
                                 f"builds for {', '.join(valid)}")
        return
    low, high = _TENSORRT_COMPUTE_CAPABILITIES
    for cc in values:
        major, minor = map(int, cc.split("."))
        if not low <= (major, minor) <= high:
            raise UsageError(f"--compute-capability {cc}: {builder.name} builds for "
                             f"{low[0]}.{low[1]} to {high[0]}.x (Ampere and later)")


def _rtx_compute_capabilities(trt: Any) -> List[str]:
    """'7.5', '8.0', ... from TensorRT-RTX's ComputeCapability members SM75, SM80, ..."""
    names = [n for n in dir(trt.ComputeCapability) if re.fullmatch(r"SM[0-9]{2,3}", n)]
    return [f"{n[2:-1]}.{n[-1]}" for n in sorted(names, key=lambda n: int(n[2:]))]
