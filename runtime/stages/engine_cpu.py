"""ONNX Runtime stages: the very ONNX an engine was built from (the CPU path, or the GPU path where
no TensorRT flavor can run the engine), and the ONNX stages of ops kept out of engines (every
path). On the host with the CPU execution provider, or on a GPU with the CUDA execution provider
(``onnxruntime-gpu``), whose inputs and outputs stay on the device (I/O binding)."""

from __future__ import annotations

import os
import resource
import threading
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..bundle import shape_fits, shape_text
from ..errors import BundleError, IncompatibleError, InputError
from ..onnx_check import OnnxRefused, check_onnx

__all__ = ["OnnxRuntimeStage", "import_onnxruntime", "check_onnx", "cuda_provider_unavailable_reason",
           "host_memory_limit", "parse_size", "proc_kib", "MEMORY_LIMIT_ENV"]

MEMORY_LIMIT_ENV = "TRTC_MEMORY_LIMIT"


def import_onnxruntime() -> Any:
    """Import onnxruntime or explain how to get it."""
    try:
        import onnxruntime
    except ImportError:
        raise IncompatibleError("the CPU execution path needs ONNX Runtime: "
                                "pip install 'trtc[cpu]' (or onnxruntime)") from None
    return onnxruntime


CUDA_PROVIDER = "CUDAExecutionProvider"


