"""The GPUs a GPU test runs on (issue 23): ``cuda:0`` .. ``cuda:N-1`` of this machine, and at
least ``cuda:1``, which skips with the reason where it does not exist (issue 24 runs it on a
two-GPU host)."""

from __future__ import annotations

from typing import Any, List

import pytest

from trtc.runtime import cuda


def gpu_count() -> int:
    """Visible CUDA GPUs (0 without cuda-python, a driver or a GPU)."""
    return 0 if cuda.gpu_unavailable_reason(0) is not None else cuda.device_count()


def gpu_params() -> List[Any]:
    """pytest params 0 .. max(N, 2) - 1, ids ``cuda:I``; those beyond this machine skip (with
    no GPU at all: only cuda:0, which the tests' own GPU marks skip with that reason)."""
    count = gpu_count()
    if count == 0:
        return [pytest.param(0, id="cuda:0")]
    return [pytest.param(i, id=f"cuda:{i}", marks=pytest.mark.skipif(
        i >= count, reason=f"cuda:{i} needs {i + 1} GPUs, this machine has {count} (issue 24 "
                           "runs the two-GPU case)")) for i in range(max(count, 2))]
