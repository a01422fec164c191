"""Serve trtc bundles on NVIDIA Triton Inference Server.

``write_repository`` turns bundles into a Triton model repository: per bundle
``<repo>/<name>/config.pbtxt``, ``<repo>/<name>/1/model.py`` (the Python backend model in
``trtc/_triton_model.py``) and ``<repo>/<name>/1/model.trtb``. With ``native=True`` a bundle that is
one engine stage built with full TensorRT also gets ``<repo>/<name>_plan/`` (``platform:
"tensorrt_plan"``, the engine as ``1/model.plan``), served by Triton's TensorRT backend without
Python. ``TritonServer`` runs a real ``tritonserver`` on a repository (the binary from the
``nvidia-pytriton`` wheel, ``pip install 'trtc[serve]'``, or one on PATH such as the NGC
container's) and ``serve`` is ``trtc serve``: a temporary repository, a server, its endpoints, a
clean stop.

Config rules (from the manifest):
- every input's and output's first axis dynamic, starting at 1 → ``max_batch_size`` = the bundle's
  maximum (or ``--max-batch-size``, at most that), dims without the batch axis,
  ``dynamic_batching``;
- otherwise ``max_batch_size: 0`` and full dims, -1 on the axes that vary (the Python model checks
  the bundle's ranges and answers a request outside them with an error).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .runtime._version import __version__
from .runtime.bundle import read_bundle
from .runtime.errors import IncompatibleError, TrtcError, UsageError

__all__ = [
    "TritonModel", "write_repository", "model_config", "native_config", "native_reason",
    "batch_range", "TritonServer", "ServerBinary", "find_tritonserver", "serve",
    "TritonServerError",
]

DEVICES = ("auto", "cuda", "cpu")
BUNDLE_FILE = "model.trtb"  # the name _triton_model.py loads (also in its config: TRTC_BUNDLE)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

# numpy dtype name -> Triton data_type
TRITON_DTYPES: Dict[str, str] = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
}


class TritonServerError(TrtcError):
    """tritonserver failed to start or stopped unexpectedly (exit code 1)."""

    exit_code = 1


# ----------------------------------------------------------------------------------------------
# model repository
# ----------------------------------------------------------------------------------------------
@dataclass
class TritonModel:
    """One model written into a repository."""

    name: str
    bundle: Path
    directory: Path
    max_batch_size: int
    kind: str  # "python" or "tensorrt_plan"
    needs: List[str] = field(default_factory=list)

    def describe(self) -> str:
        batching = (f"dynamic batching up to {self.max_batch_size}" if self.max_batch_size
                    else "no batching")
        needs = f"; its Python needs {', '.join(self.needs)}" if self.needs else ""
        return f"{self.name}: {self.kind}, {batching}{needs}"


def batch_range(manifest: Mapping[str, Any]) -> Optional[Tuple[int, int]]:
    """(1, max) when every input's and output's first axis is dynamic from 1 (Triton batching
    applies), else None. ``max``: the smallest maximum any of them allows."""
    maxima = []
    for side in ("inputs", "outputs"):
        for spec in manifest[side]:
            low, high = spec.get("min_shape"), spec.get("max_shape")
            if not spec["shape"] or spec["shape"][0] != -1:
                return None
            if (side == "inputs" and not (low and high)) or (low and low[0] != 1):
                return None
            if high:
                maxima.append(int(high[0]))
    return (1, min(maxima)) if maxima else None


def _dims(shape: Sequence[int]) -> str:
    return "[ " + ", ".join(str(int(d)) for d in shape) + " ]"


def _q(text: str) -> str:
    """A protobuf text-format string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _triton_dtype(dtype: str, where: str) -> str:
    try:
        return TRITON_DTYPES[dtype]
    except KeyError:
        raise UsageError(f"{where}: dtype {dtype} has no Triton data type") from None