def cuda_options(device: int, stage: Mapping[str, Any], **extra: str) -> Dict[str, Any]:
    """ONNX Runtime's CUDA provider options for ``stage`` on GPU ``device``. An fp32 stage
    has TF32 off: its convolutions and MatMuls then compute in float32 as the accuracy gate
    verified them on the CPU path (with TF32, ONNX Runtime's default on Ampere and later, an
    fp32 HRNet came out 8e-4 off its verified CPU path on an H200, 8x an fp32 bundle's 1e-4
    tolerance; 1e-6 without). fp16 and int8 stages keep the default (their tolerance is 2e-2,
    and cuDNN has no TF32-free plan for some fp16 convolutions: error lines, then a fallback)."""
    options: Dict[str, Any] = {"device_id": device, **extra}
    if stage.get("precision", "fp32") == "fp32":
        options["use_tf32"] = "0"
    return options

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def host_memory_limit() -> Optional[int]:
    """The most host memory, in bytes, that ONNX Runtime may hold for all of this process's
    stages together (its tensors: activations and the weights it copies), or None for no bound.

    ``TRTC_MEMORY_LIMIT`` sets it (bytes, or with a K/M/G/T suffix, binary; ``0`` or ``none``:
    no bound). By default: 3/4 of the memory available when the first stage is made (Linux's
    MemAvailable), and at most 3/4 of what the process's address-space limit, where one is set,
    leaves it then. A
    crafted bundle whose ONNX makes a huge intermediate (a Resize, Expand, ConstantOfShape,
    Range or Pad edited to ask for tens of GiB) then fails with one line instead of taking the
    machine's memory, and so does a legitimate call too big for the machine."""
    text = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if text:
        try:
            return parse_size(text)
        except ValueError:
            raise IncompatibleError(f"{MEMORY_LIMIT_ENV}={text!r} is not a size: give bytes or "
                                    "e.g. 8G (0 or none: no bound)") from None
    limits = []
    available = proc_kib("/proc/meminfo", "MemAvailable:")
    if available is not None:
        limits.append(available * 1024 * 3 // 4)
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:  # what the address-space limit leaves this process
        limits.append(max(soft - (proc_kib("/proc/self/status", "VmSize:") or 0) * 1024, 0) * 3 // 4)
    return max(min(limits), 2**20) if limits else None


def proc_kib(path: str, key: str) -> Optional[int]:
    """A kB value from a /proc file (None where there is none: not Linux)."""
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def parse_size(text: str) -> Optional[int]:
    """A ``TRTC_MEMORY_LIMIT`` value in bytes: ``"8G"``, ``"512MiB"``, ``"1.5g"``, ``"1048576"``
    (K/M/G/T binary); None for ``0`` or ``none`` (no bound); at least 1 MiB.

    Raises:
        ValueError: not a size.
    """
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    if text in ("0", "NONE"):
        return None
    unit = text[-1:] if text[-1:] in _UNITS and not text[-1:].isdigit() else ""
    value = float(text[:len(text) - len(unit)])  # ValueError for junk
    if not value > 0:
        raise ValueError(text)
    return max(int(value * _UNITS[unit]), 2**20)


_ALLOCATOR_LOCK = threading.Lock()
_ALLOCATOR: Dict[str, Optional[int]] = {}


def _bounded_host_allocator(ort: Any) -> Optional[int]:
    """Register, once per process, a host memory arena capped at ``host_memory_limit()`` that
    every CPU-side ONNX Runtime session of trtc then uses (``session.use_env_allocators``).
    Returns the cap (None: unbounded, or this ONNX Runtime cannot register one)."""
    with _ALLOCATOR_LOCK:
        if "limit" not in _ALLOCATOR:
            limit = host_memory_limit()
            if limit is not None:
                try:
                    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                             ort.OrtMemType.DEFAULT)
                    ort.create_and_register_allocator(info, ort.OrtArenaCfg(limit, -1, -1, -1))
                except Exception:  # another part of this process registered one: use theirs
                    limit = None
            _ALLOCATOR["limit"] = limit
        return _ALLOCATOR["limit"]


def cuda_provider_unavailable_reason() -> Optional[str]:
    """Why ONNX Runtime cannot run stages on the GPU here, or None (the CUDA execution provider
    of ``onnxruntime-gpu`` is installed; whether its CUDA libraries load shows when a session is
    made, which then fails with its own reason)."""
    try:
        ort = import_onnxruntime()
    except IncompatibleError as exc:
        return str(exc)
    if CUDA_PROVIDER not in ort.get_available_providers():
        return (f"ONNX Runtime {ort.__version__} has no CUDA execution provider: pip install "
                "'trtc[cuda]' (onnxruntime-gpu) for it")
    return None


class OnnxRuntimeStage:
    """A stage run by ONNX Runtime on the host: an engine stage on the CPU path (the ONNX the
    engine was built from), or an ONNX stage on any path (ops kept out of engines that have an
    exact ONNX). Thread-safe (ORT sessions are)."""

    def __init__(self, stage: Mapping[str, Any], onnx_bytes: bytes, intra_op_threads: int = 0,
                 cuda_device: Optional[int] = None, cuda_graph: bool = False,
                 memory_arena: bool = True):
        """``cuda_device``: run on that GPU with ONNX Runtime's CUDA execution provider (nodes it
        has no kernel for run on the host, as ONNX Runtime places them), else on the CPU.
        ``cuda_graph``: on the GPU, for a stage of static shapes whose every node the CUDA
        provider runs, let ONNX Runtime capture it as a CUDA graph and replay it (its inputs and
        outputs then live in fixed device buffers, so calls of this stage are serialized); where
        ONNX Runtime refuses (a node on the host), the stage runs without a graph.
        ``memory_arena``: False: on the host, each run allocates its buffers and frees them when
        it returns. ONNX Runtime's arena (the default) keeps a session's peak for its life:
        right for a model called again and again, wrong for one that runs many large stages
        once each (the compiler's accuracy gate then held every stage's peak at once)."""
        ort = import_onnxruntime()
        self._ort = ort
        self.cuda_device = cuda_device
        self.graphed = False
        self._graph_lock = threading.Lock()
        self.name: str = stage["name"]
        self.inputs = [t["name"] for t in stage["inputs"]]
        self.outputs = [t["name"] for t in stage["outputs"]]
        self._output_specs = [(t["name"], t, np.dtype(t["dtype"])) for t in stage["outputs"]]
        try:
            check_onnx(onnx_bytes)
        except OnnxRefused as exc:
            raise BundleError(f"stage '{self.name}': {exc}; refusing a bundle `trtc compile` "
                              "did not write") from None
        options = ort.SessionOptions()
        # Fatal only: a failure reaches the user once, as our one-line error, not also as ORT's
        # multi-line log on stderr.
        options.log_severity_level = 4
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = memory_arena
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        # the process's capped arena (TRTC_MEMORY_LIMIT); without an arena, plain allocations
        # (memory_arena=False: the compiler's gate, on bundles it has just written)
        self._memory_limit = _bounded_host_allocator(ort) if memory_arena else None
        if memory_arena:
            options.add_session_config_entry("session.use_env_allocators", "1")
        try:
            # enable_fallback=0: on a failure ORT's Python layer would otherwise print an
            # "EP Error" banner on stdout and retry; the failure reaches the user as one line.
            static = all(-1 not in t["shape"] for t in [*stage["inputs"], *stage["outputs"]])
            self._session = None
            if cuda_device is not None and cuda_graph and static:
                self._session = self._graph_session(ort, onnx_bytes, options, stage)
            if self._session is None:
                providers: List[Any] = ["CPUExecutionProvider"]
                if cuda_device is not None:
                    providers.insert(0, (CUDA_PROVIDER, cuda_options(cuda_device, stage)))
                self._session = ort.InferenceSession(onnx_bytes, sess_options=options,
                                                     providers=providers, enable_fallback=0)
        except Exception as exc:  # ORT raises its own exception types for bad models
            raise BundleError(f"stage '{self.name}': ONNX Runtime cannot load its ONNX "
                              f"({_first_line(exc)}); recompile the bundle") from None
        if cuda_device is not None and CUDA_PROVIDER not in self._session.get_providers():
            raise IncompatibleError(f"stage '{self.name}': ONNX Runtime's CUDA execution provider "
                                    "did not load (its CUDA, cuDNN or cuBLAS libraries are "
                                    "missing or do not match); use device='cpu'")
        if hasattr(self._session, "disable_fallback"):
            self._session.disable_fallback()  # the same banner from run()
        names = {i.name for i in self._session.get_inputs()}
        if names != set(self.inputs):
            raise BundleError(f"stage '{self.name}': its ONNX inputs {sorted(names)} do not match "
                              f"the manifest {sorted(self.inputs)}; recompile the bundle")
        declared = {o.name for o in self._session.get_outputs()}
        if not set(self.outputs) <= declared:
            raise BundleError(f"stage '{self.name}': its ONNX has no output "
                              f"'{sorted(set(self.outputs) - declared)[0]}' that the manifest "
                              "names; recompile the bundle")
        for given, spec in zip(sorted(self._session.get_inputs(), key=lambda i: i.name),
                               sorted(stage["inputs"], key=lambda t: t["name"])):
            want = f"tensor({_ORT_TYPES.get(spec['dtype'], spec['dtype'])})"
            onnx_dims = [d if isinstance(d, int) else -1 for d in given.shape]
            if given.type != want or onnx_dims != list(spec["shape"]):
                raise BundleError(f"stage '{self.name}': ONNX input '{given.name}' is "
                                  f"{given.type} {given.shape}, the manifest says {spec['dtype']} "
                                  f"{spec['shape']}; recompile the bundle")

    def _graph_session(self, ort: Any, onnx_bytes: bytes, options: Any,
                       stage: Mapping[str, Any]) -> Any:
        """A CUDA-graph session with its inputs and outputs bound once to fixed device buffers,
        or None where ONNX Runtime refuses a graph for this ONNX (a node not on the GPU)."""
        try:
            session = ort.InferenceSession(
                onnx_bytes, sess_options=options, enable_fallback=0,
                providers=[(CUDA_PROVIDER, cuda_options(self.cuda_device, stage,
                                                        enable_cuda_graph="1"))])
        except Exception:  # e.g. "all compute graph nodes have not been partitioned to the CUDA EP"
            return None
        binding = session.io_binding()
        self._fixed: Dict[str, Any] = {}
        for role, specs in (("input", stage["inputs"]), ("output", stage["outputs"])):
            for spec in specs:
                value = ort.OrtValue.ortvalue_from_shape_and_type(
                    list(spec["shape"]), np.dtype(spec["dtype"]), "cuda", self.cuda_device)
                self._fixed[spec["name"]] = value
                if role == "input":
                    binding.bind_ortvalue_input(spec["name"], value)
                else:
                    binding.bind_ortvalue_output(spec["name"], value)
        self._binding = binding
        self.graphed = True
        return session

    def _run_graph(self, feeds: Mapping[str, Any], host_outputs: Any) -> Dict[str, Any]:
        """One replay: inputs copied into the fixed buffers, outputs copied out of them (the
        next call reuses them), on the host for ``host_outputs``, else on the device."""
        from .. import cuda
        from ..dlpack import DeviceArray

        with self._graph_lock:
            for name in self.inputs:
                value, fixed = feeds[name], self._fixed[name]
                if isinstance(value, np.ndarray):
                    fixed.update_inplace(np.ascontiguousarray(value))
                else:
                    cuda.copy_d2d_sync(fixed.data_ptr(), value.ptr, value.nbytes)
            try:
                self._session.run_with_iobinding(self._binding)
            except Exception as exc:
                raise self._run_error(exc) from None
            results: Dict[str, Any] = {}
            for name, _, dtype in self._output_specs:
                fixed = self._fixed[name]
                if name in host_outputs:
                    results[name] = fixed.numpy()
                else:
                    array = DeviceArray.empty(fixed.shape(), dtype, self.cuda_device)
                    cuda.copy_d2d_sync(array.ptr, fixed.data_ptr(), array.nbytes)
                    results[name] = array
            return results

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Host arrays in, host arrays out (on a GPU stage, ONNX Runtime copies both ways)."""
        if self.graphed:
            return self._run_graph(feeds, set(self.outputs))
        try:
            results = self._session.run(self.outputs, {name: feeds[name] for name in self.inputs})
        except Exception as exc:  # ORT's own exception types; a bundle whose ONNX cannot run
            raise self._run_error(exc) from None
        for (name, spec, dtype), value in zip(self._output_specs, results):
            self._check_output(name, spec, dtype, value.shape, value.dtype)
        return dict(zip(self.outputs, results))

    def run_on_device(self, feeds: Mapping[str, Any], host_outputs: Any = ()) -> Dict[str, Any]:
        """A GPU stage's call with its tensors on the device (ONNX Runtime's I/O binding).

        Args:
            feeds: input name -> a DeviceArray on this stage's GPU, or a numpy array (copied
                there by ONNX Runtime). The caller has finished any work writing them.
            host_outputs: outputs wanted on the host only: ONNX Runtime copies them there.

        Returns:
            Output name -> a numpy array (``host_outputs``) or a DeviceArray on this stage's
            GPU, complete when returned, that owns its memory (an ONNX Runtime value of this
            call, or a copy out of a CUDA graph's fixed buffer).
        """
        from ..dlpack import DeviceArray

        if self.graphed:
            return self._run_graph(feeds, host_outputs)
        binding = self._session.io_binding()
        for name in self.inputs:
            value = feeds[name]
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_input(name, "cuda", self.cuda_device, value.dtype, list(value.shape),
                                   value.ptr)
        for name in self.outputs:
            binding.bind_output(name, "cpu" if name in host_outputs else "cuda", self.cuda_device)
        try:
            # synchronizes: its inputs before, its outputs after (ORT runs on its own stream)
            self._session.run_with_iobinding(binding)
        except Exception as exc:
            raise self._run_error(exc) from None
        results: Dict[str, Any] = {}
        for (name, spec, dtype), value in zip(self._output_specs, binding.get_outputs()):
            shape = tuple(value.shape())
            got = np.dtype(_NUMPY_TYPES.get(value.data_type(), "void"))
            self._check_output(name, spec, dtype, shape, got)
            results[name] = (value.numpy() if name in host_outputs else
                             DeviceArray(value.data_ptr(), shape, dtype, self.cuda_device,
                                         owner=value))
        return results

    def _run_error(self, exc: BaseException) -> Exception:
        text = str(exc)
        if "is smaller than requested bytes" in text:  # the bounded arena of host memory
            asked = text.rsplit("requested bytes of", 1)[-1].split()[0].strip(".,")
            gib = f"{int(asked) / 2**30:.1f} GiB" if asked.isdigit() else "more memory"
            limit = self._memory_limit or 0
            return IncompatibleError(
                f"stage '{self.name}': one tensor needs {gib}, over what ONNX Runtime may still "
                f"hold in this process ({MEMORY_LIMIT_ENV}={limit / 2**30:.1f} GiB); a smaller "
                f"input, or a higher {MEMORY_LIMIT_ENV} where the machine has the memory")
        if "out of bounds" in text or "out of data bou" in text:  # Gather/GatherND indices
            return InputError(f"stage '{self.name}': an index input is out of range (e.g. a "
                              "token id >= the vocabulary size, a token type other than 0/1): "
                              f"{_first_line(exc)[-160:]}")
        return BundleError(f"stage '{self.name}': ONNX Runtime failed to run its ONNX "
                           f"({_first_line(exc)}); recompile the bundle")

    def _check_output(self, name: str, spec: Mapping[str, Any], dtype: np.dtype,
                      shape: Tuple[int, ...], got: np.dtype) -> None:
        if not shape_fits(spec, shape) or got != dtype:
            raise BundleError(f"stage '{self.name}': output '{name}' came out {got} {shape}, "
                              f"the manifest says {dtype} {shape_text(spec)}; the bundle is "
                              "inconsistent: recompile it")


# Manifest dtype -> ONNX Runtime's type name inside "tensor(...)".
_ORT_TYPES = {"float32": "float", "float64": "double", "float16": "float16", "bool": "bool",
              "int8": "int8", "uint8": "uint8", "int32": "int32", "int64": "int64"}
_NUMPY_TYPES = {f"tensor({ort})": dtype for dtype, ort in _ORT_TYPES.items()}


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]
