"""Native steps that can crash the process, run in a forked child: a crash becomes an exception.

TensorRT's builder recurses over the network (a chain of ~3,000 ReLUs overflowed the 8 MiB main
stack: SIGSEGV) and MXNet's CPU operators trust their inputs (a Reshape whose target does not
hold its input's values, a custom op's bug: SIGSEGV, SIGFPE, abort). Run in-process, such a
crash killed the compiler and left its temp file beside the output. :func:`in_child` runs the
step in a ``fork()`` of the compiler: the child shares everything the parent has loaded (no
re-import, no serialization of the model; MXNet's engine and glibc are fork-aware) and sends
its result back through a temp file. A child that dies by a signal becomes
:class:`NativeCrash` naming the step and the signal; the compiler carries on or fails with one
line, and removes its own temp file.

Every TensorRT build and every MXNet forward of the compiler (fp16 and int8 calibration, the
accuracy gate's reference) goes through here. Costs: a fork (page tables copied, memory shared
copy-on-write: ~15 ms for a compiler holding 400 MB), the result pickled through a temp file
(a 47 MB plan: ~0.1 s) and, in the child, MXNet's and TensorRT's per-process warm-up paid again.
``TRTC_IN_PROCESS=1`` runs them in the compiler's own process instead (a debugging switch: under
gdb, or where fork is unwelcome, e.g. a parent process that initialized CUDA itself, as a
Python caller of ``trtc.compile`` might have: a forked child cannot use that CUDA context).
"""

from __future__ import annotations

import gc
import mmap
import os
import pickle
import signal
import sys
import tempfile
import threading
from typing import Any, Callable, Optional

__all__ = ["NativeCrash", "cuda_loaded", "in_child", "isolation_enabled", "signal_text"]


class NativeCrash(Exception):
    """A native step died (a signal, or an exit without a result) in the child running it."""

    def __init__(self, step: str, signum: Optional[int], detail: str = ""):
        self.step, self.signum = step, signum
        how = signal_text(signum) if signum is not None else (detail or "died without a result")
        super().__init__(f"{step} crashed ({how})")


_HELD = {signal.SIGINT, signal.SIGTERM}


