"""Model: a loaded bundle that validates inputs and runs its stages in order."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .bundle import Bundle, execution_paths, path_members, range_text, read_bundle
from .errors import BundleError, IncompatibleError, InputError, TrtcError, UsageError

__all__ = ["Model", "TensorSpec", "load", "select_device", "parse_device"]

DEVICES = ("auto", "cuda", "cpu")


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of a model input or output. A dynamic bundle has -1 in ``shape`` on the
    axes that vary, and the range in ``min_shape`` / ``max_shape`` (``opt_shape``: the shape its
    engines are tuned for); for a static one all three equal ``shape``."""

    shape: Tuple[int, ...]
    dtype: np.dtype
    min_shape: Optional[Tuple[int, ...]] = None
    max_shape: Optional[Tuple[int, ...]] = None
    opt_shape: Optional[Tuple[int, ...]] = None
    # ids into a table (an Embedding, take, one_hot): valid values [low, high), and the node
    index_range: Optional[Tuple[int, int]] = None
    indexes: Optional[str] = None

    @property
    def is_dynamic(self) -> bool:
        return self.min_shape is not None and self.min_shape != self.max_shape

    @property
    def range_text(self) -> str:
        """``1..32x3x224x224`` (``1x3x224x224`` when static)."""
        return range_text(self.min_shape or self.shape, self.max_shape or self.shape)

    def accepts(self, shape: Tuple[int, ...]) -> Optional[str]:
        """None if ``shape`` is inside the range, else what is wrong (one clause)."""
        if not self.is_dynamic:
            if tuple(shape) != tuple(self.shape):
                what = "rank" if len(shape) != len(self.shape) else "shape"
                return f"wrong {what}: expected shape {self.shape}, got {tuple(shape)}"
            return None
        lo, hi = self.min_shape or (), self.max_shape or ()
        if len(shape) != len(lo):
            return f"wrong rank: expected {len(lo)} dimensions ({self.range_text}), got {tuple(shape)}"
        for axis, (a, d, b) in enumerate(zip(lo, shape, hi)):
            if not a <= d <= b:
                span = f"{a}..{b}" if a != b else f"exactly {a}"
                return (f"axis {axis} is {d}, outside this bundle's range {span} (shape "
                        f"{self.range_text}); recompile with a wider --input range to take it")
        return None

    def __repr__(self) -> str:
        if self.is_dynamic:
            return f"TensorSpec(shape={self.range_text}, opt={self.opt_shape}, dtype={self.dtype})"
        return f"TensorSpec(shape={self.shape}, dtype={self.dtype})"


def _spec(entry: Mapping[str, Any]) -> TensorSpec:
    def shape(key: str) -> Optional[Tuple[int, ...]]:
        return tuple(entry[key]) if entry.get(key) is not None else None

    return TensorSpec(tuple(entry["shape"]), np.dtype(entry["dtype"]), shape("min_shape"),
                      shape("max_shape"), shape("opt_shape"), shape("index_range"),  # type: ignore[arg-type]
                      entry.get("indexes"))


def parse_device(device: Any) -> Tuple[str, Optional[int]]:
    """``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'`` as (kind, GPU index or None: the calling
    thread's current device).

    Raises:
        UsageError: anything else.
    """
    if isinstance(device, str):
        if device in DEVICES:
            return device, None
        kind, _, index = device.partition(":")
        if kind == "cuda" and index.isascii() and index.isdigit() and len(index) <= 4:
            return "cuda", int(index)
    raise UsageError(f"device must be one of {', '.join(DEVICES)} or 'cuda:N' (a GPU index), "
                     f"not {str(device)[:40]!r}")


def gpu_index(device: Any) -> int:
    """The GPU a ``device`` string means on the GPU path: N of 'cuda:N', else the current one."""
    _, index = parse_device(device)
    if index is not None:
        return index
    from . import cuda

    try:
        return cuda.current_device() if cuda.gpu_unavailable_reason(0) is None else 0
    except Exception:  # no driver: the path is the CPU anyway
        return 0


