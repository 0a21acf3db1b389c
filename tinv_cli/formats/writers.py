"""Writing an embedding in the format another tool loads (``tinv export``), and the concepts library layout
that is also a registry entry."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tinv_cli import families
from tinv_cli.atomic import write_text, write_with
from tinv_cli.embedding import Embedding
from tinv_cli.errors import DataError, FormatError, ModelError, NotFoundError
from tinv_cli.formats.layout import (
    BIN_NAME,
    DIFFUSERS_DIR,
    IMAGES_DIR,
    KIND_FILE,
    KINDS,
    README_FILE,
    SAFE_NAME,
    TOKEN_FILE,
    diffusers_names,
)
from tinv_cli.formats.tensors import PICKLE_SUFFIXES, save_tensors

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

    ``out`` is the file to write, or a folder for concepts-library and for a diffusers export of several text
    encoders (SDXL: one file per encoder).
    """
    out = Path(out)
    meta = meta or {}
    if fmt not in EXPORT_FORMATS:
        raise FormatError(
            f"unknown export format {fmt!r}",
            f"choose one of {', '.join(EXPORT_FORMATS)} (SDXL embeddings are written by each of them)",
        )
    _keyed_tensors(embedding)  # refuses an embedding no family tinv knows has as many text encoders
    if fmt == "concepts-library":
        return write_concepts_library(embedding, out, kind=kind, images=images, readme=readme)
    if fmt == "diffusers":
        return _write_diffusers(embedding, out)
    if fmt == "a1111":
        return [_write_a1111(embedding, out, meta)]
    return [_write_kohya(embedding, out)]


def _write_diffusers(embedding: Embedding, out: Path) -> list[Path]:
    if len(embedding.vectors) == 1:
        return [save_tensors(out, {embedding.token: embedding.vectors[0]})]
    if out.suffix.lower() in PICKLE_SUFFIXES | {".safetensors"}:
        raise FormatError(
            f"{out}: a diffusers export for {len(embedding.vectors)} text encoders is a folder with one file per "
            "text encoder",
            f"pass a folder path such as {out.with_suffix('')}",
        )
    out.mkdir(parents=True, exist_ok=True)
    names = diffusers_names(len(embedding.vectors))
    return [
        save_tensors(out / name, {embedding.token: vectors})
        for name, vectors in zip(names, embedding.vectors, strict=True)
    ]


def _write_a1111(embedding: Embedding, out: Path, meta: dict[str, Any]) -> Path:
    keyed = _keyed_tensors(embedding)
    if keyed is not None:
        return save_tensors(out, keyed)
    if out.suffix.lower() not in PICKLE_SUFFIXES:
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
    return save_tensors(out, data, pickle=True)


def _keyed_tensors(embedding: Embedding) -> dict[str, Any] | None:
    """``{key: vectors}`` for a family whose files key each text encoder's vectors (SDXL: ``clip_l``, ``clip_g``),
    which AUTOMATIC1111, ComfyUI and kohya read as they are; None for a one-encoder family."""
    try:
        family = families.for_widths(embedding.widths)
    except ModelError as e:
        raise FormatError(f"{embedding.token}: {e.message}", e.hint) from None
    keys = families.file_keys(family)
    return None if keys is None else dict(zip(keys, embedding.vectors, strict=True))


def _write_kohya(embedding: Embedding, out: Path) -> Path:
    keyed = _keyed_tensors(embedding)
    if keyed is not None:
        return save_tensors(out, keyed)
    return save_tensors(out, {"emb_params": embedding.vectors[0]})


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
    keyed = _keyed_tensors(embedding)
    if keyed is not None:
        written.append(save_tensors(folder / SAFE_NAME, keyed))
        written += _write_diffusers(embedding, folder / DIFFUSERS_DIR)
    else:
        vectors = embedding.vectors[0]
        written.append(save_tensors(folder / SAFE_NAME, {embedding.token: vectors}))
        # The concepts library's own loaders (and its Colab notebooks) expect a 1-D tensor for one vector.
        stored = vectors[0] if embedding.num_vectors == 1 else vectors
        written.append(save_tensors(folder / BIN_NAME, {embedding.token: stored}, pickle=True))
    written.append(write_text(folder / TOKEN_FILE, embedding.token))
    written.append(write_text(folder / KIND_FILE, kind))
    if sources:
        (folder / IMAGES_DIR).mkdir(exist_ok=True)
    for image in sources:
        target = folder / IMAGES_DIR / image.name
        written.append(write_with(target, functools.partial(shutil.copyfile, image)))
    if readme is not None:
        written.append(write_text(folder / README_FILE, readme))
    return written
