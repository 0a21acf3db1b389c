"""The local registry: every concept trained, pulled or imported, in one folder shared by all projects.

Layout (see docs/architecture.md): ``$TINV_HOME/registry/<name>/<version>/`` holds a concepts-library folder
plus ``tinv.json``. A version folder is built under ``$TINV_HOME/tmp/`` and moved into place with one rename,
and removed by renaming it back out first, so a reader (or a crash) never sees half an entry. Nothing is
overwritten: adding under an existing name makes the next version.

Each folder in tmp/ has a lock file beside it (``X.lock`` for ``X``), locked by the process working on it for as
long as it does; the lock dies with its process. So the next add or remove sweeps, at once and whatever their age,
the folders whose lock it can take: what a killed import left (hundreds of MB for a big one) does not wait an hour.

Listing reads only ``tinv.json`` files, so ``tinv list`` never imports torch; the embedding itself is read on
demand through ``formats``.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from tinv_cli.atomic import Lock, write_json, write_text, write_with
from tinv_cli.errors import NotFoundError, RegistryError
from tinv_cli.formats.layout import (
    BIN_NAME,
    DIFFUSERS_DIR,
    IMAGES_DIR,
    INFO_FILE,
    KIND_FILE,
    KINDS,
    README_FILE,
    SAFE_NAME,
    TOKEN_FILE,
)
from tinv_cli.names import NAME_RE, check_name
from tinv_cli.paths import tinv_home
from tinv_cli.registry.entry import Entry, read_info

if TYPE_CHECKING:
    from tinv_cli.embedding import Embedding

SCHEMA = 1
SOURCE_TYPES = ("trained", "pulled", "imported")

_VERSION_RE = re.compile(r"\A[1-9][0-9]*\Z")

# A folder in tmp/ without a lock file (one an older tinv made) this old belongs to a process that died.
STALE_AFTER_S = 3600.0
_LOCK_SUFFIX = ".lock"

# Files of the concepts-library layout that extra_files must not replace.
_RESERVED = {
    INFO_FILE,
    SAFE_NAME,
    BIN_NAME,
    TOKEN_FILE,
    KIND_FILE,
    README_FILE,
    IMAGES_DIR,
    DIFFUSERS_DIR,  # an SDXL entry's diffusers pair
}
_LIST_HINT = "see `tinv list`"


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"cat-toy"`` -> ``("cat-toy", None)``; ``"cat-toy@2"`` -> ``("cat-toy", 2)``."""
    name, sep, version_text = ref.partition("@")
    if not NAME_RE.match(name):
        raise RegistryError(
            f"{ref!r} is not a concept name",
            "names use letters, digits, '-', '_' and '.', start with a letter or digit, and are at most 96 "
            "characters; add @N for a version, e.g. cat-toy@2",
        )
    if not sep:
        return name, None
    if not _VERSION_RE.match(version_text):
        raise RegistryError(
            f"{ref!r}: the version after '@' must be a number from 1 up",
            f"write {name}@1, or just {name} for the current version",
        )
    return name, int(version_text)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} cannot be stored in {INFO_FILE}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _extra_target(relative: str) -> PurePosixPath:
    rel = PurePosixPath(relative.replace("\\", "/"))
    if rel.is_absolute() or not rel.parts or ".." in rel.parts or rel.parts[0] in _RESERVED:
        raise RegistryError(
            f"extra file name {relative!r} is not a free relative path inside an entry",
            f"use a name such as validation.png; {', '.join(sorted(_RESERVED))} belong to the entry itself",
        )
    return rel