def select_device(bundle: Bundle, device: str) -> Tuple[str, Optional[str]]:
    """Pick the execution path. Returns ``(device, reason_gpu_not_used)``: 'cuda' or 'cpu'.

    ``auto`` takes the GPU only when a GPU, a matching TensorRT flavor/version and a supported
    compute capability are all present (or ONNX Runtime's CUDA provider can run the engines'
    ONNX there); ``cuda`` / ``cuda:N`` raises IncompatibleError naming what is missing.
    """
    kind, _ = parse_device(device)
    gpu = gpu_index(device) if kind != "cpu" else 0
    paths = execution_paths(bundle.manifest)
    if kind == "cpu":
        if "cpu" not in paths:
            raise IncompatibleError("device='cpu': this bundle has no CPU path (compiled with "
                                    "--target gpu: engine plans only); compile it with --target all "
                                    "or --target cpu")
        return "cpu", "device='cpu' was asked for"
    if "gpu" not in paths:
        why = "the bundle has no engine plans (--target cpu)"
        if _engines_on_onnxruntime(bundle, why, gpu):
            return "cuda", (f"{why}: ONNX Runtime's CUDA execution provider runs each engine's "
                            "ONNX on the GPU")
        if kind == "cuda":
            raise IncompatibleError(f"device='{device}': this bundle has no GPU path (compiled "
                                    "with --target cpu: ONNX only); compile it with --target all "
                                    "or --target gpu" + _onnxruntime_gpu_hint(bundle, gpu))
        return "cpu", "the bundle has no GPU path (--target cpu)"
    reason = _gpu_reason(bundle, gpu)
    if reason is None:
        return "cuda", None
    if _engines_on_onnxruntime(bundle, reason, gpu):
        return "cuda", (f"TensorRT cannot run the engines here ({reason}): ONNX Runtime's CUDA "
                        "execution provider runs each engine's ONNX on the GPU instead")
    if kind == "cuda" or "cpu" not in paths:
        extra = "" if "cpu" in paths else " (and the bundle has no CPU path: --target gpu)"
        raise IncompatibleError(f"device='{device}' cannot be served: {reason}{extra}"
                                + _onnxruntime_gpu_hint(bundle, gpu))
    return "cpu", reason


def _onnxruntime_gpu_hint(bundle: Bundle, gpu: int = 0) -> str:
    """Where a GPU is present and the bundle has its engines' ONNX, how the GPU could still run
    them: ONNX Runtime's CUDA provider (said only when that is what is missing)."""
    from . import cuda
    from .stages.engine_cpu import cuda_provider_unavailable_reason

    if "cpu" not in execution_paths(bundle.manifest) or cuda.gpu_unavailable_reason(gpu):
        return ""
    missing = cuda_provider_unavailable_reason()
    return f"; nor can ONNX Runtime run its ONNX on this GPU: {missing}" if missing else ""


def _engines_on_onnxruntime(bundle: Bundle, reason: Optional[str], gpu: int = 0) -> bool:
    """On a GPU where no TensorRT flavor can run the bundle's engines (``reason``), can ONNX
    Runtime's CUDA provider run each engine's ONNX there instead? Needs a GPU, the bundle's ONNX
    (the CPU path's members) and onnxruntime-gpu."""
    from . import cuda
    from .stages.engine_cpu import cuda_provider_unavailable_reason

    return (reason is not None and "cpu" in execution_paths(bundle.manifest)
            and cuda.gpu_unavailable_reason(gpu) is None
            and cuda_provider_unavailable_reason() is None)


def _gpu_reason(bundle: Bundle, gpu: int = 0) -> Optional[str]:
    from . import cuda
    from .stages.engine_cuda import backend_unavailable_reason

    reason = cuda.gpu_unavailable_reason(gpu)
    if reason:
        return reason
    major, minor = cuda.compute_capability(gpu)
    cc = f"{major}.{minor}"
    for stage in bundle.engine_stages:
        reason = backend_unavailable_reason(stage, cc)
        if reason:
            return reason
    return None


