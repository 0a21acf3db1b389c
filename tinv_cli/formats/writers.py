"""Writing an embedding in the format another tool loads (``tinv export``), and the concepts library layout
that is also a registry entry."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tinv_cli.atomic import write_text, write_with
from tinv_cli.embedding import Embedding
from tinv_cli.errors import DataError, FormatError, NotFoundError
from tinv_cli.formats.layout import (
    BIN_NAME,
    DIFFUSERS_DIR,
    IMAGES_DIR,
    KIND_FILE,
    KINDS,
    README_FILE,
    SAFE_NAME,
    SECOND_NAME,
    TOKEN_FILE,
)
from tinv_cli.formats.tensors import _PICKLE_SUFFIXES, _save

EXPORT_FORMATS: tuple[str, ...] = ("diffusers", "a1111", "kohya", "concepts-library")
# What A1111 has always written for string_to_token; nothing reads the number, but loaders expect the key.
A1111_TOKEN_ID = 265


# Writing


def write(
    embedding: Embedding,
    fmt: str,
    out: Path,
    *,
    kind: str = "object",
    images: Sequence[Path] = (),
    readme: str | None = None,
    meta: dict[str, Any] | None = None,
) -> list[Path]:
    """Write ``embedding`` as ``fmt`` files that the other tool loads; the paths written, in order.

    ``out`` is the file to write, or a folder for concepts-library and for diffusers SDXL (one file per encoder).
    """
    out = Path(out)
    meta = meta or {}
    if fmt not in EXPORT_FORMATS:
        raise FormatError(
            f"unknown export format {fmt!r}",
            f"choose one of {', '.join(EXPORT_FORMATS)} (SDXL embeddings are written by each of them)",
        )
    if len(embedding.vectors) > 2:
        raise FormatError(
            f"{embedding.token} has {len(embedding.vectors)} text encoders; {fmt} files hold one or two (SDXL)"
        )
    if fmt == "concepts-library":
        return write_concepts_library(embedding, out, kind=kind, images=images, readme=readme)
    if fmt == "diffusers":
        return _write_diffusers(embedding, out)
    if fmt == "a1111":
        return [_write_a1111(embedding, out, meta)]
    return [_write_kohya(embedding, out)]


def _write_diffusers(embedding: Embedding, out: Path) -> list[Path]:
    if len(embedding.vectors) == 1:
        return [_save(out, {embedding.token: embedding.vectors[0]})]
    if out.suffix.lower() in _PICKLE_SUFFIXES | {".safetensors"}:
        raise FormatError(
            f"{out}: a diffusers SDXL export is a folder with one file per text encoder",
            f"pass a folder path such as {out.with_suffix('')}",
        )
    out.mkdir(parents=True, exist_ok=True)
    first, second = embedding.vectors
    return [
        _save(out / SAFE_NAME, {embedding.token: first}),
        _save(out / SECOND_NAME, {embedding.token: second}),
    ]


def _write_a1111(embedding: Embedding, out: Path, meta: dict[str, Any]) -> Path:
    if len(embedding.vectors) == 2:
        return _save(out, _sdxl_dict(embedding))
    if out.suffix.lower() not in _PICKLE_SUFFIXES:
        raise FormatError(
            f"{out}: A1111 embeddings for one text encoder are .pt files", f"use {out.with_suffix('.pt')}"
        )
    data = {
        "string_to_token": {"*": A1111_TOKEN_ID},
        "string_to_param": {"*": embedding.vectors[0]},
        "name": out.stem,
        "step": meta.get("step"),
        "sd_checkpoint": None,
        "sd_checkpoint_name": meta.get("sd_checkpoint_name"),
    }
    return _save(out, data, pickle=True)


def _sdxl_dict(embedding: Embedding) -> dict[str, Any]:
    clip_l, clip_g = embedding.vectors
    return {"clip_l": clip_l, "clip_g": clip_g}


def _write_kohya(embedding: Embedding, out: Path) -> Path:
    if len(embedding.vectors) == 2:
        return _save(out, _sdxl_dict(embedding))
    return _save(out, {"emb_params": embedding.vectors[0]})


def write_concepts_library(
    embedding: Embedding,
    folder: Path,
    *,
    kind: str = "object",
    images: Sequence[Path] = (),
    readme: str | None = None,
) -> list[Path]:
    """The concepts library layout, which is also a registry entry; the paths written, in order."""
    folder = Path(folder)
    if kind not in KINDS:
        raise FormatError(f"unknown kind of concept {kind!r}", f"use one of {', '.join(KINDS)}")
    sources = [Path(p) for p in images]
    for image in sources:
        if not image.is_file():
            raise NotFoundError(f"image {image} does not exist", "check the concept's image folder")
    names = [p.name for p in sources]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise DataError(
            f"two images share the name {clashes[0]}", f"rename one; {IMAGES_DIR} keeps file names"
        )
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if len(embedding.vectors) == 2:
        written.append(_save(folder / SAFE_NAME, _sdxl_dict(embedding)))
        written += _write_diffusers(embedding, folder / DIFFUSERS_DIR)
    else:
        vectors = embedding.vectors[0]
        written.append(_save(folder / SAFE_NAME, {embedding.token: vectors}))
        # The concepts library's own loaders (and its Colab notebooks) expect a 1-D tensor for one vector.
        stored = vectors[0] if embedding.num_vectors == 1 else vectors
        written.append(_save(folder / BIN_NAME, {embedding.token: stored}, pickle=True))
    written.append(write_text(folder / TOKEN_FILE, embedding.token))
    written.append(write_text(folder / KIND_FILE, kind))
    if sources:
        (folder / IMAGES_DIR).mkdir(exist_ok=True)
    for image in sources:
        target = folder / IMAGES_DIR / image.name
        written.append(write_with(target, lambda tmp, src=image: shutil.copyfile(src, tmp)))
    if readme is not None:
        written.append(write_text(folder / README_FILE, readme))
    return written
