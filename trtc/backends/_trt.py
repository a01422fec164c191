"""The build side shared by the TensorRT and TensorRT-RTX adapters (same Python API shape)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

__all__ = ["ParserIssue", "ParseResult", "BuiltEngine", "BuildError", "TrtBackend"]


@dataclass
class ParserIssue:
    """One error of TensorRT's ONNX parser."""

    node_index: int
    node_name: str
    op: str
    message: str


@dataclass
class ParseResult:
    ok: bool
    issues: List[ParserIssue] = field(default_factory=list)


@dataclass
class BuiltEngine:
    plan: bytes
    io: List[Dict[str, Any]]  # {name, shape, dtype, mode}, read off the network at build time
    backend: str
    backend_version: str
    compute_capabilities: List[str]


class BuildError(Exception):
    """The builder returned no engine (or crashed); ``log`` holds the builder's error messages."""

    def __init__(self, message: str, log: Sequence[str] = ()):
        super().__init__(message)
        self.log = list(log)

    def __reduce__(self) -> Any:  # sent from the build's child process with its log
        return (type(self), (str(self), self.log))


def _capturing_logger(trt: Any) -> Any:
    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: List[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.messages.append(str(msg))

    return CapturingLogger()


class TrtBackend:
    """Parse and build with one TensorRT flavor. Subclasses set ``name`` and the module."""

    name = ""
    module_name = ""

    def __init__(self) -> None:
        self.trt = __import__(self.module_name)
        self.version: str = self.trt.__version__

    # -- hooks for the flavors --------------------------------------------------------------
    def _network_flags(self) -> int:
        return 0

    def _configure(self, config: Any, compute_capabilities: Sequence[str]) -> List[str]:
        return list(compute_capabilities)

    # -- shared ------------------------------------------------------------------------------
    def _parse_into(self, onnx_bytes: bytes, path: Optional[str] = None):  # type: ignore[no-untyped-def]
        trt = self.trt
        logger = _capturing_logger(trt)
        builder = trt.Builder(logger)
        network = builder.create_network(self._network_flags())
        parser = trt.OnnxParser(network, logger)
        ok = parser.parse(onnx_bytes, path) if path else parser.parse(onnx_bytes)
        issues = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            issues.append(ParserIssue(node_index=int(err.node()), node_name=str(err.node_name()),
                                      op=str(err.node_operator()), message=str(err.desc())))
        return builder, network, parser, logger, bool(ok), issues

    def parse(self, onnx_bytes: bytes, path: Optional[str] = None) -> ParseResult:
        """Parse ``onnx_bytes`` with TensorRT's ONNX parser; list its errors. ``path``: where
        the model would live, for resolving external weights beside it."""
        _, _, _, _, ok, issues = self._parse_into(onnx_bytes, path)
        return ParseResult(ok=ok, issues=issues)

    def supported_subgraphs(self, onnx_bytes: bytes) -> List[ParserIssue]:
        """Hints from ``supports_model_v2``: errors on nodes the parser says it cannot take."""
        trt = self.trt
        logger = _capturing_logger(trt)
        builder = trt.Builder(logger)
        network = builder.create_network(self._network_flags())
        parser = trt.OnnxParser(network, logger)
        if not hasattr(parser, "supports_model_v2"):
            return []
        parser.supports_model_v2(onnx_bytes)
        issues = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            issues.append(ParserIssue(int(err.node()), str(err.node_name()),
                                      str(err.node_operator()), str(err.desc())))
        return issues

    def build(self, onnx_bytes: bytes, compute_capabilities: Sequence[str] = (),
              workspace_bytes: Optional[int] = None,
              profile: Optional[Dict[str, Sequence[Sequence[int]]]] = None,
              strip: bool = False) -> BuiltEngine:
        """Build a serialized engine from ONNX. Raises BuildError when the builder fails.

        ``profile``: input name -> (min, opt, max) shapes, one optimization profile covering
        every dynamic input (required when the ONNX has dynamic dimensions).
        ``strip``: a weight-stripped plan (``STRIP_PLAN`` + ``REFIT_IDENTICAL``): the weights are
        left out and must be refitted from this same ONNX before the engine runs.

        The build runs in a forked child process (trtc/_isolate.py) on a thread with
        ``_defaults.BUILD_STACK_BYTES`` of stack: the builder recurses over the network, and a
        crash of the builder is a BuildError here, not the end of the compiler."""
        from .. import _defaults
        from .._isolate import NativeCrash, in_child, signal_text

        try:
            return in_child(f"{self.name}'s builder", self._build_here, onnx_bytes,
                            compute_capabilities, workspace_bytes, profile, strip,
                            stack_bytes=_defaults.BUILD_STACK_BYTES, uses_cuda=True)
        except NativeCrash as crash:
            raise BuildError(f"{self.name} {self.version}'s builder crashed building this "
                             f"network ({signal_text(crash.signum) if crash.signum else crash})"
                             ) from None

    def _build_here(self, onnx_bytes: bytes, compute_capabilities: Sequence[str],
                    workspace_bytes: Optional[int],
                    profile: Optional[Dict[str, Sequence[Sequence[int]]]],
                    strip: bool) -> BuiltEngine:
        """:meth:`build` in the calling process."""
        trt = self.trt
        builder, network, parser, logger, ok, issues = self._parse_into(onnx_bytes)
        if not ok:
            raise BuildError("; ".join(i.message for i in issues) or "ONNX parse failed")
        config = builder.create_builder_config()
        if workspace_bytes:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
        targets = self._configure(config, compute_capabilities)
        if strip:
            _set_strip_flags(trt, config)
        if profile:
            opt_profile = builder.create_optimization_profile()
            for i in range(network.num_inputs):
                tensor = network.get_input(i)
                if tensor.name in profile:
                    lo, opt, hi = (tuple(int(d) for d in s) for s in profile[tensor.name])
                    opt_profile.set_shape(tensor.name, lo, opt, hi)
            config.add_optimization_profile(opt_profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BuildError("; ".join(logger.messages[-3:]) or "the builder returned no engine",
                             logger.messages)
        io = []
        for i in range(network.num_inputs):
            io.append(_io_spec(trt, network.get_input(i), "input"))
        for i in range(network.num_outputs):
            io.append(_io_spec(trt, network.get_output(i), "output"))
        return BuiltEngine(plan=bytes(plan), io=io, backend=self.name,
                           backend_version=self.version, compute_capabilities=targets)


    def strip_unavailable_reason(self) -> Optional[str]:
        """Why this builder cannot build weight-stripped engines here, or None. A real probe:
        a one-layer network built with the strip flags (TensorRT-RTX builds them only with an
        NVIDIA GPU present; without one its compiler fails a CUDA check). Probed in a child
        process like every build, so the compiler's own process never initializes CUDA (the
        builds it forks later could not use it)."""
        from .._isolate import NativeCrash, in_child

        try:
            return in_child(f"{self.name}'s builder", self._strip_probe, uses_cuda=True)
        except NativeCrash as crash:
            return f"{self.name} {self.version} cannot build weight-stripped engines here ({crash})"

    def _strip_probe(self) -> Optional[str]:
        trt = self.trt
        logger = _capturing_logger(trt)
        builder = trt.Builder(logger)
        network = builder.create_network(self._network_flags())
        x = network.add_input("x", trt.float32, (1, 4))
        weight = network.add_constant((1, 4), trt.Weights(np.ones((1, 4), np.float32)))
        weight.name = "probe_weight"
        total = network.add_elementwise(x, weight.get_output(0), trt.ElementWiseOperation.SUM)
        network.mark_output(total.get_output(0))
        config = builder.create_builder_config()
        _set_strip_flags(trt, config)
        from ..runtime._native import quiet_native

        try:
            with quiet_native():  # a failed probe prints a native "Internal Error" line
                plan = builder.build_serialized_network(network, config)
        except Exception as exc:  # some versions raise instead of returning None
            plan, logger.messages = None, [*logger.messages, str(exc)]
        if plan is not None:
            return None
        cause = " ".join(logger.messages[-1:]).strip() or "the builder returned no engine"
        if "CUDA_SUCCESS" in cause or "cuda" in cause.lower():
            cause = "its compiler needs a CUDA GPU for weight-stripped engines and found none"
        return f"{self.name} {self.version} cannot build weight-stripped engines on this machine ({cause[:200]})"


def _set_strip_flags(trt: Any, config: Any) -> None:
    config.set_flag(trt.BuilderFlag.STRIP_PLAN)
    config.set_flag(trt.BuilderFlag.REFIT_IDENTICAL)


def _io_spec(trt: Any, tensor: Any, mode: str) -> Dict[str, Any]:
    return {"name": tensor.name, "shape": [int(d) for d in tensor.shape],
            "dtype": np.dtype(trt.nptype(tensor.dtype)).name, "mode": mode}
