"""The one error family of trtc. Each subclass maps to a process exit code at the CLI."""

from __future__ import annotations

__all__ = [
    "TrtcError",
    "UsageError",
    "CompileError",
    "BundleError",
    "IncompatibleError",
    "InputError",
    "CudaError",
    "EXIT_CODES",
]


class TrtcError(Exception):
    """Base of every error trtc raises on purpose. The message is one line a user can act on."""

    exit_code = 1


class UsageError(TrtcError):
    """Bad arguments or input files given to the compiler (exit code 2)."""

    exit_code = 2


class CompileError(TrtcError):
    """The model could not be compiled, or failed the accuracy gate (exit code 1)."""

    exit_code = 1


class BundleError(TrtcError):
    """A bundle file is unreadable, corrupted or not a trtc bundle (exit code 3)."""

    exit_code = 3


class IncompatibleError(TrtcError):
    """A bundle is intact but cannot run here: format, backend version, GPU (exit code 4)."""

    exit_code = 4


class InputError(TrtcError, ValueError):
    """Arrays passed to a loaded model do not match its inputs (exit code 5)."""

    exit_code = 5


class CudaError(TrtcError):
    """A CUDA call failed (exit code 6)."""

    exit_code = 6


EXIT_CODES = {
    "ok": 0,
    "compile failure / accuracy gate": CompileError.exit_code,
    "usage error": UsageError.exit_code,
    "bad bundle": BundleError.exit_code,
    "incompatible bundle": IncompatibleError.exit_code,
    "bad input arrays": InputError.exit_code,
    "CUDA failure": CudaError.exit_code,
}
