"""Take real bundles apart and put them back together, so tests can hand-craft hostile ones."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["members_of", "manifest_of", "repack", "refresh_checksums", "write_members"]

Members = List[Tuple[str, bytes]]


def members_of(path: Path) -> Members:
    """Every member of a bundle, in archive order, as (name, bytes)."""
    with zipfile.ZipFile(path) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()]


def manifest_of(members: Members) -> Dict[str, Any]:
    return json.loads(dict(members)["manifest.json"])


def refresh_checksums(manifest: Dict[str, Any], members: Members) -> Dict[str, Any]:
    """Make the manifest's members table (and engine stages' bytes/sha256) match ``members``,
    leaving anything that is not shaped like a real table alone."""
    data = dict(members)
    table = manifest.get("members")
    if isinstance(table, dict):
        for name, entry in table.items():
            if isinstance(entry, dict) and name in data:
                entry["bytes"] = len(data[name])
                entry["sha256"] = hashlib.sha256(data[name]).hexdigest()
    stages = manifest.get("stages")
    for stage in stages if isinstance(stages, list) else []:
        if isinstance(stage, dict) and stage.get("kind") == "engine":
            engine = stage.get("engine")
            if isinstance(engine, str) and engine in data:
                stage["bytes"] = len(data[engine])
                stage["sha256"] = hashlib.sha256(data[engine]).hexdigest()
    return manifest


def repack(members: Members, manifest: Optional[Any] = None, fix_checksums: bool = True,
           compress: bool = False) -> bytes:
    """A bundle's bytes from ``members``; ``manifest`` (any JSON value) replaces manifest.json."""
    if manifest is not None:
        if fix_checksums and isinstance(manifest, dict):
            manifest = refresh_checksums(manifest, members)
        text = json.dumps(manifest, indent=1, sort_keys=True).encode()
        members = [(n, text if n == "manifest.json" else d) for n, d in members]
    return write_members(members, compress=compress)


def write_members(members: Members, compress: bool = False) -> bytes:
    """A ZIP of ``members`` written the way the bundle writer does (or deflated)."""
    import io
    import warnings

    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", allowZip64=True) as zf:
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": wanted, when it is
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buffer.getvalue()