def _io_and_batching(manifest: Dict[str, Any], batch: int, where: str,
                     max_queue_delay_us: Optional[int]) -> List[str]:
    """config.pbtxt lines shared by both model kinds: max_batch_size, inputs, outputs and
    dynamic_batching (when the bundle batches)."""
    lines = [f"max_batch_size: {batch}",
             "input [\n" + ",\n".join(_tensor_blocks(manifest["inputs"], batch > 0, where)) + "\n]",
             "output [\n" + ",\n".join(_tensor_blocks(manifest["outputs"], batch > 0, where))
             + "\n]"]
    if batch > 0:
        delay = ("" if max_queue_delay_us is None
                 else f"\n  max_queue_delay_microseconds: {int(max_queue_delay_us)}")
        lines.append("dynamic_batching {" + delay + "\n}" if delay else "dynamic_batching { }")
    return lines


def _tensor_blocks(specs: Sequence[Mapping[str, Any]], batched: bool, where: str) -> List[str]:
    blocks = []
    for spec in specs:
        shape = list(spec["shape"])[1:] if batched else list(spec["shape"])
        blocks.append(f"  {{\n    name: {_q(spec['name'])}\n"
                      f"    data_type: {_triton_dtype(spec['dtype'], where)}\n"
                      f"    dims: {_dims(shape)}\n  }}")
    return blocks


def _resolve_batch(manifest: Mapping[str, Any], max_batch_size: Optional[int],
                   where: str) -> int:
    span = batch_range(manifest)
    if span is None:
        if max_batch_size:
            raise UsageError(
                f"{where}: --max-batch-size {max_batch_size} needs a bundle whose first axis is a "
                "dynamic batch starting at 1 on every input and output; recompile it with e.g. "
                "--input data:1..32x3x224x224")
        return 0
    if max_batch_size is None:
        return span[1]
    if max_batch_size < 0 or max_batch_size > span[1]:
        raise UsageError(f"{where}: --max-batch-size {max_batch_size} is outside 0..{span[1]} "
                         "(the bundle's batch range; 0 turns batching off)")
    return max_batch_size


def model_config(manifest: Mapping[str, Any], name: str, *, instances: int = 1,
                 device: str = "auto", max_batch_size: Optional[int] = None,
                 max_queue_delay_us: Optional[int] = None, python_env: Optional[str] = None,
                 source: str = "", gpus: Sequence[int] = ()) -> str:
    """config.pbtxt of the Python-backend model serving a bundle with this manifest."""
    where = source or name
    batch = _resolve_batch(manifest, max_batch_size, where)
    lines = [f"# Generated by trtc {__version__} (trtc triton-repo) from {source or 'a bundle'}.",
             "# 1/model.py runs 1/model.trtb with trtc.runtime in Triton's Python backend.",
             f"name: {_q(name)}", 'backend: "python"',
             *_io_and_batching(manifest, batch, where, max_queue_delay_us)]
    kind = {"cuda": "\n    kind: KIND_GPU", "cpu": "\n    kind: KIND_CPU", "auto": ""}[device]
    if gpus:  # instances on exactly these GPUs (count per GPU)
        kind = "\n    kind: KIND_GPU\n    gpus: [ " + ", ".join(str(int(g)) for g in gpus) + " ]"
    lines.append(f"instance_group [\n  {{\n    count: {int(instances)}{kind}\n  }}\n]")
    params = {"TRTC_BUNDLE": BUNDLE_FILE, "TRTC_DEVICE": device}
    if python_env:
        params["EXECUTION_ENV_PATH"] = python_env
    for key, value in params.items():
        lines.append(f"parameters: {{\n  key: {_q(key)}\n  value: {{ string_value: {_q(value)} }}\n}}")
    return "\n".join(lines) + "\n"


def native_reason(manifest: Mapping[str, Any]) -> Optional[str]:
    """Why the bundle cannot be a native ``tensorrt_plan`` model (None: it can)."""
    stages = manifest["stages"]
    if len(stages) != 1 or stages[0]["kind"] != "engine":
        kinds = [s["kind"] for s in stages]
        return (f"it has {kinds.count('engine')} engine and {kinds.count('residual')} residual "
                "stages; a tensorrt_plan model is one engine")
    backend = stages[0].get("backend")
    if backend != "tensorrt":
        return (f"its engine was built by {backend}; Triton's TensorRT backend runs engines of full "
                "TensorRT only (compile with --backend tensorrt)")
    names = lambda specs: [s["name"] for s in specs]  # noqa: E731
    if (names(stages[0]["inputs"]) != names(manifest["inputs"])
            or names(stages[0]["outputs"]) != names(manifest["outputs"])):
        return "its engine's tensors are not the model's inputs and outputs"
    return None


