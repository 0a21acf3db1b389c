"""Writing files and folders so that a reader, or a crash, finds the old version or the new one, never part of
either: everything is written under a temporary name beside its target, then renamed into place.

Durability, one policy for every write here: the temporary file is fsynced before the rename, and the folder that
holds it after the rename (on POSIX; Windows cannot open a folder, and NTFS journals the rename). Without the
first, a power cut soon after the rename can leave the new name on an empty or partial file (ext4 and XFS
allocate data blocks late); without the second, the rename itself may not be on disk yet. So after a power cut
the target is the old file or the whole new one. It costs two fsyncs per write: well under a millisecond on a
laptop's SSD, tens of milliseconds on a spinning disk or a network file system. Nothing here is written in a hot
loop (concept files, metadata, a checkpoint every N steps, a plot), so it never shows in a training step.

Temporary names are ``.NAME.PID.RANDOM.tmp`` beside the target: hidden, recognisably tinv's, never a name a
reader looks for, and removed when the write fails. The writer creates the file itself (not mkstemp's 0600 one),
so the result gets the usual permissions for a new file (0666 less the umask) unless ``mode`` gives others.

What a killed process leaves (a temporary file, a staging folder) is found by the next one without guessing from
ages: ``stray_temps`` lists the temporary names whose pid is not a live process on this host, and ``Lock`` is an OS
lock on a file (``flock`` on POSIX, ``msvcrt.locking`` on Windows) that the kernel releases when its holder ends,
however it ends, SIGKILL included. A marker file would outlive a killed holder; the lock cannot.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_OLD_SUFFIX = ".old"


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside ``path``; the pid and random part keep concurrent writers apart."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def leftovers(path: Path) -> list[Path]:
    """The temporary files and folders that writers of ``path`` left behind when their process died."""
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))


# ``temp_path``'s names: .NAME.PID.RANDOM.tmp
_TEMP_RE = re.compile(r"\A\..+\.(?P<pid>[0-9]+)\.[0-9a-f]{8}\.tmp\Z")


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process on this host. True where that cannot be told (Windows, where
    ``os.kill(pid, 0)`` would end the process), so nothing of a live writer's is ever taken for a leftover."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def stray_temps(folder: Path) -> list[Path]:
    """The temporary files and folders in ``folder`` whose writer (the pid in the name) is no longer alive."""
    try:
        children = sorted(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    stray = []
    for child in children:
        match = _TEMP_RE.match(child.name)
        if match and int(match["pid"]) != os.getpid() and not pid_alive(int(match["pid"])):
            stray.append(child)
    return stray


def remove_stray_temps(folder: Path) -> list[Path]:
    """Delete what ``stray_temps`` finds; returns what was removed."""
    removed = stray_temps(folder)
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return removed


class Lock:
    """An exclusive OS lock on the file ``path`` (created if missing), held by this process until ``release``
    or until the process ends in any way. ``acquire(wait=False)`` returns False when another process holds it.

    The lock belongs to the open file, so a second ``Lock`` on the same path in one process is refused too. A
    holder that finds, once locked, that ``path`` was deleted or replaced meanwhile (a sweeper removing a free
    lock file) locks the new file instead, so a lock is always on the file the name points at.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[bytes] | None = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self, *, wait: bool = False) -> bool:
        if self._handle is not None:
            return True
        while True:
            try:
                handle = open(self.path, "a+b")  # noqa: SIM115 -- held open for as long as the lock is
            except (
                FileNotFoundError
            ):  # no folder yet, or its last holder just removed it (remove_and_release)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                continue
            try:
                if not _lock(handle, wait):
                    handle.close()
                    return False
                if _same_file(handle, self.path):
                    self._handle = handle
                    return True
            except BaseException:
                handle.close()
                raise
            handle.close()  # the name moved on to another file while we waited: lock that one

    def release(self) -> None:
        """Unlock and close; the lock file stays."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()  # closing releases the lock on every platform

    def remove_and_release(self) -> None:
        """Delete the lock file while still holding it, then release. Safe: a process waiting on the old file
        finds, once it has it, that the name is gone, and locks a new file (``acquire``)."""
        if self._handle is not None:
            with contextlib.suppress(OSError):  # Windows cannot delete an open file: it stays
                self.path.unlink()
        self.release()

    def __enter__(self) -> Lock:
        self.acquire(wait=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(handle: IO[bytes], path: Path) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(handle.fileno())
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def _lock(handle: IO[bytes], wait: bool) -> bool:
    if sys.platform == "win32":
        import msvcrt

        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)
        except OSError:
            if wait:
                raise
            return False
        return True
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def previous(path: Path) -> Path:
    """Where ``replace_dir`` keeps the old folder while it swaps the new one in."""
    return path.with_name(path.name + _OLD_SUFFIX)


def _fsync_file(path: Path) -> None:
    # Windows flushes a file only through a handle opened for writing; POSIX accepts any descriptor.
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems (FUSE mounts, SMB shares) cannot fsync a folder; the rename itself has happened.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def write_with(path: Path, writer: Callable[[Path], object], *, mode: int | None = None) -> Path:
    """Have ``writer`` write the file at the temporary path it is given, then put that file in place as ``path``.

    A writer that raises leaves ``path`` as it was and no temporary file behind. ``mode`` sets the permission
    bits of the result (an edited file keeps its own that way). Returns ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        writer(tmp)
        _fsync_file(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def write_bytes(path: Path, data: bytes, *, mode: int | None = None) -> Path:
    return write_with(path, lambda tmp: tmp.write_bytes(data), mode=mode)


def write_text(path: Path, text: str, *, mode: int | None = None) -> Path:
    """UTF-8, newlines as given (no ``\\r\\n`` translation on Windows), so a file is the same bytes everywhere."""
    return write_bytes(path, text.encode("utf-8"), mode=mode)


def write_json(path: Path, data: Any, *, default: Callable[[Any], Any] | None = None) -> Path:
    """``data`` as indented UTF-8 JSON ending in a newline; ``default`` converts what JSON cannot hold.

    The text is made before any file is touched, so data that cannot be written leaves no trace."""
    text = json.dumps(data, indent=2, ensure_ascii=False, default=default) + "\n"
    return write_text(path, text)


def replace_dir(path: Path, build: Callable[[Path], object]) -> Path:
    """Have ``build`` fill the empty temporary folder it is given, then swap that folder in as ``path``.

    A folder cannot be renamed over another, so the swap is two renames, ``path`` out to ``previous(path)`` and
    the new folder in, after which the old one is deleted. A crash between the two leaves only
    ``previous(path)``, which readers fall back to. A build that raises leaves ``path`` as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    old = previous(path)
    tmp.mkdir()
    try:
        build(tmp)
        for inner in sorted(tmp.rglob("*"), reverse=True):  # files before the folders holding them
            if inner.is_dir():
                _fsync_dir(inner)
            else:
                _fsync_file(inner)
        _fsync_dir(tmp)
        if path.exists():
            if old.exists():
                shutil.rmtree(old)
            os.rename(path, old)
        os.rename(tmp, path)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return path