def signal_text(signum: int) -> str:
    """``SIGSEGV, signal 11``; for SIGKILL also the likely sender (the kernel's OOM killer)."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    text = f"{name}, signal {signum}" if name.startswith("SIG") else name
    if signum == signal.SIGKILL:
        text += ": killed, most likely by the kernel for lack of memory"
    return text


def isolation_enabled() -> bool:
    return hasattr(os, "fork") and os.environ.get("TRTC_IN_PROCESS", "") in ("", "0")


def cuda_loaded() -> bool:
    """Is the CUDA driver library mapped into this process? A forked child cannot use a CUDA
    context its parent created, so a step that may need CUDA (a TensorRT build on a GPU
    machine) then runs in-process."""
    try:
        with open("/proc/self/maps", "rb") as maps:
            return b"libcuda.so" in maps.read()
    except OSError:
        return False


def in_child(step: str, func: Callable[..., Any], *args: Any,
             stack_bytes: Optional[int] = None, uses_cuda: bool = False, **kwargs: Any) -> Any:
    """``func(*args, **kwargs)``, computed in a forked child process.

    Args:
        step: what the call does, for the error (``"TensorRT-RTX's builder"``).
        func: the call; its result must pickle. An exception it raises is raised here (the
            same type when it pickles, else RuntimeError with its text).
        stack_bytes: run ``func`` on a thread with this much stack (deep recursion in native
            code needs more than the main thread's 8 MiB); None: the child's main thread.
        uses_cuda: ``func`` may use CUDA: run in-process where this process has the CUDA
            driver loaded (:func:`cuda_loaded`).

    Raises:
        NativeCrash: the child died by a signal (or exited without sending a result).
    """
    if not isolation_enabled() or (uses_cuda and cuda_loaded()):
        return _call(func, args, kwargs, stack_bytes)
    for stream in (sys.stdout, sys.stderr):  # nothing buffered is written twice
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream
            pass
    result = tempfile.TemporaryFile()
    # SIGINT/SIGTERM are held across fork(): Python runs a signal's handler at the next bytecode,
    # which may be inside an at-fork callback (logging's lock release); there the handler's
    # KeyboardInterrupt / SystemExit was printed as "Exception ignored" and lost: Ctrl-C did
    # nothing. Held, the signal is delivered once fork() has returned, in the try below.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    parent = os.getpid()
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        raise
    if pid == 0:  # the child: never returns into the parent's frames
        status = 0
        try:
            gc.freeze()  # the collector never walks the parent's objects: no copy-on-write storm
            if os.environ.get("TRTC_DEBUG", "") in ("", "0"):  # the parent says what crashed
                import faulthandler

                faulthandler.disable()
            # Ctrl-C / kill: die at once. A fault: die by it, at once. MXNet's SIGSEGV handler
            # logs and calls exit(), whose C++ destructors then join the parent's ONNX Runtime
            # threads, which do not exist here: the child hung instead of dying.
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGSEGV, signal.SIGFPE,
                           signal.SIGBUS, signal.SIGILL, signal.SIGABRT):
                try:
                    signal.signal(signum, signal.SIG_DFL)
                except (ValueError, OSError):  # not the main thread (a caller's worker thread)
                    pass
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            _die_with(parent)
            _exit_at_exit()
            try:
                payload = ("ok", _call(func, args, kwargs, stack_bytes))
            except BaseException as exc:  # noqa: BLE001 - sent to the parent as it is
                payload = ("error", exc)
            # a file, not a pipe: tens of MB (a plan) go through the page cache at memory
            # speed (a 64 KiB pipe took 0.3 s for 47 MB), pickled straight into it
            with os.fdopen(os.dup(result.fileno()), "wb") as out:
                try:
                    pickle.dump(payload, out, protocol=pickle.HIGHEST_PROTOCOL)
                except Exception:  # noqa: BLE001 - an unpicklable result or exception
                    exc = payload[1] if payload[0] == "error" else None
                    out.seek(0)
                    out.truncate()
                    pickle.dump(("error", RuntimeError(
                        f"{type(exc).__name__}: {exc}" if exc is not None
                        else f"{step}: its result cannot be sent back")), out)
        except BaseException:  # noqa: BLE001
            status = 1
        finally:
            os._exit(status)
    reaped = False
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a held signal is raised here
        _, status = os.waitpid(pid, 0)
        reaped = True
    finally:
        if not reaped:  # interrupted (SIGTERM, Ctrl-C) while waiting: take the child along
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ChildProcessError, ProcessLookupError):
                pass
            result.close()
    with result:
        if os.WIFSIGNALED(status):
            if os.WTERMSIG(status) == signal.SIGINT:  # Ctrl-C reached the child first
                raise KeyboardInterrupt
            raise NativeCrash(step, os.WTERMSIG(status))
        size = os.fstat(result.fileno()).st_size
        if not size:
            raise NativeCrash(step, None, f"exit status {os.waitstatus_to_exitcode(status)}")
        with mmap.mmap(result.fileno(), size, access=mmap.ACCESS_READ) as data:
            kind, value = pickle.loads(data)  # straight from the mapped file: one copy
    if kind == "error":
        raise value
    return value


def _die_with(parent: int) -> None:
    """The child is killed when the compiler dies, whatever kills it (SIGKILL, the OOM killer):
    Linux's PR_SET_PDEATHSIG. Before, a builder child whose parent was SIGKILLed went on building
    at full CPU under init. A parent that died before the call: leave at once."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:
        os._exit(1)


def _exit_at_exit() -> None:
    """Should native code call exit() in the child, leave at once (status 70) instead of
    running the C++ destructors of the parent's libraries, which wait for threads that
    exist only in the parent. Registered last, it runs first (glibc's __cxa_atexit)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.__cxa_atexit(ctypes.cast(libc._exit, ctypes.c_void_p), ctypes.c_void_p(70), None)
    except (OSError, AttributeError):  # not glibc: exit() runs as it would
        pass


def _call(func: Callable[..., Any], args: Any, kwargs: Any, stack_bytes: Optional[int]) -> Any:
    if not stack_bytes:
        return func(*args, **kwargs)
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["value"] = func(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
            outcome["error"] = exc

    previous = threading.stack_size(stack_bytes)
    try:
        worker = threading.Thread(target=work, name="trtc-native", daemon=True)
        worker.start()
    except RuntimeError:  # no address space for that stack (a tight ulimit -v): run it here
        return func(*args, **kwargs)
    finally:
        threading.stack_size(previous)
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