def native_config(manifest: Mapping[str, Any], name: str, *, instances: int = 1,
                  max_batch_size: Optional[int] = None, max_queue_delay_us: Optional[int] = None,
                  source: str = "") -> str:
    """config.pbtxt of a ``tensorrt_plan`` model running the bundle's one engine (1/model.plan)."""
    where = source or name
    reason = native_reason(manifest)
    if reason:
        raise UsageError(f"{where}: --native: {reason}")
    stage = manifest["stages"][0]
    batch = _resolve_batch(manifest, max_batch_size, where)
    dynamic = any(spec.get("min_shape") not in (None, spec["shape"]) for spec in manifest["inputs"])
    lines = [f"# Generated by trtc {__version__} (trtc triton-repo --native) from "
             f"{source or 'a bundle'}.",
             f"# 1/model.plan: TensorRT {stage.get('backend_version', '?')} engine "
             f"({stage.get('precision', '?')}); Triton's TensorRT must be this exact version.",
             f"name: {_q(name)}", 'platform: "tensorrt_plan"',
             *_io_and_batching(manifest, batch, where, max_queue_delay_us)]
    profile = '\n    profile: [ "0" ]' if dynamic else ""
    lines.append(f"instance_group [\n  {{\n    count: {int(instances)}\n    kind: KIND_GPU"
                 f"{profile}\n  }}\n]")
    return "\n".join(lines) + "\n"


def _model_source() -> bytes:
    return (Path(__file__).with_name("_triton_model.py")).read_bytes()


def _needs(manifest: Mapping[str, Any]) -> List[str]:
    requires = manifest.get("requires") or {}
    needs = ["trtc.runtime", str(requires.get("cpu_path") or "onnxruntime") + " (CPU path)"]
    if requires.get("mxnet"):
        needs.append(f"mxnet {requires.get('mxnet_version', '')}".strip() + " (residual stages)")
    if requires.get("custom_ops"):
        needs.append("the module registering custom ops " + ", ".join(requires["custom_ops"]))
    return needs


def _default_name(bundle: Path) -> str:
    stem = bundle.name[:-5] if bundle.name.endswith(".trtb") else bundle.stem
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip(".-") or "model"
    return name[:128]


