"""GPU execution of a bundle's engines: TensorRT, TensorRT-RTX or the lean runtime,
``set_tensor_address`` + ``execute_async_v3`` on cuda-python streams and buffers.

:class:`TensorRTStage` holds one deserialized engine. :class:`GpuPipeline` runs a model's stages
in order on one GPU:

- Tensors between consecutive engines stay on the device: the producer's output buffer is the
  consumer's input buffer. Residual (MXNet) stages exchange tensors with engines through pinned
  host memory.
- Inputs are numpy arrays (staged through pinned memory) or GPU arrays (torch, cupy, MXNet,
  :class:`~trtc.runtime.dlpack.DeviceArray`), read in place: bound to the engine directly, or,
  when a CUDA graph is replayed (its addresses are fixed), copied device-to-device into the
  graph's input buffer.
- Outputs are numpy arrays, or new DeviceArrays (``output="device"``): a device-to-device copy
  out of the context's buffers, so that a returned array survives later calls.
- CUDA graphs: when every stage is an engine, a context's first call runs stage by stage (the
  warm-up TensorRT needs) and then captures all engine launches as one graph, replayed by every
  later call. If capture fails the context warns once and stays stage by stage.

Thread rule: one execution context per thread at a time. The pipeline keeps a pool of contexts,
each with its own TensorRT execution contexts, stream, device and pinned buffers and graph; a
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
from ..dlpack import DeviceArray, as_device_array, is_device_array
from ..errors import BundleError, CudaError, IncompatibleError, InputError

__all__ = [
    "TensorRTStage",
    "GpuPipeline",
    "ContextPool",
    "import_backend",
    "backend_unavailable_reason",
    "runtime_unavailable_reason",
    "RTX_RUNNABLE_CC",
    "DEFAULT_MAX_CONTEXTS",
]

# Compute capabilities TensorRT-RTX engines can run on (its support matrix); 9.0 is not one.
RTX_RUNNABLE_CC = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
_MODULES = {"tensorrt": ("tensorrt", "tensorrt_lean"), "tensorrt_rtx": ("tensorrt_rtx",)}
DEFAULT_MAX_CONTEXTS = 4


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
    return None


class TensorRTStage:
    """One engine stage: the engine, deserialized once, and its IO (shape and dtype per tensor).

    Execution contexts are made per :class:`GpuPipeline` context by :meth:`create_context`.
    """

    def __init__(self, stage: Mapping[str, Any], engine_bytes: bytes, device: int = 0):
        trt = import_backend(stage["backend"])
        self.name: str = stage["name"]
        self.inputs = [t["name"] for t in stage["inputs"]]
        self.outputs = [t["name"] for t in stage["outputs"]]
        self.device = device
        self._alone: Optional[GpuPipeline] = None
        self._lock = threading.Lock()
        cuda.set_device(device)
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = runtime = trt.Runtime(self._logger)
        self.engine = engine = runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None:
            raise IncompatibleError(f"stage '{self.name}': {stage['backend']} refused to "
                                    "deserialize the engine on this GPU; recompile for it")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if set(names) != set(self.inputs) | set(self.outputs):
            raise BundleError(f"stage '{self.name}': engine IO {sorted(names)} does not match the "
                              "manifest; recompile the bundle")
        manifest_shapes = {t["name"]: tuple(t["shape"]) for t in [*stage["inputs"], *stage["outputs"]]}
        # name -> (shape, dtype); shapes are the manifest's, which fills an engine's -1 dimensions
        self.io: Dict[str, Tuple[Tuple[int, ...], np.dtype]] = {}
        self.dynamic_inputs: List[str] = []
        for name in names:
            engine_shape = tuple(engine.get_tensor_shape(name))
            shape = manifest_shapes[name]
            if len(engine_shape) != len(shape) or any(e not in (-1, s) for e, s in zip(engine_shape, shape)):
                raise BundleError(f"stage '{self.name}': tensor '{name}' has shape {engine_shape} in "
                                  f"the engine, {shape} in the manifest; recompile the bundle")
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            if is_input != (name in self.inputs):
                raise BundleError(f"stage '{self.name}': tensor '{name}' is an engine "
                                  f"{'input' if is_input else 'output'}, not so in the manifest")
            if is_input and -1 in engine_shape:
                self.dynamic_inputs.append(name)
            self.io[name] = (shape, np.dtype(trt.nptype(engine.get_tensor_dtype(name))))

    def create_context(self) -> Any:
        """A new execution context with every dynamic input shape set.

        Raises:
            CudaError: TensorRT could not make one (typically out of GPU memory).
        """
        with self._lock:  # one context at a time per engine, whichever thread asks
            context = self.engine.create_execution_context()
        if context is None:
            raise CudaError(f"stage '{self.name}': TensorRT could not create an execution context "
                            "(out of GPU memory?)")
        for name in self.dynamic_inputs:
            if not context.set_input_shape(name, self.io[name][0]):
                raise BundleError(f"stage '{self.name}': the engine refuses input shape "
                                  f"{self.io[name][0]} for '{name}'; recompile the bundle")
        return context

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run this engine alone on host arrays (models run engines through GpuPipeline)."""
        if self._alone is None:
            self._alone = GpuPipeline([self], self.inputs, self.outputs, cuda_graph=False,
                                      device=self.device)
        return self._alone.run(feeds, "numpy")


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