class Registry:
    """The registry under ``home`` (default ``$TINV_HOME``). Creates its folders only when it first writes."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = Path(home) if home is not None else tinv_home()
        self.root = self.home / "registry"
        self.tmp = self.home / "tmp"

    def home_paths(self) -> dict[str, Path]:
        return {"home": self.home, "registry": self.root, "tmp": self.tmp}

    # Reading

    def _version_dirs(self, name: str) -> list[tuple[int, Path]]:
        """Every numbered folder under ``registry/<name>``, ascending, whether or not it holds a valid entry."""
        try:
            children = list(os.scandir(self.root / name))
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = [(int(c.name), Path(c.path)) for c in children if _VERSION_RE.match(c.name) and c.is_dir()]
        return sorted(found)

    def _names(self) -> Iterator[str]:
        try:
            children = list(os.scandir(self.root))
        except (FileNotFoundError, NotADirectoryError):
            return
        for child in children:
            if NAME_RE.match(child.name) and child.is_dir():
                yield child.name

    def _entry(self, name: str, version: int, path: Path) -> Entry | None:
        info = read_info(path)
        return None if info is None else Entry(name, version, path, info)

    def versions(self, name: str) -> list[Entry]:
        """Every readable version of ``name``, ascending (empty when there is none)."""
        check_name(name)
        entries = (self._entry(name, version, path) for version, path in self._version_dirs(name))
        return [e for e in entries if e is not None]

    def _current(self, name: str) -> Entry | None:
        # Highest first, and stop at the first readable one: a broken newest folder falls back to the one before.
        for version, path in reversed(self._version_dirs(name)):
            entry = self._entry(name, version, path)
            if entry is not None:
                return entry
        return None

    def _all_current(self) -> list[Entry]:
        entries = (self._current(name) for name in sorted(self._names()))
        return [e for e in entries if e is not None]

    def find_token(self, token: str) -> Entry | None:
        """The current entry whose token is ``token`` (the first by name if several share it)."""
        return next((e for e in self._all_current() if e.token == token), None)

    def _suggest(self, query: str) -> str:
        entries = self._all_current()
        by_key: dict[str, str] = {}
        for e in entries:
            by_key.setdefault(e.name.lower(), e.name)
            by_key.setdefault(e.token.lower(), e.name)
        close = difflib.get_close_matches(query.lower(), list(by_key), n=5, cutoff=0.6)
        names = list(dict.fromkeys(by_key[k] for k in close))[:3]
        return f"; did you mean {' or '.join(names)}?" if names else ""

    def get(self, ref: str) -> Entry:
        """``"name"`` (its current version), ``"name@N"``, or a token such as ``"<cat-toy>"``."""
        try:
            name, version = parse_ref(ref)
        except RegistryError:
            # Not a name; people also refer to a concept by the token they write in prompts.
            by_token = self.find_token(ref)
            if by_token is not None:
                return by_token
            raise NotFoundError(
                f"no concept {ref!r} in the registry{self._suggest(ref)}", _LIST_HINT
            ) from None
        if version is None:
            entry = self._current(name)
            if entry is None:
                raise self._missing(name, None)
            return entry
        entry = self._entry(name, version, self.root / name / str(version))
        if entry is None:
            raise self._missing(name, version)
        return entry

    def _missing(self, name: str, version: int | None) -> NotFoundError:
        have = [e.version for e in self.versions(name)]
        if version is None or not have:
            return NotFoundError(
                f"no concept named {name!r} in the registry{self._suggest(name)}", _LIST_HINT
            )
        return NotFoundError(
            f"{name} has no version {version} (versions: {', '.join(map(str, have))})",
            f"use {name}@{have[-1]}, or just {name} for the current version; {_LIST_HINT}",
        )

    # Writing

    def _clean_stale(self) -> None:
        """Delete what dead processes left in tmp/: at once where the folder's lock is free, by age (an hour)
        where a folder has no lock file."""
        cutoff = time.time() - STALE_AFTER_S
        try:
            children = {child.name: child for child in os.scandir(self.tmp)}
        except FileNotFoundError:
            return
        for name, child in children.items():
            if name.endswith(_LOCK_SUFFIX):
                folder = name[: -len(_LOCK_SUFFIX)]
                lock = Lock(Path(child.path))
                if lock.acquire(wait=False):
                    # Nobody works on it: its owner died (or has just finished and is removing it).
                    shutil.rmtree(self.tmp / folder, ignore_errors=True)
                    lock.release()
                    with contextlib.suppress(OSError):
                        Path(child.path).unlink(missing_ok=True)
                continue
            if name + _LOCK_SUFFIX in children:
                continue  # decided above, by its lock
            try:
                old = child.stat(follow_symlinks=False).st_mtime < cutoff
            except FileNotFoundError:
                continue  # another process cleaned it first
            if old and child.is_dir(follow_symlinks=False):
                shutil.rmtree(child.path, ignore_errors=True)
            elif old:
                Path(child.path).unlink(missing_ok=True)

    @contextlib.contextmanager
    def _work_folder(self, prefix: str) -> Iterator[Path]:
        """A fresh path in tmp/ (not created), locked for this process until the block ends, then removed with
        its lock file. The lock is taken before the folder exists, so a sweep never sees it unlocked."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._clean_stale()
        folder = self.tmp / f"{prefix}-{uuid.uuid4().hex}"
        lock_path = folder.with_name(folder.name + _LOCK_SUFFIX)
        lock = Lock(lock_path)
        lock.acquire(wait=True)
        try:
            yield folder
        finally:
            try:
                # After a successful rename the folder no longer exists; otherwise this undoes everything.
                shutil.rmtree(folder, ignore_errors=True)
            finally:
                lock.release()  # first: Windows cannot delete a file that is open
                with contextlib.suppress(OSError):  # a sweep may be looking at it; it deletes it then
                    lock_path.unlink(missing_ok=True)

    def add(
        self,
        name: str,
        embedding: Embedding,
        *,
        kind: str = "object",
        source: dict[str, Any],
        images: Sequence[Path] = (),
        base_model: str | None = None,
        base_model_revision: str | None = None,
        training: dict[str, Any] | None = None,
        hub: dict[str, Any] | None = None,
        extra_files: Mapping[str, Path] | None = None,
    ) -> Entry:
        """Register ``embedding`` as the next version of ``name`` and return the new entry.

        The whole version folder is built in tmp/ and renamed into place; if anything fails, the staging
        folder is deleted and the registry is exactly as it was (if the process is killed, the next add or
        remove deletes it).
        """
        from tinv_cli.formats import writers
        from tinv_cli.registry.modelcard import model_card

        check_name(name)
        if kind not in KINDS:
            raise RegistryError(f"{name}: concept kind {kind!r} is not one of {', '.join(KINDS)}")
        if source.get("type") not in SOURCE_TYPES:
            raise RegistryError(
                f"{name}: source type {source.get('type')!r} is not one of {', '.join(SOURCE_TYPES)}"
            )
        extras = {_extra_target(rel): Path(src) for rel, src in (extra_files or {}).items()}
        # Images are checked by writers.write_concepts_library, inside the staging folder's cleanup.
        for src in extras.values():
            if not src.is_file():
                raise NotFoundError(f"{src}: no such file", f"check the path; nothing was added for {name}")

        with self._work_folder(f"add-{name}") as staging:
            staging.mkdir()
            writers.write_concepts_library(embedding, staging, kind=kind, images=tuple(images), readme=None)
            for rel, src in extras.items():
                write_with(staging.joinpath(*rel.parts), functools.partial(shutil.copyfile, src))
            image_dir = staging / IMAGES_DIR
            image_names = (
                sorted(f"{IMAGES_DIR}/{p.name}" for p in image_dir.iterdir() if p.is_file())
                if image_dir.is_dir()
                else []
            )
            info: dict[str, Any] = {
                "schema": SCHEMA,
                "name": name,
                "version": 0,  # set below, once a free number is found
                "token": embedding.token,
                "kind": kind,
                "vectors": embedding.num_vectors,
                "widths": list(embedding.widths),
                **_family_fields(embedding),
                "sha256": _sha256(staging / SAFE_NAME),
                "created": _utc_now(),
                "source": dict(source),
                "base_model": base_model,
                "base_model_revision": base_model_revision,
                "training": training,
                "hub": hub,
                "images": len(image_names),
            }
            return self._move_into_place(name, staging, info, lambda i: model_card(i, image_names))

    def _move_into_place(
        self, name: str, staging: Path, info: dict[str, Any], card: Callable[[dict[str, Any]], str]
    ) -> Entry:
        name_dir = self.root / name
        for _ in range(100):
            versions = self._version_dirs(name)
            info["version"] = versions[-1][0] + 1 if versions else 1
            write_json(staging / INFO_FILE, info, default=_json_default)
            write_text(staging / README_FILE, card(info))
            target = name_dir / str(info["version"])
            name_dir.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, target)
            except OSError:
                # Another add took this number (or a remove took the name folder) between our scan and the
                # rename: scan again and try the next free number. Any other failure is real.
                if target.exists() or not name_dir.exists():
                    continue
                raise
            return Entry(name, info["version"], target, info)
        raise RegistryError(
            f"{name}: could not find a free version number in {name_dir}",
            "another process keeps adding versions; try again",
        )

    def update_info(self, entry: Entry, **changes: Any) -> Entry:
        """Merge ``changes`` into the version's ``tinv.json`` (e.g. ``hub=...`` after a push), atomically."""
        fixed = {"name", "version", "schema"} & changes.keys()
        if fixed:
            raise RegistryError(f"{entry.ref}: {', '.join(sorted(fixed))} cannot be changed in place")
        info = read_info(entry.path)
        if info is None:
            raise NotFoundError(f"{entry.ref}: no readable {INFO_FILE} in {entry.path}", _LIST_HINT)
        info.update(changes)
        write_json(entry.path / INFO_FILE, info, default=_json_default)
        return Entry(entry.name, entry.version, entry.path, info)

    def _move_out(self, path: Path, label: str) -> None:
        """Rename ``path`` into tmp/ (one atomic step out of the registry), then delete it at leisure."""
        with self._work_folder(f"rm-{label}") as trash:
            # The entry is gone from the registry after this rename; a kill while deleting it leaves a folder
            # whose lock dies with us, for the next sweep.
            os.rename(path, trash)

    def remove(self, ref: str) -> list[Entry]:
        """Remove ``name`` (every version) or ``name@N`` (that one). Returns the entries removed."""
        name, version = parse_ref(ref)
        name_dir = self.root / name
        if version is None:
            if not name_dir.is_dir():
                raise self._missing(name, None)
            removed = self.versions(name)
            self._move_out(name_dir, name)
            return removed
        path = name_dir / str(version)
        if not path.is_dir():
            raise self._missing(name, version)
        entry = self._entry(name, version, path)
        self._move_out(path, f"{name}-{version}")
        # Other versions remaining (or an add that just made one) keep the name folder.
        with contextlib.suppress(OSError):
            name_dir.rmdir()
        return [entry] if entry is not None else []

    def unreadable(self, name: str | None = None) -> list[str]:
        """``NAME@N`` of every version folder (of ``name``, or of every name) whose tinv.json cannot be read:
        such a version is left out of ``list`` and ``get``, and this is how commands say so."""
        names = [name] if name is not None else sorted(self._names())
        return [
            f"{each}@{version}"
            for each in names
            for version, path in self._version_dirs(each)
            if self._entry(each, version, path) is None
        ]

    # Defined last: inside the class body the name ``list`` would otherwise shadow the builtin in the
    # annotations of the methods after it, as type checkers read them.
    def list(self) -> list[Entry]:
        """The current version of every name, sorted by name. Folders that are not valid entries are skipped."""
        return self._all_current()


def _family_fields(embedding: Embedding) -> dict[str, Any]:
    """``family``: the variant the widths imply (``"sd1"``), else a layout tinv keeps without running it
    (``"flux"``, with its ``layout`` label for list and show), else None; written with the entry, in one rename."""
    from tinv_cli.formats import foreign

    if embedding.family is not None:
        return {"family": embedding.family}
    layout = foreign.for_widths(embedding.widths)
    return {"family": None} if layout is None else {"family": layout.id, "layout": layout.label}
