"""Importing a whole folder of embeddings: a UI's ``embeddings/`` folder (AUTOMATIC1111, Forge, ComfyUI,
InvokeAI), hundreds of files, subfolders allowed.

Each file is read and added on its own, through the registry's atomic add, so a bad file costs only itself: it
is reported (its path and the one-line reason) and the walk goes on. Files that are not embeddings by name (notes,
configs, A1111's ``NAME.preview.png`` previews, hidden files) are skipped without being opened, and counted. A
concepts-library folder met on the way, and the diffusers pair of an SDXL concept (``learned_embeds.safetensors``
+ ``learned_embeds_2.safetensors``), are one concept each, not several files.

Importing the same folder again adds nothing: a file whose embedding (token and vectors, bit for bit) is already a
version of the entry it names is counted as unchanged, since the registry's add would otherwise make a new version
of identical vectors.

Entry names come from the file stem, because that is the word a UI's prompts use (A1111 and ComfyUI trigger
``bad-hands.pt`` with ``bad-hands``); a file named after the concepts library layout (``learned_embeds.*``) and
a file bundling several embeddings name their entries after the tokens inside.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tinv_cli.errors import RegistryError, TinvError
from tinv_cli.formats.layout import (
    BIN_NAME,
    DIFFUSERS_DIR,
    IMAGES_DIR,
    KIND_FILE,
    KINDS,
    README_FILE,
    SAFE_NAME,
    TOKEN_FILE,
)
from tinv_cli.names import name_from_token
from tinv_cli.registry.entry import Entry
from tinv_cli.registry.store import Registry
from tinv_cli.registry.transfer import add_imported

if TYPE_CHECKING:
    from tinv_cli.formats.detect import Imported

# What the UIs load from their embeddings folder (A1111's load_from_file: .pt, .bin, .safetensors, and image
# embeddings); anything else in the folder is not an embedding by name.
EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors", ".png", ".webp")
IMAGE_SUFFIXES = (".png", ".webp")
# A1111 shows NAME.preview.png beside NAME.pt as the embedding's card picture and never reads it as an embedding.
PREVIEW_SUFFIX = ".preview"
# The concepts library layout's embedding files: learned_embeds.safetensors, learned_embeds.bin and diffusers'
# learned_embeds_2.safetensors ... for the later text encoders. One concept, whatever subset is present.
_LAYOUT_STEM = "learned_embeds"

IMPORTED, UNCHANGED, FAILED, SKIPPED = "imported", "unchanged", "failed", "skipped"


@dataclass(frozen=True)
class FileResult:
    """What became of one file (or one concept folder) of the folder imported.

    ``files`` are every file the import read for it (an SDXL pair is two); ``entry`` is the new version
    (imported) or the version that already holds the same embedding (unchanged); ``message`` the reason a file
    failed; ``shared_with`` the other entries whose token the new entry repeats."""

    path: Path
    status: str
    files: tuple[Path, ...] = ()
    entry: Entry | None = None
    format: str | None = None
    message: str | None = None
    shared_with: tuple[str, ...] = ()


@dataclass(frozen=True)
class FolderImport:
    folder: Path
    results: tuple[FileResult, ...] = field(default_factory=tuple)

    def count(self, status: str) -> int:
        return sum(1 for result in self.results if result.status == status)

    @property
    def failed(self) -> bool:
        return any(result.status == FAILED for result in self.results)


def is_embedding_name(path: Path) -> bool:
    """Whether a UI would try ``path`` as an embedding: its suffix, not hidden, not an A1111 preview image."""
    name = path.name
    suffix = path.suffix.lower()
    if name.startswith(".") or suffix not in EMBEDDING_SUFFIXES:
        return False
    return not (suffix in IMAGE_SUFFIXES and Path(path.stem).suffix.lower() == PREVIEW_SUFFIX)


def is_one_concept(folder: Path) -> bool:
    """Whether ``tinv import FOLDER`` reads ``folder`` as one concept, as it always has: a concepts-library
    folder, a registry entry's copy or a diffusers pair, whose every embedding file is a learned_embeds.* one and
    whose only subfolders are the layout's own. Any other folder is a folder of embeddings."""
    try:
        children = list(os.scandir(folder))
    except OSError:
        return False
    files = sorted(Path(c.path) for c in children if c.is_file())
    group = _layout_group(files)
    if not group:
        return False
    others = [p for p in files if p not in group and is_embedding_name(p)]
    folders = [c.name for c in children if c.is_dir() and not c.name.startswith(".")]
    return not others and all(name in (IMAGES_DIR, DIFFUSERS_DIR) for name in folders)


def _layout_group(files: Sequence[Path]) -> list[Path]:
    """The concepts-library embedding files among ``files``: learned_embeds.safetensors / .bin and the later
    encoders' learned_embeds_N.safetensors."""
    group = []
    for path in files:
        stem, suffix = path.stem, path.suffix.lower()
        later = stem.startswith(_LAYOUT_STEM + "_") and stem[len(_LAYOUT_STEM) + 1 :].isdigit()
        if path.name in (SAFE_NAME, BIN_NAME) or (later and suffix == ".safetensors"):
            group.append(path)
    return group


