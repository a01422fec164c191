"""Keep native libraries' log lines (MXNet's dmlc logging, ONNX Runtime, TensorRT) off trtc's
stdout and stderr: they write straight to file descriptors 1 and 2, below Python's sys.stdout.

``quiet_native()`` points both descriptors at a temp file for the duration of a call; what was
captured is replayed on stderr when ``TRTC_DEBUG`` is set (the CLI's ``--debug`` sets it).
Process-wide by nature (file descriptors are), so it is used around single-threaded steps only:
the compiler's MXNet and ONNX Runtime calls, a model's load.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
from typing import Iterator

__all__ = ["quiet_native", "debug_enabled"]

_LOCK = threading.RLock()
_DEPTH = [0]


def _fileno(stream: object) -> int:
    try:
        return stream.fileno()  # type: ignore[attr-defined]
    except Exception:
        return -1


def debug_enabled() -> bool:
    return os.environ.get("TRTC_DEBUG", "") not in ("", "0")


@contextlib.contextmanager
def quiet_native() -> Iterator[None]:
    """Capture what native code writes to fds 1 and 2 inside the block (nested use is a no-op)."""
    with _LOCK:
        if _DEPTH[0]:
            _DEPTH[0] += 1
            try:
                yield
            finally:
                _DEPTH[0] -= 1
            return
        try:
            sink = tempfile.TemporaryFile()
            saved = [os.dup(1), os.dup(2)]
        except OSError:  # no descriptors to spare: leave the output as it is
            yield
            return
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        # Python code inside the block (progress lines) still reaches the real stdout/stderr
        originals = (sys.stdout, sys.stderr)
        replaced = []
        for fd, attr in ((saved[0], "stdout"), (saved[1], "stderr")):
            stream = getattr(sys, attr)
            if _fileno(stream) in (1, 2):
                wrapper = io.TextIOWrapper(io.FileIO(fd, "w", closefd=False),
                                           encoding=getattr(stream, "encoding", None) or "utf-8",
                                           errors="replace", line_buffering=True, write_through=True)
                setattr(sys, attr, wrapper)
                replaced.append(wrapper)
        _DEPTH[0] = 1
        try:
            yield
        finally:
            _DEPTH[0] = 0
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            sys.stdout, sys.stderr = originals
            for wrapper in replaced:
                with contextlib.suppress(Exception):
                    wrapper.detach()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if debug_enabled():
                sink.seek(0)
                text = sink.read().decode("utf-8", "replace")
                if text.strip():
                    sys.stderr.write(text if text.endswith("\n") else text + "\n")
            sink.close()
