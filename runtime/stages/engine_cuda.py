"""GPU execution of a bundle's engines: TensorRT, TensorRT-RTX or the lean runtime,
``set_tensor_address`` + ``execute_async_v3`` on cuda-python streams and buffers.

:class:`TensorRTStage` holds one deserialized engine. :class:`GpuPipeline` runs a model's stages
in order on one GPU:

- Tensors between consecutive engines stay on the device: the producer's output buffer is the
  consumer's input buffer. ONNX Runtime stages on the GPU (CUDA execution provider) read and
  write device memory too (I/O binding). Host stages (MXNet, ONNX Runtime on the CPU) exchange
  tensors with engines through pinned host memory.
- Inputs are numpy arrays (staged through pinned memory) or GPU arrays (torch, cupy, MXNet,
  :class:`~trtc.runtime.dlpack.DeviceArray`), read in place: bound to the engine directly, or,
  when a CUDA graph is replayed (its addresses are fixed), copied device-to-device into the
  graph's input buffer.
- Outputs are numpy arrays, or new DeviceArrays (``output="device"``): a device-to-device copy
  out of the context's buffers, so that a returned array survives later calls.
- Dynamic shapes (a bundle compiled with input ranges; one optimization profile per engine,
  index 0): every device and pinned buffer is allocated once, for its tensor's largest shape
  (the manifest's ``max_shape``), so any shape in range fits without reallocation. Each call
  sets its inputs' shapes on the execution contexts (``set_input_shape``, only when they changed)
  and reads the output shapes back (``get_tensor_shape``); arrays handed on carry the call's
  actual shapes. An engine output TensorRT sizes beyond the manifest's largest shape is a
  BundleError, never a write past a buffer.
- CUDA graphs: when every stage is an engine, the first call at an input shape runs stage by
  stage (the warm-up TensorRT needs after a shape change) and then captures all engine launches
  as one graph, replayed by later calls at exactly that shape (the key is every model input's
  shape). A graph is never replayed for another shape. Each pipeline context keeps at most
  ``GRAPH_CACHE_SIZE`` (8) graphs, least recently used evicted. A graph fixes the state of the
  execution contexts it was captured from, so each cached graph of a dynamic model owns its own
  TensorRT execution contexts, whose input shapes are never changed again; they share one
  activation (scratch) buffer per pipeline context (``USER_MANAGED`` allocation: they never run
  at once), so a cached shape costs a graph and a few execution contexts, not their activation
  memory. An evicted graph's contexts are reused for the next shape. A workload cycling through
  more distinct shapes than the bound re-captures on every miss: pad inputs to a few sizes (say
  powers of two) to stay within it. A static bundle has one shape, hence one graph. If capture
  fails the context warns once and stays stage by stage.

Thread rule: one execution context per thread at a time. The pipeline keeps a pool of contexts,
each with its own TensorRT execution contexts, stream, device and pinned buffers and graphs; a
call takes a free one (making it, up to ``max_contexts``, else waiting for one) and gives it back
when done. Calls from N threads thus run concurrently on up to ``max_contexts`` streams, and no
context or buffer is ever used by two threads at once.
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from .. import cuda
from ..bundle import range_text
from ..dlpack import DeviceArray, as_device_array, is_device_array
from ..errors import BundleError, CudaError, IncompatibleError, InputError
from ..onnx_check import OnnxRefused, check_onnx

__all__ = [
    "TensorRTStage",
    "GpuPipeline",
    "ContextPool",
    "import_backend",
    "backend_unavailable_reason",
    "runtime_unavailable_reason",
    "TensorBuffers",
    "RTX_RUNNABLE_CC",
    "DEFAULT_MAX_CONTEXTS",
    "GRAPH_CACHE_SIZE",
]

# Compute capabilities TensorRT-RTX engines can run on (its support matrix); 9.0 is not one.
RTX_RUNNABLE_CC = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
_MODULES = {"tensorrt": ("tensorrt", "tensorrt_lean"), "tensorrt_rtx": ("tensorrt_rtx",)}
DEFAULT_MAX_CONTEXTS = 4
# CUDA graphs (one per input shape, each with its own TensorRT execution contexts) kept per
# pipeline context, least recently used evicted (module docstring)
GRAPH_CACHE_SIZE = 8


def import_backend(backend: str) -> Any:
    """Import the runtime module for ``backend`` ('tensorrt' also accepts the lean runtime).

    Raises:
        IncompatibleError: no runtime of that flavor is installed.
    """
    last: Optional[BaseException] = None
    for module in _MODULES.get(backend, ()):
        try:
            return __import__(module)
        except ImportError as exc:
            last = exc
    hint = {"tensorrt": "pip install tensorrt (NVIDIA's index)",
            "tensorrt_rtx": "pip install 'trtc[rtx]'"}.get(backend, "")
    raise IncompatibleError(f"engine built with {backend}, which is not installed ({last}); {hint}")


def runtime_unavailable_reason(backend: str, cc: str) -> Optional[str]:
    """Why no engine of ``backend`` can run on a GPU of compute capability ``cc``, or None."""
    try:
        import_backend(backend)
    except IncompatibleError as exc:
        return str(exc)
    if backend == "tensorrt_rtx" and cc not in RTX_RUNNABLE_CC:
        return (f"GPU compute capability {cc} is not supported by TensorRT-RTX "
                f"(runs on {', '.join(RTX_RUNNABLE_CC)})")
    return None


def backend_unavailable_reason(stage: Mapping[str, Any], cc: str) -> Optional[str]:
    """Why ``stage``'s engine cannot run on a GPU of compute capability ``cc``, or None."""
    backend, built = stage["backend"], stage["backend_version"]
    reason = runtime_unavailable_reason(backend, cc)
    if reason:
        return reason
    have = getattr(import_backend(backend), "__version__", "?")
    if have != built:
        return (f"engine '{stage['name']}' was built with {backend} {built}, this runtime has "
                f"{backend} {have}; recompile the bundle or install {backend}=={built}")
    targets = stage["compute_capabilities"]
    if targets and cc not in targets:
        return (f"engine '{stage['name']}' targets compute capabilities {', '.join(targets)}, "
                f"this GPU is {cc}; recompile with --compute-capability {cc}")
    if stage.get("weights") == "stripped" and not hasattr(import_backend(backend),
                                                          "OnnxParserRefitter"):
        return (f"engine '{stage['name']}' is weight-stripped and refitting it needs {backend}'s "
                "ONNX parser (the lean runtime has none); install the full package, or "
                "recompile without --strip-weights")
    return None


