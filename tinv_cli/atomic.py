"""Writing a file so that a reader sees the old one or the new one, never part of either."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def _atomic(path: Path, write_to: Callable[[Path], object]) -> Path:
    """Write through a temporary file in the same folder, then rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name the writer creates itself (not mkstemp's 0600 file), so the result gets the usual permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write_to(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
