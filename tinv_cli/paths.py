"""Where tinv keeps its state: one folder, ``$TINV_HOME``, shared by all projects."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tinv_cli.errors import TinvError


def tinv_home() -> Path:
    """``$TINV_HOME``, else the platform's per-user data folder (no extra dependency needed).

    A ``$TINV_HOME`` that is a file is refused here, at the first command that asks, rather than by a traceback
    at the first write."""
    env = os.environ.get("TINV_HOME")
    if env:
        home = Path(env).expanduser()
        if home.exists() and not home.is_dir():
            raise TinvError(
                f"TINV_HOME={env} is a file, not a folder", "point TINV_HOME at a folder, or unset it"
            )
        return home
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "tinv"


def ensure_folder(path: Path, what: str) -> Path:
    """Create the folder ``path`` (and its parents) if it is not there; a one-line TinvError naming ``what``
    (``"output folder"``) when it cannot be one, so a command fails before its work rather than after it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise TinvError(f"{what} {path} is a file, not a folder", "choose another path") from None
    except OSError as error:
        raise TinvError(
            f"cannot create {what} {path}: {error.strerror or error}", "choose a folder you can write to"
        ) from None
    if not os.access(path, os.W_OK):
        raise TinvError(f"{what} {path} is not writable", "choose a folder you can write to")
    return path


def check_folder(path: Path, what: str) -> Path:
    """Refuse (one-line TinvError naming ``what``) a folder that could not be created or written, creating
    nothing: a command checks where its output goes before its work, and a refused run leaves no folder."""
    if path.exists():
        if not path.is_dir():
            raise TinvError(f"{what} {path} is a file, not a folder", "choose another path")
        existing = path
    else:
        existing = next(parent for parent in path.parents if parent.exists())
        if not existing.is_dir():
            raise TinvError(f"cannot create {what} {path}: {existing} is a file", "choose another path")
    if not os.access(existing, os.W_OK):
        raise TinvError(f"{what} {path} is not writable (at {existing})", "choose a folder you can write to")
    return path