Shape = Tuple[int, ...]


def _check_validity(trt: Any, runtime: Any, engine_bytes: bytes, stage: str, backend: str) -> None:
    """Before deserializing: ask TensorRT(-RTX) whether the engine can run on this GPU, where the
    API exists (``get_engine_validity``), and turn 'invalid' into an IncompatibleError saying
    why (its diagnostics); 'suboptimal' is a warning."""
    if not (hasattr(runtime, "get_engine_validity") and hasattr(trt, "EngineValidity")):
        return  # full TensorRT before 10.x: deserialization tells
    try:
        validity, diagnostics = runtime.get_engine_validity(engine_bytes)
    except Exception:  # the API itself failed: deserialization will tell
        return
    flags = trt.EngineInvalidityDiagnostics.__members__ if hasattr(
        trt, "EngineInvalidityDiagnostics") else {}
    names = [name.lower().replace("_", " ") for name, member in flags.items()
             if int(member) and int(diagnostics) & int(member)]
    why = ", ".join(names) or f"diagnostics {int(diagnostics)}"
    if validity == trt.EngineValidity.INVALID:
        raise IncompatibleError(f"stage '{stage}': {backend} says the engine cannot run on this GPU "
                                f"({why}); recompile the bundle for it")
    if validity == trt.EngineValidity.SUBOPTIMAL:
        warnings.warn(f"stage '{stage}': {backend} says the engine runs suboptimally on this GPU "
                      f"({why})", RuntimeWarning, stacklevel=4)


def _refit(trt: Any, engine: Any, onnx_bytes: bytes, logger: Any, stage: str, member: str) -> None:
    """Refit a weight-stripped engine with the initializers of the ONNX it was built from, all
    of them accounted for: a weight the ONNX does not supply is an error, never zeros."""
    def fail(what: str) -> BundleError:
        return BundleError(f"stage '{stage}': refitting the weight-stripped engine from {member} "
                           f"failed ({what}); the bundle is inconsistent: recompile it")

    if not engine.refittable:
        raise fail("the engine is not refittable")
    try:  # TensorRT's parser, like ONNX Runtime, would read external data from the file system
        check_onnx(onnx_bytes)
    except OnnxRefused as exc:
        raise fail(str(exc)) from None
    refitter = trt.Refitter(engine, logger)
    parser_refitter = trt.OnnxParserRefitter(refitter, logger)
    if not parser_refitter.refit_from_bytes(onnx_bytes):
        errors = [str(parser_refitter.get_error(i).desc())
                  for i in range(parser_refitter.num_errors)]
        raise fail("; ".join(errors[:3]) or "the ONNX parser refused the weights")
    missing = [name or "<unnamed>" for name in refitter.get_missing_weights()]
    if missing:
        raise fail(f"{len(missing)} weight(s) missing: {', '.join(missing[:5])}")
    if not refitter.refit_cuda_engine():
        raise fail("refit_cuda_engine returned False")