class Model:
    """A bundle ready to run. Call it with one keyword argument per input.

    Attributes:
        inputs: input name -> TensorSpec.
        outputs: output name -> TensorSpec.
        device: 'cuda' or 'cpu', the execution path in use.
        device_reason: why the GPU path is not used, or on the GPU path why its engines run in
            ONNX Runtime's CUDA provider rather than TensorRT (None: TensorRT runs them).
        engine_executor: what runs the engine stages: 'tensorrt' or 'onnxruntime'.
        executors: stage name -> what runs it ('TensorRT', 'ONNX Runtime (CUDA)',
            'ONNX Runtime (CPU)', 'MXNet').
        manifest: the bundle's manifest (a dict).

    Input rules: every input must be given as a C-contiguous ``numpy.ndarray`` of exactly the
    manifest's shape. A float input accepts any float array (float64/float16 are converted to the
    expected float dtype); integer or bool arrays for a float input are refused, as are float arrays
    for an integer input. Integer inputs accept integer arrays whose values fit. NaN and Inf pass
    through unchanged.

    GPU path: inputs may also be GPU arrays (torch, cupy, MXNet NDArray, DeviceArray; anything with
    ``__dlpack__`` or ``__cuda_array_interface__``) of exactly the input's shape and dtype,
    C-contiguous and on the model's GPU; they are read in place. ``output="device"`` returns
    :class:`~trtc.runtime.dlpack.DeviceArray` outputs that stay on the GPU.

    Threads: a Model may be called from many threads at once. ONNX Runtime stages run concurrently;
    each MXNet residual stage serializes its calls with a lock. On the GPU path each call takes an
    execution context (its own stream and buffers) from a pool, so calls from several threads run
    concurrently and never share one (see ``stages/engine_cuda.py``).
    """

    def __init__(self, bundle: Bundle, device: str, device_reason: Optional[str] = None,
                 cuda_graph: bool = True, gpu: int = 0, cache_dir: Optional[Any] = None,
                 memory_arena: bool = True):
        self.path = bundle.path
        self.manifest = bundle.manifest
        self.device = device
        self.device_reason = device_reason
        self.gpu: Optional[int] = gpu if device == "cuda" else None  # the GPU it runs on
        self.inputs: Dict[str, TensorSpec] = {t["name"]: _spec(t) for t in bundle.manifest["inputs"]}
        self.outputs: Dict[str, TensorSpec] = {t["name"]: _spec(t) for t in bundle.manifest["outputs"]}
        # dynamic input axes MXNet's shape inference needs equal (the compiler asked MXNet)
        self._dim_groups: List[List[Tuple[str, int]]] = [
            [(name, axis) for name, axis in group] for group in bundle.manifest.get("dim_groups", [])]
        # what runs the engine stages: TensorRT, or ONNX Runtime (on the CPU; on the GPU where
        # no TensorRT flavor can run them)
        # (select_device: on the GPU path, a reason means TensorRT cannot run the engines)
        self.engine_executor = ("tensorrt" if device == "cuda" and device_reason is None
                                else "onnxruntime")
        from .runtime_cache import cache_dir_from
        self.stages: List[Any] = _make_stages(bundle, device, self.engine_executor, cuda_graph,
                                              gpu, cache_dir_from(cache_dir), memory_arena)
        self.executors: Dict[str, str] = {entry["name"]: _executor_text(stage) for entry, stage
                                          in zip(bundle.manifest["stages"], self.stages)}
        self._gpu: Any = None
        if device == "cuda":
            from .stages.engine_cuda import GpuPipeline
            self._gpu = GpuPipeline(self.stages, list(self.inputs), list(self.outputs), cuda_graph,
                                    device=gpu)

    def __repr__(self) -> str:
        kinds = [s["kind"] for s in self.manifest["stages"]]
        return (f"Model({os.path.basename(self.path)!r}, device={self.device!r}, "
                f"{kinds.count('engine')} engine + {kinds.count('onnx')} ONNX Runtime + "
                f"{kinds.count('residual')} MXNet stages)")

    def __call__(self, *args: Any, output: str = "numpy", **arrays: Any) -> Dict[str, Any]:
        if args:
            raise InputError(f"inputs are given by name: model({', '.join(f'{n}=...' for n in self.inputs)})"
                             f"; got {len(args)} positional argument(s)")
        return self.run(arrays, output=output)

    def run(self, arrays: Mapping[str, Any], output: str = "numpy") -> Dict[str, Any]:
        """Run the model on ``arrays`` (input name -> array).

        Args:
            arrays: input name -> array (class docstring: input rules); MXNet NDArrays are
                accepted like numpy arrays (see ``_check_array``; on the GPU path, GPU NDArrays
                are read in place through DLPack).
            output: 'numpy'; 'device' for DeviceArrays on the GPU (GPU path only); 'mxnet' for
                MXNet NDArrays on ``mx.cpu()`` (imports MXNet; each made from the numpy output
                without a copy).

        Returns:
            Output name -> numpy array (or DeviceArray, or NDArray).

        Raises:
            InputError: an input breaks the input rules.
            UsageError: a bad ``output``; 'device' on the CPU path; 'mxnet' without MXNet.
        """
        if not isinstance(output, str) or output not in ("numpy", "device", "mxnet"):
            shown = repr(output) if isinstance(output, str) else f"a {type(output).__name__}"
            raise UsageError(f"output must be 'numpy', 'device' or 'mxnet', not {shown[:60]}"
                             + ("" if isinstance(output, str) or "output" not in self.inputs else
                                "; an input named 'output' must be passed as "
                                "model.run({'output': x})"))
        if output == "device" and self._gpu is None:
            raise UsageError(f"output='device' needs the GPU path; this model runs on the CPU "
                             f"({self.device_reason})")
        mx: Any = None
        if output == "mxnet":  # imported only when asked for: an engine-only model never needs it
            try:
                import mxnet as mx
            except (ImportError, OSError) as exc:
                raise UsageError(f"output='mxnet' needs MXNet ({type(exc).__name__}: "
                                 f"{str(exc)[:120]}); pip install mxnet==1.9.1, or use "
                                 "output='numpy'") from None
        tensors: Dict[str, Any] = self.validate_inputs(arrays)
        if self._gpu is not None:
            results = self._gpu.run(tensors, "numpy" if output == "mxnet" else output)
        else:
            for stage in self.stages:
                tensors.update(stage.run(tensors))
            results = {name: tensors[name] for name in self.outputs}
        if mx is None:
            return results
        # Zero-copy needs an array this call made (an output may be an input passed through).
        return {name: mx.nd.from_numpy(value, zero_copy=True)
                if name not in self.inputs and value.flags.c_contiguous and value.flags.writeable
                else mx.nd.array(value, dtype=value.dtype) for name, value in results.items()}

    def validate_inputs(self, arrays: Mapping[str, Any]) -> Dict[str, np.ndarray]:
        """Check and convert ``arrays`` by the input rules (class docstring)."""
        expected = list(self.inputs)
        if not isinstance(arrays, Mapping):
            raise InputError(f"inputs must be given by name (model(**{{name: array}}) or "
                             f"model.run({{name: array}})), got {type(arrays).__name__}; this "
                             f"model's inputs are: {', '.join(expected)}")
        unknown = [name for name in arrays if name not in self.inputs]
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), expected, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise InputError(f"unknown input {str(unknown[0])[:80]!r}{hint}; this model's inputs "
                             f"are: {', '.join(expected)}")
        missing = [name for name in expected if name not in arrays]
        if missing:
            raise InputError(f"missing input '{missing[0]}' (shape {self.inputs[missing[0]].shape}, "
                             f"{self.inputs[missing[0]].dtype}); this model's inputs are: "
                             f"{', '.join(expected)}")
        feeds: Dict[str, np.ndarray] = {}
        for name, spec in self.inputs.items():
            if self._gpu is not None and self._gpu.is_device_array(arrays[name]):
                feeds[name] = self._gpu.device_input(name, arrays[name], spec)
                continue
            feeds[name] = _check_array(name, arrays[name], spec)
        for group in self._dim_groups:
            sizes = {(name, axis): feeds[name].shape[axis] for name, axis in group}
            if len(set(sizes.values())) > 1:
                shown = ", ".join(f"{n} axis {a} is {v}" for (n, a), v in sizes.items())
                raise InputError(f"inputs disagree: {shown}; these axes must be equal (MXNet's "
                                 "shape inference of this model requires it)")
        return feeds


