"""The compiler's memory: measured per step, given back between steps, compared with what is free.

tracemalloc sees none of what matters here (MXNet's, ONNX Runtime's and TensorRT's buffers are
native), so steps are measured with the kernel's own counters: VmRSS and VmHWM of
/proc/self/status, and ``ru_maxrss`` of the children the compiler forks (builds, MXNet forwards).
``TRTC_MEMORY_LOG=1`` prints one line per step on stderr (``[trtc] memory after STEP: ...``):
where a compile's peak is.

Freed memory is not always given back: glibc keeps freed blocks of its heaps for reuse, so a
step that frees gigabytes of numpy arrays leaves the process as large as before, and a forked
child copies those pages' tables. :func:`release` (run at every step boundary) collects cycles
and asks glibc to return free heap pages to the kernel (``malloc_trim``).

``TRTC_MEMORY_LIMIT`` (bytes, or with a K/M/G/T suffix; ``0``/``none``: no bound), the bound
of the runtime's ONNX Runtime arena, also caps what :func:`available_memory` reports: the
up-front check of the accuracy gate is then tested, or made stricter, without a machine that
small.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
from typing import Dict, List, Optional

from .runtime.stages.engine_cpu import MEMORY_LIMIT_ENV as LIMIT_ENV, parse_size, proc_kib

__all__ = ["resident", "release", "step", "note", "available_memory", "LOG_ENV", "LIMIT_ENV"]

LOG_ENV = "TRTC_MEMORY_LOG"


def resident() -> Dict[str, int]:
    """This process's resident bytes now (``rss``) and at its peak (``peak``), and the peak of
    the largest child it has waited for (``children_peak``: a forked build or MXNet forward,
    shared pages included)."""
    found = {"rss": 0, "peak": 0}
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    found["rss" if line.startswith("VmRSS") else "peak"] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        found["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    found["children_peak"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return found


def release() -> None:
    """Give what the last step freed back to the kernel: collect reference cycles (an ONNX
    model, an MXNet executor), then glibc's ``malloc_trim(0)`` (no-op where there is no glibc)."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def step(name: str) -> None:
    """A step boundary of the pipeline: :func:`release`, then :func:`note`."""
    release()
    note(name)


def note(name: str) -> None:
    """With ``TRTC_MEMORY_LOG=1``, one line on stderr: memory now, and the peaks so far. (Inner
    loops note without releasing: a collection per stage of a 256-stage bundle adds up.)"""
    if os.environ.get(LOG_ENV, "") in ("", "0"):
        return
    now = resident()
    print(f"[trtc] memory after {name}: rss {now['rss'] / 2**20:,.0f} MB, peak "
          f"{now['peak'] / 2**20:,.0f} MB, largest child's peak {now['children_peak'] / 2**20:,.0f} MB",
          file=sys.stderr, flush=True)


def available_memory() -> Optional[int]:
    """Bytes this process can still get: the least of the kernel's MemAvailable, a cgroup
    (container) limit less its usage, the address-space limit (``ulimit -v``) less what is
    mapped, and ``TRTC_MEMORY_LIMIT`` less what is resident. None where nothing is known."""
    found: List[int] = []
    available = proc_kib("/proc/meminfo", "MemAvailable:")
    if available is not None:
        found.append(available * 1024)
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit, encoding="ascii") as fh:
                text = fh.read().strip()
            with open(usage, encoding="ascii") as fh:
                used = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if text.isdigit() and int(text) < 1 << 60:
            found.append(max(int(text) - used, 0))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        found.append(max(soft - _mapped(), 0))
    if os.environ.get(LIMIT_ENV, "").strip():
        try:
            limit = parse_size(os.environ[LIMIT_ENV])
        except ValueError:
            limit = None  # malformed: the runtime's load() says so, with the setting's name
        if limit is not None:
            found.append(max(limit - resident()["rss"], 0))
    return min(found) if found else None


def _mapped() -> int:
    """This process's mapped address space (VmSize), which RLIMIT_AS bounds."""
    return (proc_kib("/proc/self/status", "VmSize:") or 0) * 1024