def import_folder(
    registry: Registry,
    folder: Path,
    *,
    kind: str | None = None,
    on_result: Callable[[FileResult], None] | None = None,
) -> FolderImport:
    """Import every embedding under ``folder`` (recursively), each its own atomic add; see the module notes.

    ``kind`` is the kind of every concept whose files do not say (default object). ``on_result`` hears of each
    file as it is done, for progress."""
    folder = Path(folder)
    if kind is not None and kind not in KINDS:
        raise RegistryError(
            f"concept kind {kind!r} is not one of {', '.join(KINDS)}", f"pass --kind {' or '.join(KINDS)}"
        )
    results: list[FileResult] = []
    for result in _walk(registry, folder, kind):
        results.append(result)
        if on_result is not None:
            on_result(result)
    return FolderImport(folder, tuple(_with_token_clashes(registry, results)))


def _walk(registry: Registry, root: Path, kind: str | None) -> Iterator[FileResult]:
    # Links to folders are not followed: every file read must lie inside the folder imported (formats.contained),
    # and a folder link is how a walk leaves it.
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        # Hidden folders (.git, .cache, macOS's .Trashes) hold no embeddings a UI loads.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files = sorted(here / name for name in filenames)
        done: set[Path] = set()
        group = _layout_group(files)
        if group:
            concept = (here / TOKEN_FILE).is_file()
            if concept and IMAGES_DIR in dirnames:
                dirnames.remove(IMAGES_DIR)  # the concept's pictures, copied with it
            first = here / SAFE_NAME if here / SAFE_NAME in group else group[0]
            unit = here if concept else first
            consumed = _group_files(here, group, concept)
            done.update(consumed)
            for result in _import_unit(registry, root, unit, kind, consumed=consumed):
                done.update(result.files)
                yield result
        for path in files:
            if path in done:
                continue
            if not is_embedding_name(path):
                yield FileResult(path, SKIPPED, (path,))
                continue
            for result in _import_unit(registry, root, path, kind, consumed=(path,)):
                done.update(result.files)
                yield result


def _group_files(folder: Path, group: Sequence[Path], concept: bool) -> tuple[Path, ...]:
    """The files a concepts-library read consumes: its embedding files and, for a concept folder, its text
    files and model card."""
    extra = [folder / name for name in (TOKEN_FILE, KIND_FILE, README_FILE)] if concept else []
    return tuple(group) + tuple(path for path in extra if path.is_file())


def _read(unit: Path, root: Path) -> list[Imported]:
    """Every embedding ``unit`` holds: one, or one per embedding a LoRA file bundles."""
    from tinv_cli.formats import detect

    return detect.read_all(unit, root=root)


def _entry_name(unit: Path, imported: Imported, single: bool) -> str:
    """The UI's trigger word: the file stem; the token inside for a concepts-library file, a bundle of several,
    and an image embedding (A1111 names one by the name its data holds)."""
    by_stem = unit.is_file() and unit.suffix.lower() not in IMAGE_SUFFIXES
    if single and by_stem and not unit.stem.startswith(_LAYOUT_STEM):
        return name_from_token(unit.stem)
    return name_from_token(imported.embedding.token)


def _import_unit(
    registry: Registry, root: Path, unit: Path, kind: str | None, *, consumed: Sequence[Path]
) -> Iterator[FileResult]:
    try:
        all_imported = _read(unit, root)
    except TinvError as error:
        yield FileResult(unit, FAILED, tuple(consumed), message=error.message)
        return
    files = tuple(dict.fromkeys((*consumed, *(f for each in all_imported for f in each.files))))
    for imported in all_imported:
        name = _entry_name(unit, imported, len(all_imported) == 1)
        try:
            same = _version_holding(registry, name, imported)
            if same is not None:
                yield FileResult(unit, UNCHANGED, files, same, imported.format)
                continue
            entry = add_imported(registry, unit, imported, name, kind)
        except TinvError as error:
            yield FileResult(unit, FAILED, files, format=imported.format, message=error.message)
            continue
        yield FileResult(unit, IMPORTED, files, entry, imported.format)


def _version_holding(registry: Registry, name: str, imported: Imported) -> Entry | None:
    """The version of ``name`` whose embedding is ``imported``'s, bit for bit, if any.

    Every version, not just the current one: two files of one folder with the same stem would otherwise take turns
    being new on every run."""
    for entry in reversed(registry.versions(name)):
        if entry.num_vectors != imported.embedding.num_vectors or entry.widths != imported.embedding.widths:
            continue
        try:
            if entry.embedding().equal(imported.embedding):
                return entry
        except TinvError:
            continue  # a damaged version holds nothing to compare with; the new one is added
    return None


def _with_token_clashes(registry: Registry, results: list[FileResult]) -> Iterator[FileResult]:
    """Each new entry with the other current entries whose token it repeats (a prompt's token names one only).
    One listing for the whole folder, not one per file."""
    by_token: dict[str, list[str]] = {}
    for entry in registry.list():
        by_token.setdefault(entry.token, []).append(entry.name)
    for result in results:
        if result.status != IMPORTED or result.entry is None:
            yield result
            continue
        others = tuple(n for n in by_token.get(result.entry.token, []) if n != result.entry.name)
        yield FileResult(
            result.path,
            result.status,
            result.files,
            result.entry,
            result.format,
            result.message,
            others,
        )


def reason(result: FileResult) -> str:
    """The failure message without the file's path at its start (the report names the file first)."""
    message = result.message or ""
    for spelled in (str(result.path), str(result.path.resolve())):
        if message.startswith(spelled):
            return message[len(spelled) :].lstrip(" :") or message
    return message
