"""Bringing embedding files into the registry and writing entries out in other tools' formats."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinv_cli.errors import FormatError, NotFoundError, RegistryError
from tinv_cli.formats.layout import IMAGES_DIR, README_FILE
from tinv_cli.names import name_from_token
from tinv_cli.paths import check_folder
from tinv_cli.registry.entry import Entry
from tinv_cli.registry.store import Registry

# Where each export format goes when no -o is given, relative to the current folder.
_DEFAULT_SUFFIX = {
    "diffusers": ".safetensors",
    "a1111": ".safetensors",
    "a1111-png": ".png",
    "kohya": ".safetensors",
    "concepts-library": "",
}


@dataclass(frozen=True)
class ImportResult:
    """The new entry; ``shared_with``: the other entries whose token it repeats, and ``resolves_to``: the entry
    a prompt's token names now (the new one or another), so the command can say so."""

    entry: Entry
    format: str
    shared_with: tuple[Entry, ...] = ()
    resolves_to: Entry | None = None
    # What the file's modelspec.architecture says it was made for ("stable-diffusion-xl-v1-base/...").
    architecture: str | None = None
    # The other entries the same file held (a LoRA bundling several embeddings), imported with this one.
    also: tuple[ImportResult, ...] = ()


def import_file(
    registry: Registry,
    path: Path,
    *,
    name: str | None = None,
    token: str | None = None,
    kind: str | None = None,
) -> ImportResult:
    """Detect the format of ``path``, validate it and add it to the registry as a new entry (or version).

    A file that holds several embeddings (a LoRA bundling them) adds one entry each: the first is returned,
    the others are in its ``also``; ``import_all`` returns them as a list.
    """
    first, *others = import_all(registry, path, name=name, token=token, kind=kind)
    return ImportResult(
        first.entry, first.format, first.shared_with, first.resolves_to, first.architecture, tuple(others)
    )


def import_all(
    registry: Registry,
    path: Path,
    *,
    name: str | None = None,
    token: str | None = None,
    kind: str | None = None,
) -> list[ImportResult]:
    """Every embedding ``path`` holds, each added as an entry (``detect.read_all``); one result per entry.

    ``name`` is used where the file holds one embedding (several are named from their tokens).
    """
    from tinv_cli.formats import detect

    if not path.exists():
        raise NotFoundError(f"{path} does not exist", "check the path")
    found = detect.read_all(path, token=token)
    if name is not None and len(found) > 1:
        raise RegistryError(
            f"{path} holds {len(found)} embeddings; --name names one",
            "import it without --name: each entry is named after its token",
        )
    return [_add(registry, path, imported, name, kind) for imported in found]


def add_imported(registry: Registry, path: Path, imported: Any, name: str, kind: str | None) -> Entry:
    """The registry entry an import makes of what was read from ``path``: one rule for a file and for each file
    of a folder (``folder_import``), without the token-clash lookup, which lists the whole registry."""
    # A file that says it is a negative embedding (kohya's modelspec.is_negative_embedding) is recorded as one.
    spec = (imported.meta or {}).get("modelspec") or {}
    negative = str(spec.get("is_negative_embedding", "")).lower() == "true"
    return registry.add(
        name,
        imported.embedding,
        kind=kind or imported.kind or ("negative" if negative else "object"),
        source={
            "type": "imported",
            "format": imported.format,
            "path": str(path.resolve()),
            "meta": imported.meta,
        },
        images=imported.images,
    )


def _add(registry: Registry, path: Path, imported: Any, name: str | None, kind: str | None) -> ImportResult:
    entry = add_imported(registry, path, imported, name or name_from_token(imported.embedding.token), kind)
    from tinv_cli.sampling.prompt import token_holders

    # A token held by another entry is not an error (two trainings of one concept may share it), but a prompt's
    # token then names one of them only: the result says which, through the prompt's own resolution.
    holders = token_holders(registry, entry.token)
    shared = tuple(other for other in holders if other.name != entry.name)
    return ImportResult(entry, imported.format, shared, holders[0] if shared else None, imported.architecture)


def default_export_path(entry: Entry, fmt: str) -> Path:
    suffix = _DEFAULT_SUFFIX[fmt]
    if fmt == "diffusers" and len(entry.widths) > 1:
        suffix = ""  # one file per text encoder (learned_embeds.safetensors, learned_embeds_2...) in a folder
    return Path.cwd() / f"{entry.name}{suffix}"


def export_entry(entry: Entry, fmt: str, out: Path | None = None, *, force: bool = False) -> list[Path]:
    """Write ``entry`` in format ``fmt``; refuses to replace an existing file or folder unless ``force``."""
    from tinv_cli.formats import writers

    if fmt not in writers.EXPORT_FORMATS:
        raise FormatError(
            f"unknown export format {fmt!r}", f"choose one of: {', '.join(writers.EXPORT_FORMATS)}"
        )
    target = out or default_export_path(entry, fmt)
    if target.exists() and not force and not (target.is_dir() and not any(target.iterdir())):
        raise RegistryError(f"{target} already exists", "pass --force to replace it, or -o another path")
    # Where the files go is checked before anything is written (a traceback half-way was the alternative).
    if fmt == "concepts-library" or (fmt == "diffusers" and len(entry.widths) > 1):
        check_folder(target, "export folder")
    else:
        if target.is_dir():
            raise RegistryError(
                f"{target} is a folder; a {fmt} export is one file",
                f"pass -o with a file name, e.g. -o {default_export_path(entry, fmt).name}",
            )
        check_folder(target.parent, "folder for the export")
    if fmt == "a1111-png" and len(entry.widths) > 1:
        raise FormatError(
            f"{entry.ref} has {len(entry.widths)} text encoders' vectors; A1111 image embeddings hold one "
            "(A1111 never wrote them for SDXL)",
            f"export it with --format a1111 ({entry.name}.safetensors, which A1111 loads)",
        )
    readme = entry.path / README_FILE
    return writers.write(
        entry.embedding(),
        fmt,
        target,
        kind=entry.kind,
        images=sorted((entry.path / IMAGES_DIR).glob("*")),
        readme=readme.read_text(encoding="utf-8") if readme.exists() else None,
        meta=export_meta(entry),
    )


def export_meta(entry: Entry) -> dict[str, Any]:
    """What an export records of the entry besides its vectors (A1111's step and checkpoint, modelspec's title,
    date and flags): read from tinv.json, so two exports of one entry are the same bytes."""
    info = entry.info
    training = info.get("training") or {}
    return {
        "name": entry.name,
        "title": entry.name,
        "created": entry.created,
        "negative": entry.kind == "negative" or bool(info.get("negative")),
        "step": training.get("steps"),
        "sd_checkpoint_name": info.get("base_model"),
    }


def a1111_hash(entry: Entry) -> str:
    """The short hash A1111 gives this entry's embedding (``TI hashes`` in an image's parameters, and what its
    UI shows): of the bytes of ``tinv export NAME --format a1111``, the file A1111 would load as NAME."""
    from tinv_cli.formats import writers

    return writers.a1111_hash(entry.embedding(), export_meta(entry), name=entry.name)
