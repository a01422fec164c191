"""Triton Inference Server Python-backend model that serves one trtc bundle.

`trtc triton-repo` copies this file, unchanged, to ``<repository>/<model>/1/model.py`` beside the
bundle (``model.trtb``); it is not imported by trtc itself. It needs ``trtc.runtime`` (and what the
bundle's stages need: onnxruntime for the CPU path, MXNet for residual stages) in the Python
environment the backend stub runs in: the server's ``python3``, or the model config's
``EXECUTION_ENV_PATH`` parameter (`trtc triton-repo --python-env`).

- ``initialize``: loads the bundle on the instance's device. A KIND_GPU instance loads on the GPU
  Triton assigns it (``device="cuda:N"``, N = ``model_instance_device_id``), falling back to the
  CPU with the reason in the log as ``device="auto"`` does (unless the config's ``TRTC_DEVICE``
  says ``"cuda"``: then a
  GPU that cannot serve the bundle fails the load with the reason); a KIND_CPU instance loads with
  ``device="cpu"``.
- ``execute``: checks every request on its own (a bad one gets an error response, the others are
  served); when the model batches (``max_batch_size`` > 0), requests whose non-batch dimensions
  agree are concatenated into as few calls as the bundle's maximum batch allows and the outputs
  are split back per request.
- ``finalize``: drops the model.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

try:  # present inside the Python backend stub only
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover - imported outside Triton (tests of the pure helpers)
    pb_utils = None

BUNDLE_FILE = "model.trtb"


def plan_batches(sizes: Sequence[int], limit: int) -> List[List[int]]:
    """Indices of requests grouped in order so that each group's batch sizes sum to <= ``limit``
    (a request larger than ``limit`` gets a group of its own, and an error when run)."""
    groups: List[List[int]] = []
    current: List[int] = []
    total = 0
    for index, size in enumerate(sizes):
        if current and total + size > limit:
            groups.append(current)
            current, total = [], 0
        current.append(index)
        total += size
    if current:
        groups.append(current)
    return groups


class TritonPythonModel:
    """One trtc bundle served by Triton's Python backend."""

    def initialize(self, args: Dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {key: value.get("string_value", "")
                  for key, value in (config.get("parameters") or {}).items()}
        kind = args.get("model_instance_kind", "CPU")
        wanted = params.get("TRTC_DEVICE", "auto")
        fallback = None
        if kind == "GPU":  # the GPU Triton assigned this instance
            device = f"cuda:{int(args.get('model_instance_device_id', '0'))}"
            if wanted != "cuda":  # as device='auto' does: the CPU, with the reason in the log
                fallback = "cpu"
        else:
            if wanted == "cuda":
                raise RuntimeError("TRTC_DEVICE is 'cuda' but Triton made a KIND_CPU instance; use "
                                   "instance_group kind KIND_GPU (trtc triton-repo --device cuda)")
            device = "cpu"

        import trtc.runtime

        path = os.path.join(args["model_repository"], args["model_version"],
                            params.get("TRTC_BUNDLE") or BUNDLE_FILE)
        try:
            self.model = trtc.runtime.load(path, device=device)
        except trtc.runtime.IncompatibleError as exc:
            if fallback is None:
                raise
            _log(f"trtc: model '{args.get('model_name', '')}' cannot run on {device} ({exc}); "
                 f"falling back to {fallback}")
            self.model = trtc.runtime.load(path, device=fallback)
        self.name = args.get("model_name", "")
        self.max_batch_size = int(config.get("max_batch_size", 0))
        self.batch_limit = self.max_batch_size
        if self.max_batch_size > 0:  # the bundle's own maximum on the batch axis bounds a call
            self.batch_limit = min([self.max_batch_size]
                                   + [spec.max_shape[0] for spec in self.model.inputs.values()
                                      if spec.max_shape])
        self.input_names = list(self.model.inputs)
        self.output_names = list(self.model.outputs)
        where = self.model.device + (f" ({self.model.device_reason})"
                                     if self.model.device_reason else "")
        _log(f"trtc: model '{self.name}' instance {args.get('model_instance_name', '')} "
             f"loaded {os.path.basename(path)} on {where}")

    def execute(self, requests: List[Any]) -> List[Any]:
        responses: List[Any] = [None] * len(requests)
        valid: List[Tuple[int, Dict[str, np.ndarray]]] = []
        for index, request in enumerate(requests):
            try:
                valid.append((index, self._read(request)))
            except Exception as exc:  # noqa: BLE001 - every failure becomes that request's error
                responses[index] = _error_response(exc)
        if self.max_batch_size > 0 and len(valid) > 1:
            for group in self._groups(valid):
                self._run_group(group, responses)
        else:
            for index, feeds in valid:
                responses[index] = self._run_one(feeds)
        return responses

    def finalize(self) -> None:
        self.model = None

    # ------------------------------------------------------------------------------------------
    def _read(self, request: Any) -> Dict[str, np.ndarray]:
        arrays: Dict[str, np.ndarray] = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise _InputMissing(f"missing input '{name}'; this model's inputs are: "
                                    f"{', '.join(self.input_names)}")
            arrays[name] = tensor.as_numpy()
        # trtc's own checks (shape range, dtype rules), per request, before any batching
        return self.model.validate_inputs(arrays)

    def _groups(self, valid: List[Tuple[int, Dict[str, np.ndarray]]]
                ) -> List[List[Tuple[int, Dict[str, np.ndarray]]]]:
        """Requests that can share one call: same non-batch dimensions and dtypes, at most
        ``batch_limit`` samples in all."""
        by_tail: Dict[Any, List[Tuple[int, Dict[str, np.ndarray]]]] = {}
        for item in valid:
            key = tuple((name, item[1][name].shape[1:], item[1][name].dtype.str)
                        for name in self.input_names)
            by_tail.setdefault(key, []).append(item)
        groups = []
        for items in by_tail.values():
            sizes = [feeds[self.input_names[0]].shape[0] for _, feeds in items]
            groups.extend([items[i] for i in indices]
                          for indices in plan_batches(sizes, self.batch_limit))
        return groups

    def _run_group(self, group: List[Tuple[int, Dict[str, np.ndarray]]],
                   responses: List[Any]) -> None:
        if len(group) == 1:
            index, feeds = group[0]
            responses[index] = self._run_one(feeds)
            return
        sizes = [feeds[self.input_names[0]].shape[0] for _, feeds in group]
        batched = {name: np.concatenate([feeds[name] for _, feeds in group], axis=0)
                   for name in self.input_names}
        try:
            outputs = self.model.run(batched)
            bounds = np.cumsum(sizes)[:-1]
            parts = {name: np.split(outputs[name], bounds, axis=0) for name in self.output_names}
            if any(outputs[name].shape[:1] != (sum(sizes),) for name in self.output_names):
                raise ValueError("an output's batch axis does not match the inputs'")
        except Exception:  # noqa: BLE001 - run each request alone so an error names its request
            for index, feeds in group:
                responses[index] = self._run_one(feeds)
            return
        for position, (index, _) in enumerate(group):
            responses[index] = _response({name: parts[name][position] for name in self.output_names})

    def _run_one(self, feeds: Dict[str, np.ndarray]) -> Any:
        try:
            return _response(self.model.run(feeds))
        except Exception as exc:  # noqa: BLE001
            return _error_response(exc)


class _InputMissing(Exception):
    pass


def _response(outputs: Dict[str, np.ndarray]) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[
        pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in outputs.items()])


def _error_response(exc: BaseException) -> Any:
    message = f"{type(exc).__name__}: {exc}"
    invalid = type(exc).__name__ in ("InputError", "_InputMissing")
    code: Optional[Any] = getattr(pb_utils.TritonError, "INVALID_ARG", None) if invalid else None
    try:
        error = pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
    except TypeError:  # an older backend without error codes
        error = pb_utils.TritonError(message)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


def _log(message: str) -> None:
    logger = getattr(pb_utils, "Logger", None)
    if logger is not None:
        logger.log_info(message)
