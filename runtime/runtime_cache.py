"""TensorRT-RTX runtime cache files: the kernels TensorRT-RTX compiles just in time on the GPU
where an engine first runs, kept on disk so that the next process start does not compile them
again (issue 23). One file per engine and GPU: ``<dir>/<key>.trtcache``, where the key hashes what
a cache is valid for (the engine's sha256, the TensorRT-RTX version, the GPU's name and compute
capability, the CUDA driver version). The file holds that key again, in the clear, and the
blob's sha256: a stale or damaged file is ignored with a warning, never handed to TensorRT-RTX
(which validates the blob itself too). Written atomically (temp file + rename) after the first
call, so concurrent processes never read half a file.

``load(..., cache_dir=DIR)``, or the environment variable ``TRTC_RUNTIME_CACHE_DIR`` for servers.
Full TensorRT compiles no kernels at run time: there the option does nothing (and says so once).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Optional

__all__ = ["ENV_VAR", "cache_dir_from", "CacheFile"]

ENV_VAR = "TRTC_RUNTIME_CACHE_DIR"
_MAGIC = b"trtc-runtime-cache 1\n"
MAX_CACHE_BYTES = 1 << 30  # a runtime cache larger than this is not read


def cache_dir_from(cache_dir: "Optional[os.PathLike[str] | str]") -> Optional[Path]:
    """``cache_dir``, else ``$TRTC_RUNTIME_CACHE_DIR``, else None (no cache)."""
    chosen = cache_dir if cache_dir is not None else os.environ.get(ENV_VAR) or None
    return Path(chosen) if chosen is not None else None


class CacheFile:
    """The runtime cache file of one engine on one GPU.

    Args:
        directory: where cache files live (made if missing, when writing).
        identity: what the cache is valid for: engine sha256, backend and version, GPU name,
            compute capability, driver version (strings).
    """

    def __init__(self, directory: Path, identity: Dict[str, str]):
        self.identity = dict(sorted(identity.items()))
        text = json.dumps(self.identity, sort_keys=True).encode()
        self.path = Path(directory) / f"{hashlib.sha256(text).hexdigest()[:32]}.trtcache"

    def read(self) -> Optional[bytes]:
        """The cached blob, or None (no file yet; or a stale or damaged one, with a warning)."""
        try:
            with open(self.path, "rb") as fh:
                data = fh.read(MAX_CACHE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            warnings.warn(f"runtime cache {self.path}: cannot read it ({exc}); compiling kernels "
                          "again", RuntimeWarning, stacklevel=3)
            return None
        problem = self._problem(data)
        if problem:
            warnings.warn(f"runtime cache {self.path}: {problem}; ignored, compiling kernels again "
                          "(it is rewritten after the first call)", RuntimeWarning, stacklevel=3)
            return None
        return data[data.index(b"\n", len(_MAGIC)) + 1:]

    def _problem(self, data: bytes) -> Optional[str]:
        if len(data) > MAX_CACHE_BYTES:
            return f"larger than {MAX_CACHE_BYTES} bytes"
        if not data.startswith(_MAGIC) or b"\n" not in data[len(_MAGIC):]:
            return "not a trtc runtime cache file"
        end = data.index(b"\n", len(_MAGIC))
        try:
            header = json.loads(data[len(_MAGIC):end])
        except ValueError:
            return "its header is damaged"
        if not isinstance(header, dict) or header.get("identity") != self.identity:
            return "it was written for another engine, GPU, driver or TensorRT-RTX version"
        if header.get("sha256") != hashlib.sha256(data[end + 1:]).hexdigest():
            return "its contents are damaged (checksum mismatch)"
        return None

    def write(self, blob: bytes) -> None:
        """Store ``blob`` atomically; a failure is a warning (the cache is an optimization)."""
        header = json.dumps({"identity": self.identity,
                             "sha256": hashlib.sha256(blob).hexdigest()}, sort_keys=True)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(_MAGIC + header.encode() + b"\n" + bytes(blob))
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as exc:
            warnings.warn(f"runtime cache {self.path}: cannot write it ({exc})", RuntimeWarning,
                          stacklevel=3)