def write_repository(bundles: Sequence["os.PathLike[str] | str"],
                     output: "os.PathLike[str] | str", *, names: Sequence[str] = (),
                     instances: int = 1, device: str = "auto",
                     max_batch_size: Optional[int] = None,
                     max_queue_delay_us: Optional[int] = None, native: bool = False,
                     python_env: Optional["os.PathLike[str] | str"] = None,
                     gpus: Sequence[int] = ()) -> List[TritonModel]:
    """Write (or replace) one Triton model per bundle in the repository ``output``.

    Other models already in ``output`` are left alone; a model named here is replaced as a whole
    (its new directory is complete before it takes the old one's place).

    Args:
        bundles: .trtb files.
        output: the model repository directory (made if missing).
        names: model names, one per bundle in order (default: each bundle's file stem).
        instances: model instances (``instance_group.count``; per GPU on KIND_GPU).
        device: 'auto' (Triton places instances: GPUs if it sees any; each loads with
            device='auto'), 'cuda' (KIND_GPU; a GPU that cannot serve the bundle fails the load)
            or 'cpu' (KIND_CPU, the ONNX Runtime path).
        max_batch_size: for batchable bundles, at most their maximum (default); 0 turns batching
            off. An error for a bundle with a static batch.
        max_queue_delay_us: dynamic batcher's wait for more requests (default: Triton's, 0).
        native: also write ``<name>_plan`` (tensorrt_plan) models; every bundle must be one engine
            built with full TensorRT.
        python_env: the config's ``EXECUTION_ENV_PATH`` (a conda-pack archive or unpacked
            environment holding trtc), when the server's own Python does not have trtc.
        gpus: place ``instances`` instances on each of these GPUs (KIND_GPU with ``gpus``);
            each loads the bundle on the GPU Triton assigns it (``model_instance_device_id``).

    Returns:
        The models written, in order.
    """
    if not bundles:
        raise UsageError("give at least one bundle")
    if device not in DEVICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")
    if instances < 1:
        raise UsageError("--instances must be at least 1")
    if gpus and device == "cpu":
        raise UsageError("--gpus places instances on GPUs: it does not go with --device cpu")
    if any(not isinstance(g, int) or g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise UsageError(f"--gpus {','.join(map(str, gpus))}: GPU indices, each once "
                         "(like 0,1,2,3)")
    if max_queue_delay_us is not None and max_queue_delay_us < 0:
        raise UsageError("--max-queue-delay-us must be 0 or more")
    paths = [Path(b) for b in bundles]
    if names and len(names) != len(paths):
        raise UsageError(f"--name given {len(names)} times for {len(paths)} bundles; give one per "
                         "bundle, in order, or none")
    chosen = list(names) if names else [_default_name(p) for p in paths]
    for name in chosen:
        if not _NAME.fullmatch(name):
            raise UsageError(f"model name {name!r}: use letters, digits, '_', '.', '-' (not "
                             "starting with '.' or '-'), at most 128 characters")
    planned = chosen + ([f"{n}_plan" for n in chosen] if native else [])
    duplicates = sorted({n for n in planned if planned.count(n) > 1})
    if duplicates:
        raise UsageError(f"two models would be named {duplicates[0]!r}; name them with --name")
    repo = Path(output)
    if repo.exists() and not repo.is_dir():
        raise UsageError(f"-o {repo}: not a directory")
    env_path = None
    if python_env is not None:
        env_path = str(Path(python_env).resolve())
        if not Path(env_path).exists():
            raise UsageError(f"--python-env {python_env}: no such file or directory")

    # Everything is checked before anything is written: a bad bundle or option leaves the
    # repository as it was.
    staged: List[Tuple[str, Dict[str, bytes], Path, TritonModel]] = []
    for path, name in zip(paths, chosen):
        opened = read_bundle(path)  # missing/corrupted bundles fail here (BundleError)
        manifest = opened.manifest
        source = path.name
        config = model_config(manifest, name, instances=instances, device=device,
                              max_batch_size=max_batch_size,
                              max_queue_delay_us=max_queue_delay_us, python_env=env_path,
                              source=source, gpus=gpus)
        batch = _resolve_batch(manifest, max_batch_size, source)
        staged.append((name, {"config.pbtxt": config.encode(), "1/model.py": _model_source()},
                       path, TritonModel(name, path, repo / name, batch, "python",
                                         _needs(manifest))))
        if native:
            text = native_config(manifest, f"{name}_plan", instances=instances,
                                 max_batch_size=max_batch_size,
                                 max_queue_delay_us=max_queue_delay_us, source=source)
            plan = opened.read_member(manifest["stages"][0]["engine"])
            staged.append((f"{name}_plan", {"config.pbtxt": text.encode(), "1/model.plan": plan},
                           None, TritonModel(f"{name}_plan", path, repo / f"{name}_plan", batch,
                                             "tensorrt_plan",
                                             [f"Triton with TensorRT "
                                              f"{manifest['stages'][0].get('backend_version')}"])))
    repo.mkdir(parents=True, exist_ok=True)
    written = []
    for name, files, bundle, model in staged:
        _replace_model_dir(repo, name, files, bundle)
        written.append(model)
    return written


def _replace_model_dir(repo: Path, name: str, files: Mapping[str, bytes],
                       bundle: Optional[Path]) -> None:
    tmp = repo / f".{name}.trtc-{secrets.token_hex(4)}.partial"
    try:
        for rel, data in files.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if bundle is not None:
            shutil.copyfile(bundle, tmp / "1" / BUNDLE_FILE)
            read_bundle(tmp / "1" / BUNDLE_FILE)  # the copy is intact
        final = repo / name
        old = None
        if final.exists() or final.is_symlink():
            old = repo / f".{name}.trtc-{secrets.token_hex(4)}.old"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# the server
# ----------------------------------------------------------------------------------------------
@dataclass
class ServerBinary:
    """A tritonserver executable and, when it comes from the nvidia-pytriton wheel, that wheel's
    directory (its Python backend must be wired up by hand)."""

    path: Path
    wheel_dir: Optional[Path] = None

    @property
    def origin(self) -> str:
        return "nvidia-pytriton wheel" if self.wheel_dir else "PATH / --tritonserver"


def _wheel_dir() -> Optional[Path]:
    try:
        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "tritonserver"
        if (candidate / "bin" / "tritonserver").is_file():
            return candidate
    return None


def find_tritonserver(explicit: Optional["os.PathLike[str] | str"] = None) -> ServerBinary:
    """The server to run: ``explicit``, else a ``tritonserver`` on PATH, else the one in the
    nvidia-pytriton wheel. IncompatibleError (one line) when there is none."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file() or not os.access(path, os.X_OK):
            raise UsageError(f"--tritonserver {explicit}: not an executable file")
        wheel = _wheel_dir()
        from_wheel = wheel is not None and path.resolve() == (wheel / "bin" / "tritonserver").resolve()
        return ServerBinary(path, wheel if from_wheel else None)
    on_path = shutil.which("tritonserver")
    if on_path:
        return ServerBinary(Path(on_path))
    wheel = _wheel_dir()
    if wheel is not None:
        return ServerBinary(wheel / "bin" / "tritonserver", wheel)
    raise IncompatibleError("no tritonserver found: install it with pip install 'trtc[serve]' "
                            "(the nvidia-pytriton wheel ships one), put one on PATH (the NGC "
                            "tritonserver container has it) or pass --tritonserver PATH")


def _python_bin_dir(scratch: Path) -> str:
    """A directory whose ``python3`` is this interpreter (the Python backend stub takes its
    environment from the first python3 on PATH)."""
    here = Path(sys.executable).parent
    candidate = here / "python3"
    if candidate.exists() and candidate.resolve() == Path(sys.executable).resolve():
        return str(here)
    bin_dir = scratch / "python-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "python3"
    if not link.exists():
        link.symlink_to(sys.executable)
    return str(bin_dir)


def _wheel_backends(wheel: Path, scratch: Path) -> Path:
    """A backend directory for the wheel's server: python/ holding the backend library, its utils
    and this Python's stub, as symlinks into the wheel (their RPATHs are $ORIGIN-relative)."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = wheel / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        have = sorted(p.name for p in (wheel / "python_backend_stubs").iterdir()) \
            if (wheel / "python_backend_stubs").is_dir() else []
        raise IncompatibleError(f"the nvidia-pytriton wheel has no Python backend stub for Python "
                                f"{version} (it has: {', '.join(have) or 'none'}); run trtc with "
                                "one of those Pythons")
    python_dir = scratch / "backends" / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in (wheel / "backends" / "python" / "libtriton_python.so",
                   wheel / "backends" / "python" / "triton_python_backend_utils.py", stub):
        link = python_dir / source.name
        if not link.is_symlink():
            link.symlink_to(source)
    return scratch / "backends"


def _port_free(address: str, port: int) -> Optional[str]:
    """None if ``port`` can be bound on ``address``, else why not."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


# Log lines a CPU-only machine always shows; never the reason a server failed.
_HARMLESS = re.compile(r"CudaDriverHelper|CUDA driver|cuda driver|pinned memory|NVML|DCGM|"
                       r"GPU metrics|cudaGetDeviceCount|no CUDA-capable device", re.IGNORECASE)


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL it when the process that started it dies, so a
    server never outlives a killed `trtc serve` or test run (its own session keeps it from the
    terminal's Ctrl-C, which trtc forwards as SIGTERM)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _client_host(address: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(address, address)


class TritonServer:
    """A tritonserver process on a model repository, stopped by its PID.

    ``with TritonServer(repo, http_port=..., ...) as server:`` starts it and waits until
    ``/v2/health/ready`` answers 200; leaving the block stops it and removes its scratch
    directory. Stopping: SIGTERM; Triton drains in-flight requests for up to ``exit_timeout``
    seconds (an idle keep-alive client connection also holds it that long: close clients), then
    its process group is killed if it is still there 20 s later.
    """

    def __init__(self, repository: "os.PathLike[str] | str", *, http_port: int = 8000,
                 grpc_port: int = 8001, metrics_port: int = 8002, address: str = "127.0.0.1",
                 binary: Optional[ServerBinary] = None, log_file: Optional[Path] = None,
                 extra_args: Sequence[str] = (), startup_timeout: float = 120.0,
                 exit_timeout: int = 10):
        self.repository = Path(repository)
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.address = address
        self.binary = binary
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.exit_timeout = exit_timeout
        self.stop_timeout = exit_timeout + 20.0
        self.process: Optional[subprocess.Popen] = None
        self.startup_seconds: Optional[float] = None
        self._scratch: Optional[Path] = None
        self._log_file = log_file
        self._log: Any = None

    # URLs -------------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return _client_host(self.address)

    @property
    def http_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Optional[Path]:
        return self._log_file

    # lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> "TritonServer":
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def check_ports(self) -> None:
        ports = {"--http-port": self.http_port, "--grpc-port": self.grpc_port,
                 "--metrics-port": self.metrics_port}
        if len(set(ports.values())) != len(ports):
            raise UsageError(f"the HTTP, gRPC and metrics ports must differ, got "
                             f"{self.http_port}, {self.grpc_port}, {self.metrics_port}")
        for flag, port in ports.items():
            if not 0 < port < 65536:
                raise UsageError(f"{flag} {port}: expected a port in 1..65535")
            problem = _port_free(self.address, port)
            if problem:
                raise UsageError(f"{flag} {port} on {self.address} is not free ({problem}); stop "
                                 f"what uses it or pick another port with {flag}")

    def command(self, backend_dir: Optional[Path] = None) -> List[str]:
        args = [str(self.binary.path), f"--model-repository={self.repository}",
                f"--http-address={self.address}", f"--http-port={self.http_port}",
                f"--grpc-address={self.address}", f"--grpc-port={self.grpc_port}",
                f"--metrics-address={self.address}", f"--metrics-port={self.metrics_port}",
                "--exit-on-error=true", "--strict-readiness=true",
                f"--exit-timeout-secs={int(self.exit_timeout)}"]
        if backend_dir is not None:
            args.append(f"--backend-directory={backend_dir}")
        return args + self.extra_args

    def start(self) -> None:
        if self.process is not None:
            raise UsageError("this server was already started")
        if self.binary is None:
            self.binary = find_tritonserver()
        if not (self.repository / "").is_dir():
            raise UsageError(f"model repository {self.repository}: not a directory")
        self.check_ports()
        self._scratch = Path(tempfile.mkdtemp(prefix="trtc-triton-"))
        env = dict(os.environ)
        backend_dir = None
        if self.binary.wheel_dir is not None:
            backend_dir = _wheel_backends(self.binary.wheel_dir, self._scratch)
            libdir = sysconfig.get_config_var("LIBDIR") or ""
            libs = self.binary.wheel_dir.parent.parent / "nvidia_pytriton.libs"
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (libdir, str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
        env["PATH"] = os.pathsep.join(p for p in (_python_bin_dir(self._scratch),
                                                  env.get("PATH", "")) if p)
        if self._log_file is None:
            self._log_file = self._scratch / "tritonserver.log"
        self._log = open(self._log_file, "ab")
        self._started = time.monotonic()
        try:
            self.process = subprocess.Popen(self.command(backend_dir), stdin=subprocess.DEVNULL,
                                            stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True,
                                            preexec_fn=_die_with_parent)
        except OSError as exc:
            self._cleanup()
            raise IncompatibleError(f"cannot start {self.binary.path}: {exc.strerror or exc}") from None

    def wait_ready(self, timeout: Optional[float] = None) -> float:
        """Wait until ``/v2/health/ready`` answers 200; returns the seconds since start."""
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + (self.startup_timeout if timeout is None else timeout)
        url = f"http://{self.http_url}/v2/health/ready"
        while True:
            code = self.process.poll()
            if code is not None:
                raise TritonServerError(f"tritonserver exited with code {code} before it was "
                                        f"ready: {self.failure()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as reply:
                    if reply.status == 200:
                        self.startup_seconds = time.monotonic() - self._started
                        return self.startup_seconds
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TritonServerError(f"tritonserver was not ready after "
                                        f"{deadline - self._started:.0f} s: {self.failure()}")
            time.sleep(0.1)

    def log_text(self) -> str:
        if self._log_file is None or not Path(self._log_file).exists():
            return ""
        return Path(self._log_file).read_text(errors="replace")

    def failure(self) -> str:
        """What went wrong, from the server log, as one line: the models that failed to load (or
        else every error line), without tracebacks and the CPU-only machine's harmless CUDA
        messages."""
        text = self.log_text()
        errors = []
        for line in text.splitlines():
            match = re.match(r"^E\d{4} [\d:.]+ \d+ [^\]]+\] (.*)$", line)
            message = match.group(1).strip() if match else line.strip() if line.startswith(
                "error:") else ""
            if len(message) > 1 and message[0] == message[-1] == '"':
                message = message[1:-1]
            message = re.split(r"\\n|\n", message)[0].strip()  # drop the Python traceback
            if message and not _HARMLESS.search(message):
                errors.append(message)
        loads = [e for e in errors if e.startswith("failed to load")]
        if loads:
            errors = loads + [e for e in errors if e.startswith("error:")]
        if not errors:
            tail = [line.strip() for line in text.splitlines() if line.strip()][-3:]
            errors = tail or ["(no output)"]
        line = " | ".join(dict.fromkeys(errors))
        return line if len(line) <= 2000 else line[:2000] + " ..."

    def stop(self) -> Optional[int]:
        """Stop the server (SIGTERM; SIGKILL of its process group if it does not exit in time)
        and remove the scratch directory. Returns its exit code."""
        code = None
        process = self.process
        if process is not None:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    process.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            code = process.returncode
            # the backend stubs are in the server's process group; none may outlive it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        self._cleanup()
        return code

    def _cleanup(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._scratch is not None:
            if self._log_file is not None and Path(self._log_file).parent == self._scratch:
                self._log_file = None
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


# ----------------------------------------------------------------------------------------------
# trtc serve
# ----------------------------------------------------------------------------------------------
def serve(bundles: Sequence["os.PathLike[str] | str"], *, http_port: int = 8000,
          grpc_port: int = 8001, metrics_port: int = 8002, address: str = "127.0.0.1",
          tritonserver: Optional["os.PathLike[str] | str"] = None,
          log_file: Optional["os.PathLike[str] | str"] = None,
          startup_timeout: float = 120.0, say: Callable[[str], None] = print,
          note: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
          **repo_options: Any) -> int:
    """Serve ``bundles`` until SIGINT/SIGTERM: a temporary repository, a tritonserver on it, the
    endpoints printed with ``say`` once ready. Returns 0 after a requested stop; raises
    TritonServerError when the server dies on its own."""
    binary = find_tritonserver(tritonserver)
    scratch = Path(tempfile.mkdtemp(prefix="trtc-serve-"))
    stop_requested: List[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if stop_requested:  # already stopping: let the stop finish
            return
        stop_requested.append(signum)
        raise _Stop()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for sig in previous:
            signal.signal(sig, on_signal)
        models = write_repository(bundles, scratch / "models", **repo_options)
        server = TritonServer(scratch / "models", http_port=http_port, grpc_port=grpc_port,
                              metrics_port=metrics_port, address=address, binary=binary,
                              log_file=Path(log_file) if log_file else None,
                              startup_timeout=startup_timeout)
        note(f"[trtc] starting {binary.path} ({binary.origin}) on {len(models)} model(s)")
        try:
            with server:
                for model in models:
                    say(f"model {model.describe()}")
                say(f"HTTP     http://{server.http_url}   (KServe v2: POST "
                    f"/v2/models/{models[0].name}/infer)")
                say(f"gRPC     {server.grpc_url}")
                say(f"metrics  {server.metrics_url}")
                if log_file:
                    say(f"log      {log_file}")
                say(f"ready in {server.startup_seconds:.1f} s; Ctrl-C or SIGTERM stops it")
                code = server.process.wait()
                raise TritonServerError(f"tritonserver exited with code {code}: {server.failure()}")
        except _Stop:
            pass
        note("[trtc] stopped")
        return 0
    except _Stop:
        note("[trtc] stopped")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(scratch, ignore_errors=True)


class _Stop(BaseException):
    """SIGINT/SIGTERM while serving: unwinds to the server's clean stop."""