class _Capsule:
    """A DLPack capsule as numpy.from_dlpack takes it (MXNet 1.9 has no ``__dlpack__``)."""

    def __init__(self, capsule: Any):
        self.capsule = capsule

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        return self.capsule

    def __dlpack_device__(self) -> Tuple[int, int]:
        return (1, 0)  # kDLCPU: only CPU NDArrays come here


def _check_array(name: str, value: Any, spec: TensorSpec) -> np.ndarray:
    """``value`` checked against ``spec`` and converted by the input rules (Model's docstring).

    An MXNet NDArray (``mx.nd`` or ``mx.np``) is read as numpy first, without importing MXNet
    here: a CPU NDArray in the default layout as a read-only zero-copy view (DLPack); one in
    oneDNN's internal layout (e.g. a convolution's output, which MXNet cannot export), on a GPU
    (on the CPU path) or in pinned memory through one copy, ``asnumpy()``.
    """
    if type(value).__module__.split(".")[0] == "mxnet" and hasattr(value, "asnumpy"):
        if getattr(value, "stype", "default") != "default":
            raise InputError(f"input '{name}': a sparse MXNet NDArray ({value.stype}); pass "
                             "x.tostype('default')")
        view = None
        if getattr(getattr(value, "context", None), "device_type", None) == "cpu":
            try:
                view = np.from_dlpack(_Capsule(value.to_dlpack_for_read()))
            except Exception:  # oneDNN layout ("We can't generate TBlob for MKLDNN data")
                view = None
        value = view if view is not None else value.asnumpy()
    if not isinstance(value, np.ndarray) or isinstance(value, np.ma.MaskedArray):
        kind = f"{type(value).__module__}.{type(value).__name__}"
        raise InputError(f"input '{name}': expected a numpy.ndarray of shape {spec.shape} "
                         f"{spec.dtype}, got {kind}; convert it with numpy.asarray(x, "
                         f"dtype='{spec.dtype}')" + (" (x.filled() for a masked array)"
                                                     if isinstance(value, np.ma.MaskedArray)
                                                     else ""))
    problem = spec.accepts(value.shape)
    if problem:
        raise InputError(f"input '{name}': {problem}")
    if not value.flags.c_contiguous:
        raise InputError(f"input '{name}': expected a C-contiguous array, got one with strides "
                         f"{value.strides} (a transposed or sliced view?); pass "
                         "numpy.ascontiguousarray(x)")
    want, have = spec.dtype, value.dtype
    if have == want:
        converted = value
    elif want.kind == "f" and have.kind == "f":
        converted = value.astype(want)
    elif want.kind in "iu" and have.kind in "iu":
        info = np.iinfo(want)
        if value.size and (value.min() < info.min or value.max() > info.max):
            raise InputError(f"input '{name}': values do not fit {want} (given {have})")
        converted = value.astype(want)
    else:
        raise InputError(f"input '{name}': expected dtype {want}, got {have}; convert explicitly "
                         f"(e.g. x.astype('{want}')) if that is what you mean")
    if spec.index_range is not None and converted.size:
        _check_ids(name, converted, spec)
    return converted


