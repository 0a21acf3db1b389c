"""Where tinv keeps its state: one folder, ``$TINV_HOME``, shared by all projects."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def tinv_home() -> Path:
    """``$TINV_HOME``, else the platform's per-user data folder (no extra dependency needed)."""
    env = os.environ.get("TINV_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "tinv"
