"""Keeping a UI's embeddings folder in step with the registry (``tinv export --all --to DIR --for UI``).

Every current concept (the latest version of each entry) is written as ``NAME.safetensors`` into the folder, in
the layout each UI reads (one ``emb_params`` tensor for SD 1.x/2.x, ``clip_l`` and ``clip_g`` for SDXL), so the
file stem, which is the entry's name, is the prompt's trigger word. What the UIs do with that folder, from their
loaders:

- AUTOMATIC1111 and Forge (``modules/textual_inversion/textual_inversion.py``) walk the folder and its subfolders
  (links followed) and name each embedding after its file stem; the trigger is matched after CLIP's tokenizer
  has lowercased the prompt, so ``Cat`` and ``cat`` are one trigger; files of another model's width are listed as
  skipped, not loaded.
- ComfyUI (``comfy/sd1_clip.py``, ``load_embed``) finds ``embedding:NAME`` in the folder or any subfolder,
  trying NAME, then NAME.safetensors, .pt and .bin; a prompt word ends at a space, so a stem holds none
  (registry names never do). SDXL reads the ``clip_l`` and ``clip_g`` keys.
- InvokeAI (``backend/textual_inversion.py``) reads the same keys (``emb_params``, ``clip_l``/``clip_g``) from
  a file installed from the folder (its model manager's scan of a folder), naming the model after the file, and
  its prompts write ``<NAME>``.

The folder is shared with the user's own files, so a manifest, ``.tinv-export.json`` in the folder, records each
file tinv wrote: the entry and version it holds and the sha256 of its bytes. A run writes only what changed
(nothing at all when nothing did), removes the files it wrote for entries no longer in the registry, and never
touches a file it did not write or one changed since it wrote it: those are reported. Two entries whose files
would differ only in case (``Cat.safetensors``, ``cat.safetensors``) are one trigger to A1111 and one file on a
case-insensitive disk: neither is written, and both are reported.

A crash at any point leaves each file whole (``atomic``) and the manifest able to tell tinv's files from the
user's: the manifest is written before the files, recording the bytes about to be written beside the ones there.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinv_cli.atomic import remove_stray_temps, write_bytes, write_json
from tinv_cli.errors import RegistryError, TinvError
from tinv_cli.paths import check_folder, ensure_folder
from tinv_cli.registry.entry import Entry
from tinv_cli.registry.store import Registry

MANIFEST = ".tinv-export.json"
MANIFEST_SCHEMA = 1
# The writer format whose files are what the UIs read: emb_params for one text encoder, the family's keyed
# tensors (clip_l, clip_g) for several.
_WRITER_FORMAT = "kohya"
# Names in the folder a UI loads as an embedding by its stem (image embeddings take their name from the data
# inside, not the file, so a picture named like an entry is no clash).
_UI_SUFFIXES = (".safetensors", ".pt", ".bin")


@dataclass(frozen=True)
class UI:
    id: str
    label: str
    folder: str  # where the UI keeps embeddings, for help texts
    prompt: str  # how a prompt names the embedding in NAME.safetensors: "{name}" filled in


UIS: dict[str, UI] = {
    ui.id: ui
    for ui in (
        UI("a1111", "AUTOMATIC1111", "stable-diffusion-webui/embeddings", "{name}"),
        UI("forge", "Forge", "stable-diffusion-webui-forge/embeddings", "{name}"),
        UI("comfyui", "ComfyUI", "ComfyUI/models/embeddings", "embedding:{name}"),
        UI("invokeai", "InvokeAI", "a folder its model manager scans", "<{name}>"),
    )
}

# What happened to each file. The last four keep the run from succeeding (exit 1).
WRITTEN, UPDATED, UP_TO_DATE, REMOVED, LEFT = "written", "updated", "up to date", "removed", "left"
USER_FILE, NAME_CLASH, EDITED, FAILED = "user file", "name clash", "edited", "failed"
CONFLICTS = (USER_FILE, NAME_CLASH, EDITED, FAILED)


@dataclass(frozen=True)
class Outcome:
    """One file of the folder: ``file`` relative to it, the entry it is for (``NAME@N``), what happened and why."""

    file: str
    entry: str | None
    action: str
    message: str | None = None
    # Of the file's bytes, where tinv's file is there: A1111 shows its first 12 digits as the embedding's hash.
    sha256: str | None = None


@dataclass(frozen=True)
class UIExport:
    folder: Path
    ui: UI
    outcomes: tuple[Outcome, ...] = field(default_factory=tuple)

    def count(self, action: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.action == action)

    @property
    def conflicts(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.action in CONFLICTS]


def ui_named(ui_id: str) -> UI:
    ui = UIS.get(ui_id.lower())
    if ui is None:
        raise RegistryError(f"unknown UI {ui_id!r}", f"choose one of: {', '.join(UIS)}")
    return ui


def file_name(entry: Entry) -> str:
    """The file an entry goes to: its name, the trigger word, as the stem."""
    return f"{entry.name}.safetensors"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha(path: Path) -> str | None:
    try:
        return _sha256(path.read_bytes())
    except FileNotFoundError:
        return None


# The manifest


def read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """``{file: record}`` of what tinv wrote into ``folder``; empty when it has written nothing there."""
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise RegistryError(
            f"{path} cannot be read ({e}); without it tinv cannot tell its files from yours",
            f"restore it, or move it away and remove tinv's files from {folder} by hand before exporting again",
        ) from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        raise RegistryError(
            f"{path} is not a tinv export manifest", f"move it away, then export into {folder} again"
        )
    return files


def _write_manifest(folder: Path, ui: UI, files: dict[str, dict[str, Any]]) -> None:
    write_json(
        folder / MANIFEST,
        {"schema": MANIFEST_SCHEMA, "ui": ui.id, "files": dict(sorted(files.items()))},
    )


def _ours(record: dict[str, Any]) -> set[str]:
    """The bytes tinv wrote (or was about to write) under this name."""
    return {str(s) for s in [record.get("sha256"), *record.get("previous", [])] if s}


def _user_stems(folder: Path, tracked: Iterable[str]) -> dict[str, str]:
    """Lowercased stem -> relative path of every file in the folder (subfolders too) that a UI loads by its stem
    and tinv did not write."""
    skip = {name.lower() for name in tracked} | {MANIFEST.lower()}
    stems: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if name.startswith(".") or path.suffix.lower() not in _UI_SUFFIXES or rel.lower() in skip:
                continue
            stems.setdefault(path.stem.lower(), rel)
    return stems


# The export


def _render(entry: Entry) -> bytes:
    """The file's bytes, made by the registry's writer in a scratch folder: the manifest records them before
    they go into the UI's folder."""
    from tinv_cli.formats import writers
    from tinv_cli.registry.transfer import export_meta

    with tempfile.TemporaryDirectory(prefix="tinv-export-") as scratch:
        # export_meta: what `tinv export` records of the entry, the same every time, so the bytes are too.
        (path,) = writers.write(
            entry.embedding(), _WRITER_FORMAT, Path(scratch) / file_name(entry), meta=export_meta(entry)
        )
        return path.read_bytes()