def _check_ids(name: str, value: np.ndarray, spec: TensorSpec) -> None:
    """Ids outside the table they index: MXNet's Embedding does not take them, and ONNX Runtime
    would read row size+id for a negative one (TensorRT: memory outside the table)."""
    low, high = spec.index_range  # type: ignore[misc]
    smallest, largest = value.min(), value.max()
    if not (smallest >= low and largest < high):  # NaN fails both
        bad = smallest if not smallest >= low else largest
        raise InputError(f"input '{name}': ids must lie in [{low}, {high}) (they index "
                         f"{spec.indexes or 'a table'} of {high} rows); got {bad!r}")


def _executor_text(stage: Any) -> str:
    """'TensorRT', 'ONNX Runtime (CUDA)', 'ONNX Runtime (CPU)' or 'MXNet'."""
    kind = type(stage).__name__
    if kind == "TensorRTStage":
        return "TensorRT"
    if kind == "OnnxRuntimeStage":
        return "ONNX Runtime (CUDA)" if stage.cuda_device is not None else "ONNX Runtime (CPU)"
    return "MXNet"


def _make_stages(bundle: Bundle, device: str, engine_executor: str,
                 cuda_graph: bool = True, gpu: int = 0, cache_dir: Optional[Any] = None,
                 memory_arena: bool = True) -> List[Any]:
    try:
        return _stages(bundle, device, engine_executor, cuda_graph, gpu, cache_dir, memory_arena)
    except (BundleError, IncompatibleError) as exc:  # say which file the stage belongs to
        text = str(exc)
        if text.startswith(f"{bundle.path}: "):  # read_member's own errors name it already
            raise
        raise type(exc)(f"{bundle.path}: {text}") from None