class _Context:
    """What one call at a time uses: a stream, one execution context per engine, device buffers
    for every engine tensor, pinned staging buffers and, once captured, the CUDA graph."""

    def __init__(self, pipeline: "GpuPipeline"):
        cuda.set_device(pipeline.device)
        self.stream = cuda.Stream()
        self.buffers: Dict[str, DeviceArray] = {}
        for name, (shape, dtype) in pipeline.device_tensors.items():
            buffer = cuda.DeviceBuffer(_nbytes(shape, dtype))
            self.buffers[name] = DeviceArray(buffer.ptr, shape, dtype, pipeline.device, owner=buffer)
        self.pinned = {name: cuda.PinnedBuffer(*pipeline.device_tensors[name])
                       for name in pipeline.staged}
        self.contexts: List[Any] = []
        for stage in pipeline.engines:
            context = stage.create_context()
            for name in stage.io:
                context.set_tensor_address(name, self.buffers[name].ptr)
            self.contexts.append(context)
        self.bound: Dict[Tuple[int, str], int] = {}  # (engine index, input) -> address, if not ours
        self.graph: Optional[cuda.Graph] = None
        self.graph_failed = False


def _nbytes(shape: Sequence[int], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


class GpuPipeline:
    """A model's stages run on one GPU (module docstring: data flow, graphs, thread rule).

    Args:
        stages: TensorRTStage and residual stage objects, in execution order.
        inputs: the model's input names.
        outputs: the model's output names.
        cuda_graph: capture and replay a CUDA graph when every stage is an engine.
        device: the CUDA device index.
        max_contexts: the most execution contexts, i.e. concurrent calls, kept.
    """

    def __init__(self, stages: Sequence[Any], inputs: Sequence[str], outputs: Sequence[str],
                 cuda_graph: bool = True, device: int = 0,
                 max_contexts: int = DEFAULT_MAX_CONTEXTS):
        self.stages = list(stages)
        self.engines = [s for s in self.stages if isinstance(s, TensorRTStage)]
        self.inputs, self.outputs = list(inputs), list(outputs)
        self.device = device
        self.cuda_graph = bool(cuda_graph) and len(self.engines) == len(self.stages)
        # tensor name -> (shape, dtype) for every tensor an engine takes or makes
        self.device_tensors: Dict[str, Tuple[Tuple[int, ...], np.dtype]] = {}
        for stage in self.engines:
            for name, spec in stage.io.items():
                if self.device_tensors.setdefault(name, spec) != spec:
                    raise BundleError(f"tensor '{name}' is {spec} in stage '{stage.name}' but "
                                      f"{self.device_tensors[name]} elsewhere; recompile the bundle")
        residual = [s for s in self.stages if not isinstance(s, TensorRTStage)]
        crossing = {n for s in residual for n in [*s.inputs, *s.outputs]}
        # device tensors that cross to or from the host get a pinned staging buffer
        self.staged: Set[str] = {n for n in self.device_tensors
                                 if n in self.inputs or n in self.outputs or n in crossing}
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
        """Check a GPU array given for input ``name`` against ``spec`` (shape and dtype).

        Returns:
            The array as a DeviceArray view, used in place.

        Raises:
            InputError: another GPU, shape, dtype, or a non-contiguous array.
        """
        array = as_device_array(value, name)
        if array.device != self.device:
            raise InputError(f"input '{name}': array is on GPU {array.device}, the model runs on "
                             f"GPU {self.device}; move it there first")
        if array.shape != tuple(spec.shape):
            what = "rank" if array.ndim != len(spec.shape) else "shape"
            raise InputError(f"input '{name}': wrong {what}: expected shape {tuple(spec.shape)}, "
                             f"got {array.shape}")
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
            Output name -> array.

        Raises:
            CudaError: a CUDA call or an engine launch failed.
        """
        with self._pool.take() as ctx:
            cuda.set_device(self.device)
            return self._run(ctx, feeds, output)

    def _run(self, ctx: _Context, feeds: Mapping[str, Any], output: str) -> Dict[str, Any]:
        stream = ctx.stream
        host: Dict[str, np.ndarray] = {}
        on_device: Dict[str, DeviceArray] = {}  # tensor -> where it is on the GPU in this call
        for name, value in feeds.items():
            if isinstance(value, DeviceArray):
                if value.sync_stream is not None:
                    stream.wait_for(value.sync_stream)
                on_device[name] = value
                if self.cuda_graph and name in ctx.buffers:  # the graph reads fixed addresses
                    stream.copy_d2d(ctx.buffers[name].ptr, value.ptr, value.nbytes)
                    on_device[name] = ctx.buffers[name]
            else:
                host[name] = value
                if name in ctx.buffers:
                    self._upload(ctx, name, value, on_device)

        if ctx.graph is not None:
            ctx.graph.launch(stream)
            on_device.update({n: ctx.buffers[n] for s in self.engines for n in s.outputs})
        else:
            engine_index = 0
            for stage in self.stages:
                if isinstance(stage, TensorRTStage):
                    self._launch(ctx, engine_index, on_device)
                    engine_index += 1
                else:
                    self._run_residual(ctx, stage, host, on_device)

        results = self._outputs(ctx, host, on_device, output)
        if self.cuda_graph and ctx.graph is None and not ctx.graph_failed:
            self._capture(ctx)
        return results

    def _upload(self, ctx: _Context, name: str, value: np.ndarray,
                on_device: Dict[str, DeviceArray]) -> None:
        pinned = ctx.pinned[name]
        np.copyto(pinned.array, value, casting="same_kind")
        ctx.stream.copy_h2d(ctx.buffers[name].ptr, pinned.ptr, pinned.nbytes)
        on_device[name] = ctx.buffers[name]

    def _launch(self, ctx: _Context, index: int, on_device: Dict[str, DeviceArray]) -> None:
        stage, context = self.engines[index], ctx.contexts[index]
        for name in stage.inputs:  # bind GPU inputs given in place; our own buffers otherwise
            address = on_device[name].ptr
            if ctx.bound.get((index, name), ctx.buffers[name].ptr) != address:
                context.set_tensor_address(name, address)
                ctx.bound[(index, name)] = address
        if not context.execute_async_v3(ctx.stream.ptr):
            raise CudaError(f"stage '{stage.name}': execute_async_v3 failed (TensorRT's message "
                            "is in the log above)")
        for name in stage.outputs:
            on_device[name] = ctx.buffers[name]

    def _to_host(self, ctx: _Context, names: Sequence[str], host: Dict[str, np.ndarray],
                 on_device: Mapping[str, DeviceArray]) -> bool:
        """Bring ``names`` into ``host``; returns whether the stream was synchronized."""
        missing = [n for n in names if n not in host]
        for name in missing:
            if name in ctx.pinned:
                pinned = ctx.pinned[name]
                ctx.stream.copy_d2h(pinned.ptr, on_device[name].ptr, pinned.nbytes)
        if missing:
            ctx.stream.synchronize()
        for name in missing:
            # a GPU input that only residual stages read has no staging buffer: plain copy
            host[name] = ctx.pinned[name].array if name in ctx.pinned else on_device[name].numpy()
        return bool(missing)

    def _run_residual(self, ctx: _Context, stage: Any, host: Dict[str, np.ndarray],
                      on_device: Dict[str, DeviceArray]) -> None:
        self._to_host(ctx, stage.inputs, host, on_device)
        results = stage.run({n: host[n] for n in stage.inputs})
        host.update(results)
        for name, value in results.items():
            if name in ctx.buffers:  # a later engine takes it
                self._upload(ctx, name, value, on_device)

    def _outputs(self, ctx: _Context, host: Dict[str, np.ndarray],
                 on_device: Mapping[str, DeviceArray], output: str) -> Dict[str, Any]:
        stream = ctx.stream
        results: Dict[str, Any] = {}
        if output == "device":
            for name in self.outputs:
                source = on_device.get(name)
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

    def _capture(self, ctx: _Context) -> None:
        stream = ctx.stream

        def enqueue() -> None:
            for stage, context in zip(self.engines, ctx.contexts):
                if not context.execute_async_v3(stream.ptr):
                    raise CudaError(f"stage '{stage.name}': execute_async_v3 failed in capture")

        try:
            capturable = [getattr(c, "is_stream_capturable", None) for c in ctx.contexts]
            if not all(check(stream.ptr) for check in capturable if check is not None):
                raise CudaError("TensorRT reports the execution context is not stream capturable")
            ctx.graph = cuda.Graph(stream, enqueue)
        except CudaError as exc:
            ctx.graph_failed = True
            warnings.warn(f"CUDA graph capture failed, running stage by stage instead: {exc}",
                          RuntimeWarning, stacklevel=3)
