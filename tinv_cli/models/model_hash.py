"""Which checkpoint file exactly: its sha256, and AUTOMATIC1111's short "Model hash" (the first 10 hex digits).

Hashing a 6 GB checkpoint reads all of it (seconds to a minute), so a digest is cached in
``$TINV_HOME/cache/model-hashes.json``, keyed by the file's resolved path, size and mtime: a file replaced or
rewritten in place gets hashed again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tinv_cli.atomic import write_json
from tinv_cli.paths import tinv_home

SHORT = 10  # A1111's "Model hash" (its sha256-based hash, since 1.0)
_CHUNK = 16 * 1024 * 1024


def _cache_file() -> Path:
    return tinv_home() / "cache" / "model-hashes.json"


def _read_cache() -> dict[str, str]:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def file_sha256(path: Path) -> str:
    """The sha256 of ``path``, from the cache when the file is unchanged since it was hashed."""
    resolved = path.expanduser().resolve()
    stat = resolved.stat()
    key = f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}"
    cache = _read_cache()
    if key in cache:
        return cache[key]
    sha = hashlib.sha256()
    with resolved.open("rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
    digest = sha.hexdigest()
    # Entries of this path at another size or mtime are stale: the file they describe is gone.
    fresh = {k: v for k, v in _read_cache().items() if not k.startswith(f"{resolved}|")}
    fresh[key] = digest
    write_json(_cache_file(), fresh)
    return digest


def short_hash(sha256: str) -> str:
    return sha256[:SHORT]


def model_hash(base: str) -> str | None:
    """A1111's "Model hash" of the single-file checkpoint ``base`` (10 hex digits); None for a diffusers
    folder, a Hub id or ``builtin:NAME``, which have no one file to hash."""
    from tinv_cli.models.single_file import single_file_path

    path = single_file_path(base)
    return short_hash(file_sha256(path)) if path is not None else None