def _stages(bundle: Bundle, device: str, engine_executor: str,
            cuda_graph: bool = True, gpu: int = 0, cache_dir: Optional[Any] = None,
            memory_arena: bool = True) -> List[Any]:
    """The stages of ``device``'s path, built from the members ``path_members`` lists for it:
    each is read (and its sha256 verified) here, and nothing else is read. On the GPU, ONNX
    Runtime stages (and, with ``engine_executor`` 'onnxruntime', the engines' ONNX) run with the
    CUDA execution provider where onnxruntime-gpu is installed, else on the host."""
    manifest = bundle.manifest
    plans = device == "cuda" and engine_executor == "tensorrt"
    needed = set(path_members(manifest, "gpu" if plans else "cpu"))
    on_gpu: Optional[int] = None
    from .bundle import ORT_STAGES_MULTITHREADED
    ort_stages = sum(s["kind"] in ("engine", "onnx") for s in manifest["stages"])
    threads = 1 if ort_stages > ORT_STAGES_MULTITHREADED else 0  # 0: ONNX Runtime's default
    if device == "cuda":
        from .stages.engine_cpu import cuda_provider_unavailable_reason
        on_gpu = gpu if cuda_provider_unavailable_reason() is None else None

    def read(name: str) -> bytes:
        if name not in needed:
            raise TrtcError(f"internal error: the {device} path read member '{name}', which "
                            "path_members does not list for it")
        return bundle.read_member(name)

    stages: List[Any] = []
    residual_params: Optional[Dict[str, np.ndarray]] = None
    mxnet_ops = {op for s in manifest["stages"] if s["kind"] == "residual" for op in s.get("op_types", {})}
    if any(s["kind"] == "residual" for s in manifest["stages"]):  # one line naming the ops, first
        from .stages.residual import import_mxnet
        import_mxnet(mxnet_ops)
    for stage in manifest["stages"]:
        if stage["kind"] == "engine" and plans:
            from .stages.engine_cuda import TensorRTStage
            stages.append(TensorRTStage(stage, read(stage["engine"]), device=gpu, refit_onnx=(
                read(stage["onnx"]) if stage.get("weights") == "stripped" else None),
                cache_dir=cache_dir))
        elif stage["kind"] in ("engine", "onnx"):  # ONNX Runtime, on the GPU where it can
            from .stages.engine_cpu import OnnxRuntimeStage
            stages.append(OnnxRuntimeStage(stage, read(stage["onnx"]), intra_op_threads=threads,
                                           cuda_device=on_gpu, cuda_graph=cuda_graph,
                                           memory_arena=memory_arena))
        else:
            from .stages.residual import MXNetStage, load_residual_params
            if residual_params is None:
                member = manifest.get("residual_params")
                used = dict.fromkeys(key for s in manifest["stages"] if s["kind"] == "residual"
                                     for key in s["params"])
                residual_params = load_residual_params(read(member), used) if member else {}
            stages.append(MXNetStage(stage, read(stage["symbol"]), residual_params,
                                     use_gpu=(device == "cuda"),
                                     custom_ops=manifest["requires"].get("custom_ops")))
    return stages