def _record(entry: Entry, sha: str, previous: str | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "entry": entry.name,
        "version": entry.version,
        "entry_sha256": entry.sha256,
        "sha256": sha,
    }
    if previous and previous != sha:
        record["previous"] = [previous]
    return record


def _current(record: dict[str, Any] | None, entry: Entry) -> bool:
    return (
        record is not None
        and record.get("entry") == entry.name
        and record.get("version") == entry.version
        and record.get("entry_sha256") == entry.sha256
    )


def export_to_ui(registry: Registry, folder: Path, ui: UI, *, force: bool = False) -> UIExport:
    """Bring ``folder`` in step with the registry's current concepts for ``ui``; see the module notes.

    ``force`` rewrites every file tinv wrote whose entry is current even where the manifest says it is up to date
    (a file whose bytes are already the ones tinv would write is still left alone); a user's file or an edited one
    is never touched."""
    folder = Path(folder)
    check_folder(folder, "UI embeddings folder")
    manifest = read_manifest(folder) if folder.is_dir() else {}
    entries = registry.list()
    outcomes: list[Outcome] = []
    kept = dict(manifest)

    # Files tinv wrote for entries that are gone (removed, or renamed), first: on a case-insensitive disk the
    # file of a new entry named ``Cat`` is the old ``cat`` one's.
    claimed = {file_name(entry) for entry in entries}
    for rel, old in manifest.items():
        if rel in claimed:
            continue
        ref = f"{old.get('entry')}@{old.get('version')}"
        sha = _file_sha(folder / rel)
        del kept[rel]
        if sha in _ours(old):
            (folder / rel).unlink()
            outcomes.append(Outcome(rel, ref, REMOVED))
        elif sha is not None:  # the user's now: never touched again
            outcomes.append(Outcome(rel, ref, LEFT, "changed since tinv wrote it; left as it is"))
    if kept != manifest:
        # Written at once, so that a file removed is out of the manifest even if the writes below fail.
        _write_manifest(folder, ui, kept)

    by_file: dict[str, list[Entry]] = {}
    for entry in entries:
        by_file.setdefault(file_name(entry).lower(), []).append(entry)
    user = _user_stems(folder, kept) if folder.is_dir() else {}
    writes: dict[str, tuple[Entry, bytes]] = {}
    for group in by_file.values():
        if len(group) > 1:
            names = " and ".join(e.ref for e in group)
            for entry in group:
                outcomes.append(
                    Outcome(
                        file_name(entry), entry.ref, NAME_CLASH, f"{names} differ only in case: one trigger"
                    )
                )
            continue
        (entry,) = group
        rel = file_name(entry)
        record = kept.get(rel)
        user_file = user.get(entry.name.lower())
        sha = _file_sha(folder / rel)
        if user_file is not None:
            outcomes.append(
                Outcome(rel, entry.ref, USER_FILE, f"{user_file} is not tinv's; it has that name")
            )
        elif sha is not None and (record is None or sha not in _ours(record)):
            outcomes.append(Outcome(rel, entry.ref, EDITED, "changed since tinv wrote it; left as it is"))
        elif record is not None and sha == record.get("sha256") and _current(record, entry) and not force:
            outcomes.append(Outcome(rel, entry.ref, UP_TO_DATE, sha256=sha))
        else:
            try:
                data = _render(entry)
            except TinvError as error:
                outcomes.append(Outcome(rel, entry.ref, FAILED, error.message))
                continue
            if sha == _sha256(data):  # the very bytes are there: at most the record changes
                outcomes.append(Outcome(rel, entry.ref, UP_TO_DATE, sha256=sha))
                recorded = _record(entry, sha, None)
                if record != recorded:
                    kept[rel] = recorded
                    _write_manifest(folder, ui, kept)
            else:
                writes[rel] = (entry, data)

    if writes:
        ensure_folder(folder, "UI embeddings folder")
        remove_stray_temps(folder)  # what a killed export left: temporary names of dead processes only
        # The manifest first, naming both the bytes there and the bytes to come: a crash from here on leaves
        # every file one the next run knows for tinv's.
        pending = dict(kept)
        for rel, (entry, data) in writes.items():
            pending[rel] = _record(entry, _sha256(data), _file_sha(folder / rel))
        _write_manifest(folder, ui, pending)
        for rel, (entry, data) in writes.items():
            existed = (folder / rel).exists()
            write_bytes(folder / rel, data)
            outcomes.append(Outcome(rel, entry.ref, UPDATED if existed else WRITTEN, sha256=_sha256(data)))
            pending[rel] = _record(entry, _sha256(data), None)
        _write_manifest(folder, ui, pending)
    return UIExport(folder, ui, tuple(sorted(outcomes, key=lambda o: (o.file.lower(), o.file))))