class TensorRTStage:
    """One engine stage: the engine, deserialized once, and its IO (shape and dtype per tensor).

    Execution contexts are made per :class:`GpuPipeline` context by :meth:`create_context`.

    Attributes:
        io: tensor name -> (manifest shape, -1 on the axes that vary; dtype).
        max_shapes: tensor name -> its largest shape (what buffers are sized for).
        varying: the inputs whose shape is set per call (-1 in the manifest).
        dynamic: whether any input varies.
    """

    def __init__(self, stage: Mapping[str, Any], engine_bytes: bytes, device: int = 0,
                 refit_onnx: Optional[bytes] = None, cache_dir: Optional[Any] = None):
        """``refit_onnx``: for a weight-stripped engine (``"weights": "stripped"``), the ONNX it
        was built from, whose initializers are refitted into the engine here, before anything
        can run it; a stripped stage without it is refused (it would compute with no weights).
        ``cache_dir``: TensorRT-RTX's runtime cache of JIT-compiled kernels lives there
        (runtime/runtime_cache.py), read now and written after the first call."""
        trt = import_backend(stage["backend"])
        self._trt = trt
        self.name: str = stage["name"]
        self.inputs = [t["name"] for t in stage["inputs"]]
        self.outputs = [t["name"] for t in stage["outputs"]]
        self.device = device
        self._alone: Optional[GpuPipeline] = None
        self._lock = threading.Lock()
        cuda.set_device(device)
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = runtime = trt.Runtime(self._logger)
        _check_validity(trt, runtime, engine_bytes, self.name, stage["backend"])
        self.engine = engine = runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None:
            raise IncompatibleError(f"stage '{self.name}': {stage['backend']} refused to "
                                    "deserialize the engine on this GPU; recompile for it")
        if stage.get("weights") == "stripped":
            if refit_onnx is None:
                raise BundleError(f"stage '{self.name}': a weight-stripped engine needs its ONNX "
                                  "to refit from; none was given")
            _refit(trt, engine, refit_onnx, self._logger, self.name, stage["onnx"])
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if set(names) != set(self.inputs) | set(self.outputs):
            raise BundleError(f"stage '{self.name}': engine IO {sorted(names)} does not match the "
                              "manifest; recompile the bundle")
        specs = {t["name"]: t for t in [*stage["inputs"], *stage["outputs"]]}
        self.io: Dict[str, Tuple[Shape, np.dtype]] = {}
        self.max_shapes: Dict[str, Shape] = {}
        self.min_shapes: Dict[str, Shape] = {}
        self.varying: List[str] = []
        self._fixed: Dict[str, Shape] = {}  # -1 in the engine, filled by a static manifest
        for name in names:
            engine_shape = tuple(engine.get_tensor_shape(name))
            spec = specs[name]
            shape = tuple(spec["shape"])
            if len(engine_shape) != len(shape) or any(
                    (e != -1) if s == -1 else (e not in (-1, s)) for e, s in zip(engine_shape, shape)):
                raise BundleError(f"stage '{self.name}': tensor '{name}' has shape {engine_shape} in "
                                  f"the engine, {shape} in the manifest; recompile the bundle")
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            if is_input != (name in self.inputs):
                raise BundleError(f"stage '{self.name}': tensor '{name}' is an engine "
                                  f"{'input' if is_input else 'output'}, not so in the manifest")
            lo, hi = self._range(name, spec, shape)
            self.min_shapes[name], self.max_shapes[name] = lo, hi
            if is_input and -1 in shape:
                self.varying.append(name)
                self._check_profile(name, lo, hi)
            elif is_input and -1 in engine_shape:
                self._fixed[name] = shape
            self.io[name] = (shape, np.dtype(trt.nptype(engine.get_tensor_dtype(name))))
        self.dynamic = bool(self.varying)
        self._configs: Dict[Any, Any] = {}  # allocation strategy -> IRuntimeConfig
        self._runtime_cache: Any = None
        self._cache_file: Any = None
        self._cache_saved = False
        if cache_dir is not None:
            self._open_runtime_cache(stage, cache_dir)

    def _open_runtime_cache(self, stage: Mapping[str, Any], cache_dir: Any) -> None:
        """TensorRT-RTX: a runtime cache for the execution contexts, loaded from its file."""
        from ..runtime_cache import CacheFile

        engine = self.engine
        if not hasattr(engine, "create_runtime_config"):  # full TensorRT: kernels are in the plan
            warnings.warn(f"stage '{self.name}': {stage['backend']} compiles no kernels at run "
                          "time; the runtime cache directory is not used", RuntimeWarning,
                          stacklevel=4)
            return
        major, minor = cuda.compute_capability(self.device)
        identity = {"engine_sha256": str(stage.get("sha256", "")), "backend": stage["backend"],
                    "backend_version": str(getattr(self._trt, "__version__", "?")),
                    "gpu": cuda.device_name(self.device), "compute_capability": f"{major}.{minor}",
                    "driver": str(cuda.driver_version())}
        self._cache_file = CacheFile(cache_dir, identity)
        config = engine.create_runtime_config()
        runtime_cache = config.create_runtime_cache()
        blob = self._cache_file.read()
        if blob is not None and not runtime_cache.deserialize(blob):
            warnings.warn(f"runtime cache {self._cache_file.path}: TensorRT-RTX refused it (another "
                          "GPU, driver or version); compiling kernels again", RuntimeWarning,
                          stacklevel=4)
        self._runtime_cache = runtime_cache

    def save_runtime_cache(self) -> None:
        """Write the runtime cache file once, after the first call compiled the kernels."""
        if self._runtime_cache is None or self._cache_saved:
            return
        self._cache_saved = True
        self._cache_file.write(bytes(self._runtime_cache.serialize()))

    def _runtime_config(self, strategy: Any) -> Any:
        """An IRuntimeConfig with ``strategy`` and the shared runtime cache (made once each)."""
        config = self._configs.get(strategy)
        if config is None:
            config = self.engine.create_runtime_config()
            config.set_execution_context_allocation_strategy(strategy)
            config.set_runtime_cache(self._runtime_cache)
            self._configs[strategy] = config
        return config

    def _range(self, name: str, spec: Mapping[str, Any], shape: Shape) -> Tuple[Shape, Shape]:
        if -1 not in shape:
            return shape, shape
        lo, hi = spec.get("min_shape"), spec.get("max_shape")
        if not (isinstance(lo, list) and isinstance(hi, list) and len(lo) == len(hi) == len(shape)
                and all(isinstance(d, int) and 0 <= a <= d for a, d in zip(lo, hi))
                and all(s in (-1, a) and s in (-1, d) for s, a, d in zip(shape, lo, hi))):
            raise BundleError(f"stage '{self.name}': tensor '{name}' of shape {list(shape)} has no "
                              f"valid min_shape/max_shape ({lo}, {hi}); recompile the bundle")
        return tuple(lo), tuple(hi)

    def _check_profile(self, name: str, lo: Shape, hi: Shape) -> None:
        """The engine's optimization profile 0 must take the manifest's whole range."""
        engine = self.engine
        if engine.num_optimization_profiles < 1:
            raise BundleError(f"stage '{self.name}': input '{name}' varies but the engine has no "
                              "optimization profile; recompile the bundle")
        low, _, high = (tuple(d) for d in engine.get_tensor_profile_shape(name, 0))
        if len(low) != len(lo) or any(a < b for a, b in zip(lo, low)) or any(
                a > b for a, b in zip(hi, high)):
            raise BundleError(f"stage '{self.name}': input '{name}' takes {range_text(lo, hi)} in the "
                              f"manifest but {range_text(low, high)} in the engine's optimization "
                              "profile; recompile the bundle")

    @property
    def scratch_bytes(self) -> int:
        """Activation memory one execution context of this engine needs, at its largest shapes."""
        return int(self.engine.device_memory_size_v2)

    def create_context(self, stream: Optional[cuda.Stream] = None,
                       scratch: Optional[cuda.DeviceBuffer] = None) -> Any:
        """A new execution context on optimization profile 0, with every input whose engine
        shape is dynamic but manifest shape fixed set to that shape.

        Args:
            stream: where to switch the profile, if a new context is not on profile 0.
            scratch: activation memory to use (``USER_MANAGED``; at least
                :attr:`scratch_bytes`, shared with contexts that never run at the same time);
                None: the context allocates its own.

        Raises:
            CudaError: TensorRT could not make one (typically out of GPU memory).
        """
        trt = self._trt
        with self._lock:  # one context at a time per engine, whichever thread asks
            strategy = (trt.ExecutionContextAllocationStrategy.STATIC if scratch is None
                        else trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            if self._runtime_cache is not None:  # TensorRT-RTX with a runtime cache
                context = self.engine.create_execution_context(self._runtime_config(strategy))
            elif scratch is None:
                context = self.engine.create_execution_context()
            else:
                context = self.engine.create_execution_context(strategy)
        if context is None:
            raise CudaError(f"stage '{self.name}': TensorRT could not create an execution context "
                            "(out of GPU memory?)")
        if scratch is not None:
            context.set_device_memory(scratch.ptr, scratch.nbytes)
        if (self.dynamic or self._fixed) and context.active_optimization_profile != 0:
            stream = stream or cuda.Stream()
            if not context.set_optimization_profile_async(0, stream.ptr):
                raise CudaError(f"stage '{self.name}': TensorRT could not select optimization "
                                "profile 0 for a new execution context")
            stream.synchronize()
        for name, shape in self._fixed.items():
            if not context.set_input_shape(name, shape):
                raise BundleError(f"stage '{self.name}': the engine refuses input shape "
                                  f"{shape} for '{name}'; recompile the bundle")
        return context

    def set_shapes(self, context: Any, shapes: Sequence[Shape]) -> Dict[str, Shape]:
        """Set :attr:`varying` inputs' ``shapes`` (in that order) on ``context``; returns every
        output's shape as TensorRT infers it.

        Raises:
            BundleError: the engine refuses a shape, or an output would not fit its buffer (larger
                than the manifest's largest shape, or data-dependent).
        """
        for name, shape in zip(self.varying, shapes):
            if not context.set_input_shape(name, shape):
                raise BundleError(f"stage '{self.name}': the engine refuses shape {shape} for "
                                  f"input '{name}' (its range: "
                                  f"{range_text(self.min_shapes[name], self.max_shapes[name])}); "
                                  "recompile the bundle")
        outputs: Dict[str, Shape] = {}
        for name in self.outputs:
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            largest = self.max_shapes[name]
            if len(shape) != len(largest) or any(not 0 <= d <= m for d, m in zip(shape, largest)):
                what = ("a data-dependent shape, which the GPU path does not support (run it on "
                        "the CPU)" if -1 in shape else
                        f"a shape beyond the manifest's largest {largest}; recompile the bundle")
                raise BundleError(f"stage '{self.name}': for inputs {dict(zip(self.varying, shapes))}"
                                  f" TensorRT gives output '{name}' shape {shape}: {what}")
            outputs[name] = shape
        return outputs

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run this engine alone on host arrays (models run engines through GpuPipeline)."""
        if self._alone is None:
            self._alone = GpuPipeline([self], self.inputs, self.outputs, cuda_graph=False,
                                      device=self.device)
        return self._alone.run(feeds, "numpy")




def _nbytes(shape: Sequence[int], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


class TensorBuffers:
    """One device buffer per tensor, allocated once for its largest shape, and views of it at the
    shape a call uses (a dynamic model's tensors take any shape in range without reallocating).

    Args:
        tensors: name -> (largest shape, dtype).
        device: the CUDA device (the current one, where the buffers are made).

    Raises:
        CudaError: out of GPU memory.
    """

    def __init__(self, tensors: Mapping[str, Tuple[Shape, np.dtype]], device: int):
        self.device = device
        self._memory: Dict[str, cuda.DeviceBuffer] = {}
        self._views: Dict[str, DeviceArray] = {}  # name -> the view last asked for
        for name, (shape, dtype) in tensors.items():
            buffer = cuda.DeviceBuffer(_nbytes(shape, np.dtype(dtype)))
            self._memory[name] = buffer
            self._views[name] = DeviceArray(buffer.ptr, shape, dtype, device, owner=buffer)
        self.max_shapes: Dict[str, Shape] = {n: tuple(s) for n, (s, _) in tensors.items()}

    def __contains__(self, name: str) -> bool:
        return name in self._memory

    def ptr(self, name: str) -> int:
        """The buffer's device address (the same for every shape)."""
        return self._memory[name].ptr

    def capacity(self, name: str) -> int:
        """The buffer's size in bytes."""
        return self._memory[name].nbytes

    def view(self, name: str, shape: Sequence[int]) -> DeviceArray:
        """The buffer of ``name`` as a DeviceArray of ``shape``.

        Raises:
            BundleError: ``shape`` needs more bytes than the buffer, sized for the manifest's
                largest shape, holds.
        """
        last = self._views[name]
        if last.shape == shape:  # the common case: the same shape as the last call
            return last
        shape = tuple(int(d) for d in shape)
        buffer = self._memory[name]
        if _nbytes(shape, last.dtype) > buffer.nbytes or min(shape, default=0) < 0:
            raise BundleError(f"tensor '{name}' has shape {shape} in this call, larger than the "
                              f"largest shape {self.max_shapes[name]} in the manifest, which its "
                              "GPU buffer is sized for; recompile the bundle")
        view = self._views[name] = DeviceArray(buffer.ptr, shape, last.dtype, self.device,
                                               owner=buffer)
        return view


class ContextPool:
    """Objects made on demand by ``factory``, up to ``max_size``, each lent to one caller at a
    time; a caller finding none free and the pool full waits for one to come back.

    Args:
        factory: makes one object (called without the pool's lock held).
        max_size: the most objects ever made.
    """

    def __init__(self, factory: Callable[[], Any], max_size: int = DEFAULT_MAX_CONTEXTS):
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._factory = factory
        self.max_size = max_size
        self.created = 0
        self._free: List[Any] = []
        self._cond = threading.Condition()

    @contextmanager
    def take(self) -> Iterator[Any]:
        """Lend one object for the ``with`` block."""
        with self._cond:
            while not self._free and self.created >= self.max_size:
                self._cond.wait()
            item = self._free.pop() if self._free else None
            if item is None:
                self.created += 1
        if item is None:
            try:
                item = self._factory()
            except BaseException:
                with self._cond:
                    self.created -= 1
                    self._cond.notify()
                raise
        try:
            yield item
        finally:
            with self._cond:
                self._free.append(item)
                self._cond.notify()


class _Engines:
    """One TensorRT execution context per engine of a pipeline, bound to a pipeline context's
    buffers, and the shapes last set on them."""

    def __init__(self, pipeline: "GpuPipeline", ctx: "_Context"):
        self.contexts: List[Any] = []
        for stage in pipeline.engines:
            context = stage.create_context(ctx.stream, ctx.scratch)
            for name in stage.io:
                context.set_tensor_address(name, ctx.buffers.ptr(name))
            self.contexts.append(context)
        self.bound: Dict[Tuple[int, str], int] = {}  # (engine index, input) -> address, if not ours
        # per engine: its varying inputs' shapes last set, and its output shapes for them
        self.input_shapes: List[Optional[Tuple[Shape, ...]]] = [None] * len(pipeline.engines)
        self.output_shapes: List[Dict[str, Shape]] = [
            {n: stage.max_shapes[n] for n in stage.outputs} for stage in pipeline.engines]


class _Context:
    """What one call at a time uses: a stream, device buffers for every engine tensor (sized for
    their largest shapes), pinned staging buffers, TensorRT execution contexts and, once
    captured, CUDA graphs by input shape."""

    def __init__(self, pipeline: "GpuPipeline"):
        cuda.set_device(pipeline.device)
        self.pipeline = pipeline
        self.stream = cuda.Stream()
        self.buffers = TensorBuffers({n: (pipeline.max_shapes[n], dtype) for n, (_, dtype)
                                      in pipeline.device_tensors.items()}, pipeline.device)
        self.pinned = {name: cuda.PinnedBuffer(pipeline.max_shapes[name],
                                               pipeline.device_tensors[name][1])
                       for name in pipeline.staged}
        # a dynamic model's graphs each keep their own execution contexts: one shared scratch
        self.scratch = (cuda.DeviceBuffer(pipeline.scratch_bytes) if pipeline.shared_scratch
                        else None)
        self.graphs = cuda.GraphCache(pipeline.graph_cache_size)
        self.graph_failed = False
        self._eager: Optional[_Engines] = None
        # the first set of execution contexts now: out of memory shows at load, not first call
        self._spare: List[_Engines] = [_Engines(pipeline, self)] if pipeline.engines else []

    def eager(self) -> _Engines:
        """The execution contexts for stage-by-stage runs (any shape, set per call)."""
        if self._eager is None:
            self._eager = self._spare.pop() if self._spare else _Engines(self.pipeline, self)
        return self._eager

    def for_capture(self) -> _Engines:
        """Execution contexts for a new graph: unused ones, or those of the graph evicted to
        make room, or new ones."""
        if self._spare:
            return self._spare.pop()
        evicted = self.graphs.make_room()
        return evicted if evicted is not None else _Engines(self.pipeline, self)


def _on_device(stage: Any) -> bool:
    """Does ``stage`` run on the GPU with its tensors there (ONNX Runtime's CUDA provider)?"""
    return getattr(stage, "cuda_device", None) is not None


class GpuPipeline:
    """A model's stages run on one GPU (module docstring: data flow, shapes, graphs, threads).

    Args:
        stages: TensorRTStage, ONNX Runtime (on this GPU or the host) and MXNet stage objects,
            in execution order.
        inputs: the model's input names.
        outputs: the model's output names.
        cuda_graph: capture and replay CUDA graphs when every stage is an engine.
        device: the CUDA device index.
        max_contexts: the most execution contexts, i.e. concurrent calls, kept.
        graph_cache_size: the most CUDA graphs (input shapes) kept per execution context.
    """

    def __init__(self, stages: Sequence[Any], inputs: Sequence[str], outputs: Sequence[str],
                 cuda_graph: bool = True, device: int = 0,
                 max_contexts: int = DEFAULT_MAX_CONTEXTS,
                 graph_cache_size: int = GRAPH_CACHE_SIZE):
        self.stages = list(stages)
        self.engines = [s for s in self.stages if isinstance(s, TensorRTStage)]
        self.inputs, self.outputs = list(inputs), list(outputs)
        self.device = device
        self.cuda_graph = bool(cuda_graph) and len(self.engines) == len(self.stages)
        self.graph_cache_size = graph_cache_size
        # tensor name -> (manifest shape, -1 where it varies; dtype) for every engine tensor
        self.device_tensors: Dict[str, Tuple[Shape, np.dtype]] = {}
        self.max_shapes: Dict[str, Shape] = {}
        for stage in self.engines:
            for name, spec in stage.io.items():
                if self.device_tensors.setdefault(name, spec) != spec or self.max_shapes.setdefault(
                        name, stage.max_shapes[name]) != stage.max_shapes[name]:
                    raise BundleError(f"tensor '{name}' is {spec} in stage '{stage.name}' but "
                                      f"{self.device_tensors[name]} elsewhere; recompile the bundle")
        self.dynamic = any(stage.dynamic for stage in self.engines)
        # several graphs, each with its own execution contexts, share one activation buffer
        self.shared_scratch = self.dynamic and self.cuda_graph
        self.scratch_bytes = (max(stage.scratch_bytes for stage in self.engines)
                              if self.shared_scratch else 0)
        # stages on the host (MXNet, ONNX Runtime on the CPU) exchange tensors through pinned
        # memory; ONNX Runtime stages on this GPU read and write device memory directly
        residual = [s for s in self.stages if not isinstance(s, TensorRTStage)
                    and not _on_device(s)]
        crossing = {n for s in residual for n in [*s.inputs, *s.outputs]}
        # device tensors that cross to or from the host get a pinned staging buffer
        self.staged: Set[str] = {n for n in self.device_tensors
                                 if n in self.inputs or n in self.outputs or n in crossing}
        # outputs of ONNX Runtime GPU stages no device stage reads: only the host needs them
        # (model outputs when numpy is asked for; host stages' inputs always)
        read_on_device = {n for s in self.stages if isinstance(s, TensorRTStage) or _on_device(s)
                          for n in s.inputs}
        produced = {n for s in self.stages if _on_device(s) for n in s.outputs}
        self.host_only_device = {n for n in produced - read_on_device if n in crossing}
        self.host_only = self.host_only_device | {n for n in produced - read_on_device
                                                  if n in self.outputs}
        self._caches_saved = False
        self._pool = ContextPool(lambda: _Context(self), max_contexts)
        if self.engines:  # the first context now: out of memory shows at load, not first call
            with self._pool.take():
                pass

    @property
    def contexts_created(self) -> int:
        """How many execution contexts the pool has made so far."""
        return self._pool.created

    is_device_array = staticmethod(is_device_array)

    def device_input(self, name: str, value: Any, spec: Any) -> DeviceArray:
        """Check a GPU array given for input ``name`` against ``spec`` (shape or range, dtype).

        Returns:
            The array as a DeviceArray view, used in place.

        Raises:
            InputError: another GPU, a shape outside the range, another dtype, or a
                non-contiguous array.
        """
        array = as_device_array(value, name)
        if array.device != self.device:
            raise InputError(f"input '{name}': array is on GPU {array.device}, the model runs on "
                             f"GPU {self.device}; move it there first")
        problem = spec.accepts(array.shape)
        if problem:
            raise InputError(f"input '{name}': {problem}")
        if not array.contiguous:
            raise InputError(f"input '{name}': GPU array is not C-contiguous; pass x.contiguous() "
                             "(torch) or cupy.ascontiguousarray(x)")
        want = self.device_tensors.get(name, (None, np.dtype(spec.dtype)))[1]
        if array.dtype != want:
            raise InputError(f"input '{name}': expected dtype {want}, got {array.dtype}; GPU arrays "
                             f"are used in place, so convert on the GPU first (to {want})")
        return array

    def run(self, feeds: Mapping[str, Any], output: str = "numpy") -> Dict[str, Any]:
        """Run all stages on checked ``feeds`` (numpy arrays or DeviceArrays).

        Args:
            feeds: input name -> array, as Model.validate_inputs returns them.
            output: 'numpy' for numpy arrays, 'device' for DeviceArrays on this GPU.

        Returns:
            Output name -> array, of the shapes this call's inputs give.

        Raises:
            CudaError: a CUDA call or an engine launch failed.
            BundleError: an engine gives an output shape its buffer cannot hold.
        """
        with self._pool.take() as ctx:
            cuda.set_device(self.device)
            result = self._run(ctx, feeds, output)
        if not self._caches_saved:  # the first call compiled TensorRT-RTX's kernels: keep them
            self._caches_saved = True
            for stage in self.engines:
                stage.save_runtime_cache()
        return result

    def _run(self, ctx: _Context, feeds: Mapping[str, Any], output: str) -> Dict[str, Any]:
        stream = ctx.stream
        graphed = self.cuda_graph and not ctx.graph_failed
        host: Dict[str, np.ndarray] = {}
        on_device: Dict[str, DeviceArray] = {}  # tensor -> where it is on the GPU in this call
        for name, value in feeds.items():
            if isinstance(value, DeviceArray):
                if value.sync_stream is not None:
                    stream.wait_for(value.sync_stream)
                on_device[name] = value
                if graphed and name in ctx.buffers:  # a graph reads fixed addresses
                    target = ctx.buffers.view(name, value.shape)
                    stream.copy_d2d(target.ptr, value.ptr, value.nbytes)
                    on_device[name] = target
            else:
                host[name] = value
                if name in ctx.buffers:
                    self._upload(ctx, name, value, on_device)

        if not graphed:
            engines, index = (ctx.eager() if self.engines else None), 0
            fresh: Set[str] = set()
            for stage in self.stages:
                if isinstance(stage, TensorRTStage):
                    self._launch(ctx, engines, index, on_device)
                    index += 1
                elif _on_device(stage):
                    self._run_on_device(ctx, stage, host, on_device, output, fresh)
                else:
                    self._run_residual(ctx, stage, host, on_device)
            return self._outputs(ctx, host, on_device, output, fresh)

        key = tuple(tuple(feeds[name].shape) for name in self.inputs)
        entry = ctx.graphs.lookup(key)
        if entry is not None:  # captured at exactly these input shapes
            graph, engines = entry
            graph.launch(stream)
            for shapes in engines.output_shapes:
                for name, shape in shapes.items():
                    on_device[name] = ctx.buffers.view(name, shape)
            return self._outputs(ctx, host, on_device, output)
        engines = ctx.for_capture()
        for index in range(len(self.engines)):  # the warm-up run at these shapes
            self._launch(ctx, engines, index, on_device)
        results = self._outputs(ctx, host, on_device, output)
        self._capture(ctx, key, engines)
        return results

    def _upload(self, ctx: _Context, name: str, value: np.ndarray,
                on_device: Dict[str, DeviceArray]) -> None:
        target = ctx.buffers.view(name, value.shape)
        pinned = ctx.pinned[name]
        np.copyto(pinned.view(value.shape), value, casting="same_kind")
        ctx.stream.copy_h2d(target.ptr, pinned.ptr, target.nbytes)
        on_device[name] = target

    def _launch(self, ctx: _Context, engines: _Engines, index: int,
                on_device: Dict[str, DeviceArray]) -> None:
        stage, context = self.engines[index], engines.contexts[index]
        if stage.dynamic:
            shapes = tuple(on_device[name].shape for name in stage.varying)
            if shapes != engines.input_shapes[index]:
                engines.input_shapes[index] = None  # unknown until set_shapes succeeds
                engines.output_shapes[index] = stage.set_shapes(context, shapes)
                engines.input_shapes[index] = shapes
        for name in stage.inputs:  # bind GPU inputs given in place; our own buffers otherwise
            address = on_device[name].ptr
            if engines.bound.get((index, name), ctx.buffers.ptr(name)) != address:
                context.set_tensor_address(name, address)
                engines.bound[(index, name)] = address
        if not context.execute_async_v3(ctx.stream.ptr):
            raise CudaError(f"stage '{stage.name}': execute_async_v3 failed (TensorRT's message "
                            "is in the log above)")
        for name, shape in engines.output_shapes[index].items():
            on_device[name] = ctx.buffers.view(name, shape)

    def _to_host(self, ctx: _Context, names: Sequence[str], host: Dict[str, np.ndarray],
                 on_device: Mapping[str, DeviceArray]) -> bool:
        """Bring ``names`` into ``host``; returns whether the stream was synchronized."""
        missing = [n for n in names if n not in host]
        staged: Dict[str, np.ndarray] = {}
        for name in missing:
            if name in ctx.pinned:
                source = on_device[name]
                staged[name] = ctx.pinned[name].view(source.shape)
                ctx.stream.copy_d2h(ctx.pinned[name].ptr, source.ptr, staged[name].nbytes)
        if missing:
            ctx.stream.synchronize()
        for name in missing:
            # a GPU input that only residual stages read has no staging buffer: plain copy
            host[name] = staged[name] if name in staged else on_device[name].numpy()
        return bool(missing)

    def _run_on_device(self, ctx: _Context, stage: Any, host: Dict[str, np.ndarray],
                       on_device: Dict[str, DeviceArray], output: str, fresh: Set[str]) -> None:
        """An ONNX Runtime stage on this GPU: device inputs bound in place (host ones copied by
        ONNX Runtime), outputs left on the device for the stages after it, except those only
        the host needs (numpy model outputs, host stages' inputs): ONNX Runtime copies those
        there itself. ``fresh`` collects the device outputs this call owns outright."""
        if any(name in on_device for name in stage.inputs):
            ctx.stream.synchronize()  # ONNX Runtime runs on its own stream: our writes first
        feeds = {name: on_device[name] if name in on_device else host[name]
                 for name in stage.inputs}
        wanted = self.host_only if output != "device" else self.host_only_device
        for name, value in stage.run_on_device(feeds, wanted).items():
            if isinstance(value, np.ndarray):
                host[name] = value
            else:
                on_device[name] = value
                fresh.add(name)

    def _run_residual(self, ctx: _Context, stage: Any, host: Dict[str, np.ndarray],
                      on_device: Dict[str, DeviceArray]) -> None:
        self._to_host(ctx, stage.inputs, host, on_device)
        results = stage.run({n: host[n] for n in stage.inputs})
        host.update(results)
        for name, value in results.items():
            if name in ctx.buffers:  # a later engine takes it
                self._upload(ctx, name, value, on_device)

    def _outputs(self, ctx: _Context, host: Dict[str, np.ndarray],
                 on_device: Mapping[str, DeviceArray], output: str,
                 fresh: Set[str] = frozenset()) -> Dict[str, Any]:  # type: ignore[assignment]
        """The call's outputs; ``fresh``: device tensors this call owns outright (an ONNX Runtime
        stage's outputs), handed out as they are rather than copied."""
        stream = ctx.stream
        results: Dict[str, Any] = {}
        if output == "device":
            for name in self.outputs:
                source = on_device.get(name)
                if name in fresh and name not in self.inputs:
                    results[name] = source
                    continue
                if source is not None:
                    array = DeviceArray.empty(source.shape, source.dtype, self.device, stream)
                    stream.copy_d2d(array.ptr, source.ptr, array.nbytes)
                else:  # made on the host by a residual stage
                    value = np.ascontiguousarray(host[name])
                    array = DeviceArray.empty(value.shape, value.dtype, self.device, stream)
                    stream.copy_h2d(array.ptr, value.ctypes.data, value.nbytes)
                    stream.synchronize()  # ``value`` is pageable memory that may go away
                results[name] = array
            stream.synchronize()
            return results
        if not self._to_host(ctx, [n for n in self.outputs if n in on_device], host, on_device):
            stream.synchronize()
        for name in self.outputs:
            # pinned staging is reused by the next call: hand out copies
            results[name] = host[name].copy() if name in ctx.pinned else host[name]
        return results

    def _capture(self, ctx: _Context, key: Tuple[Shape, ...], engines: _Engines) -> None:
        stream = ctx.stream

        def enqueue() -> None:
            for stage, context in zip(self.engines, engines.contexts):
                if not context.execute_async_v3(stream.ptr):
                    raise CudaError(f"stage '{stage.name}': execute_async_v3 failed in capture")

        try:
            capturable = [getattr(c, "is_stream_capturable", None) for c in engines.contexts]
            if not all(check(stream.ptr) for check in capturable if check is not None):
                raise CudaError("TensorRT reports the execution context is not stream capturable")
            graph = cuda.Graph(stream, enqueue)
        except CudaError as exc:
            ctx.graph_failed = True
            ctx.graphs.clear()
            ctx._eager = engines
            warnings.warn(f"CUDA graph capture failed, running stage by stage instead: {exc}",
                          RuntimeWarning, stacklevel=3)
            return
        ctx.graphs.add(key, graph, engines)