def load(path: "os.PathLike[str] | str", device: str = "auto", cuda_graph: bool = True,
         trusted_keys: Optional[List[Any]] = None,
         cache_dir: "Optional[os.PathLike[str] | str]" = None, memory_arena: bool = True) -> Model:
    """Load a ``.trtb`` bundle for inference, without recompiling.

    Args:
        path: the bundle file.
        device: 'auto' (GPU when it can serve every engine, else CPU), 'cuda' (the current
            GPU), 'cuda:N' (GPU N: every buffer, stream, context and graph of the model lives
            there) or 'cpu'.
        cuda_graph: on the GPU path, when every stage is an engine, capture each execution
            context's engine launches once as a CUDA graph and replay it (False: launch them one
            by one on every call); an ONNX Runtime stage on the GPU of static shapes whose every
            node runs on the GPU is captured by ONNX Runtime itself (its calls then serialize).
        trusted_keys: Ed25519 public keys (PEM file paths, PEM bytes or cryptography key
            objects). When given, the bundle must be signed by one of them (``trtc sign``); the
            signature (of the manifest, which pins every member's sha256) is checked before
            any member is read, and then every member's sha256 (streamed, also the members this
            path will not read). None (default): no signature is required or checked, and the
            checksums only catch accidental damage, not deliberate edits.
        cache_dir: TensorRT-RTX's runtime cache (kernels compiled just in time on this GPU) is
            kept there, one file per engine and GPU model / driver / TensorRT-RTX version, so the
            next process start does not compile them again (default:
            ``$TRTC_RUNTIME_CACHE_DIR``, else none). Full TensorRT has no JIT: unused there.
        memory_arena: False: ONNX Runtime stages on the host free each run's buffers when it
            returns instead of keeping every stage's peak in an arena (less memory for a model
            run once, e.g. the compiler's accuracy gate; some time per call).

    Only the members the chosen path needs are read (``bundle.path_members``), each verified
    against the manifest's sha256 on the very bytes used; the file is never read whole, and it
    is closed before this returns. A damaged member the path does not read (a plan, on the CPU
    path) is not noticed here: ``read_bundle(path)`` (``trtc inspect``) checks every member.

    Returns:
        A :class:`Model`; ``model(**arrays)`` returns a dict of numpy arrays.

    Raises:
        BundleError: the file is missing, corrupted or not a bundle; or, with ``trusted_keys``,
            unsigned, signed by another key, or modified after signing.
        IncompatibleError: the bundle cannot run here (format, backend version, GPU, missing
            onnxruntime / MXNet, or cryptography for ``trusted_keys``), with the exact reason.
        UsageError: a trusted key cannot be loaded.
    """
    # Lazy: opening checks the archive and the manifest; each member the chosen path reads
    # (path_members) is verified against its sha256 as it is read, and no other is read.
    with read_bundle(path, verify=False) as bundle:  # the Model keeps no file open
        if trusted_keys is not None:  # before any member is read
            from .signing import verify_bundle
            verify_bundle(bundle, trusted_keys)
            # signed means everything: every member the signed manifest pins, streamed, also
            # those this path will not read (a replaced plan on the CPU path, say)
            bundle.verify_members()
        chosen, reason = select_device(bundle, device)
        return Model(bundle, chosen, reason, cuda_graph=cuda_graph,
                     gpu=gpu_index(device) if chosen == "cuda" else 0, cache_dir=cache_dir,
                     memory_arena=memory_arena)
