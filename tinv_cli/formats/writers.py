"""Writing an embedding in the format another tool loads (``tinv export``), and the concepts library layout
that is also a registry entry.

Every safetensors export carries kohya's ``modelspec.*`` metadata (``modelspec.py``), and an export is the same
bytes every time for the same entry: A1111 records the hash of the file it loaded in each image's parameters
(``a1111_hash``), and tinv's images record the same one.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tinv_cli import families
from tinv_cli.atomic import write_text, write_with
from tinv_cli.embedding import Embedding
from tinv_cli.errors import DataError, FormatError, ModelError, NotFoundError
from tinv_cli.formats import foreign, modelspec
from tinv_cli.formats.a1111 import a1111_data
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
from tinv_cli.formats.tensors import PICKLE_SUFFIXES, pickle_bytes, safetensors_bytes, save_tensors

EXPORT_FORMATS: tuple[str, ...] = ("diffusers", "a1111", "a1111-png", "kohya", "concepts-library")


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
    encoders (SDXL: one file per encoder). ``meta``: ``title``, ``created`` (the entry's creation time, for
    the ``modelspec.date``), ``negative``, ``step``, ``sd_checkpoint_name``; ``images[0]`` is the preview of an
    ``a1111-png``.
    """
    out = Path(out)
    meta = meta or {}
    if fmt not in EXPORT_FORMATS:
        raise FormatError(
            f"unknown export format {fmt!r}",
            f"choose one of {', '.join(EXPORT_FORMATS)} (SDXL embeddings are written by each of them)",
        )
    _keyed_tensors(embedding)  # refuses an embedding no family tinv knows has as many text encoders
    spec = modelspec.metadata(embedding, meta)
    if fmt == "concepts-library":
        return write_concepts_library(embedding, out, kind=kind, images=images, readme=readme, metadata=spec)
    if fmt == "diffusers":
        return _write_diffusers(embedding, out, spec)
    if fmt == "a1111":
        return [write_with(out, lambda tmp: tmp.write_bytes(a1111_bytes(embedding, out, meta)))]
    if fmt == "a1111-png":
        from tinv_cli.formats import a1111_png

        return [a1111_png.write(embedding, out, meta, preview=images[0] if images else None)]
    return [_write_kohya(embedding, out, spec)]


def _write_diffusers(embedding: Embedding, out: Path, spec: dict[str, str] | None = None) -> list[Path]:
    if len(embedding.vectors) == 1:
        return [save_tensors(out, {embedding.token: embedding.vectors[0]}, metadata=spec)]
    if out.suffix.lower() in PICKLE_SUFFIXES | {".safetensors"}:
        raise FormatError(
            f"{out}: a diffusers export for {len(embedding.vectors)} text encoders is a folder with one file per "
            "text encoder",
            f"pass a folder path such as {out.with_suffix('')}",
        )
    out.mkdir(parents=True, exist_ok=True)
    names = diffusers_names(len(embedding.vectors))
    return [
        save_tensors(out / name, {embedding.token: vectors}, metadata=spec)
        for name, vectors in zip(names, embedding.vectors, strict=True)
    ]


def a1111_suffix(embedding: Embedding) -> str:
    """The suffix of an a1111 export by default: ``.safetensors``, which A1111, Forge, ComfyUI and InvokeAI all
    read and which cannot run code. ``-o NAME.pt`` gives the pickle A1111's own trainer writes."""
    _keyed_tensors(embedding)  # refuses an embedding no family tinv knows
    return ".safetensors"


def a1111_bytes(embedding: Embedding, out: Path, meta: dict[str, Any]) -> bytes:
    """The bytes of an a1111 export to ``out``: the same for the same embedding, name and meta.

    A safetensors file holds one tensor under ``emb_params`` (the key A1111 itself uses for safetensors), or
    each encoder's vectors under its key (SDXL's ``clip_l``/``clip_g``), so for a one-encoder family it is
    byte for byte the kohya export and what ``tinv export --all --for a1111`` puts in a UI's folder: one file,
    one hash. A ``.pt`` is A1111's pickle (``string_to_param``), one encoder only.
    """
    keyed = _keyed_tensors(embedding)
    spec = modelspec.metadata(embedding, meta)
    if out.suffix.lower() not in PICKLE_SUFFIXES:
        return safetensors_bytes(keyed if keyed is not None else {"emb_params": embedding.vectors[0]}, spec)
    if keyed is not None:
        raise FormatError(
            f"{out}: A1111 reads {len(embedding.vectors)}-encoder embeddings only as safetensors",
            f"use {out.with_suffix('.safetensors')}",
        )
    # A1111 stores the file's stem as the name, and names the embedding after its file.
    return pickle_bytes(a1111_data(embedding, out.stem, meta))


def a1111_hash(embedding: Embedding, meta: dict[str, Any], name: str | None = None) -> str:
    """The short hash A1111 shows and writes in ``TI hashes`` for the file it would load: the first 12 hex digits
    of the sha256 of tinv's a1111 export ``NAME.safetensors`` (the file the UI export writes too), made in memory.

    ``name`` is the file's stem, the word A1111 prompts use (default: ``meta["name"]``, else the token).
    """
    stem = name or str(meta.get("name") or embedding.token)
    data = a1111_bytes(embedding, Path(stem + a1111_suffix(embedding)), meta)
    return hashlib.sha256(data).hexdigest()[:12]


def _keyed_tensors(embedding: Embedding) -> dict[str, Any] | None:
    """``{key: vectors}`` for a family whose files key each text encoder's vectors (SDXL: ``clip_l``, ``clip_g``),
    which AUTOMATIC1111, ComfyUI and kohya read as they are, or for a layout tinv keeps as it is (Flux); None
    for a one-encoder family."""
    layout = foreign.for_widths(embedding.widths)
    if layout is not None:
        return dict(zip(layout.keys, embedding.vectors, strict=True))
    try:
        family = families.for_widths(embedding.widths)
    except ModelError as e:
        raise FormatError(f"{embedding.token}: {e.message}", e.hint) from None
    keys = families.file_keys(family)
    return None if keys is None else dict(zip(keys, embedding.vectors, strict=True))


def _write_kohya(embedding: Embedding, out: Path, spec: dict[str, str]) -> Path:
    keyed = _keyed_tensors(embedding)
    if keyed is not None:
        return save_tensors(out, keyed, metadata=spec)
    return save_tensors(out, {"emb_params": embedding.vectors[0]}, metadata=spec)


def write_concepts_library(
    embedding: Embedding,
    folder: Path,
    *,
    kind: str = "object",
    images: Sequence[Path] = (),
    readme: str | None = None,
    metadata: dict[str, str] | None = None,
) -> list[Path]:
    """The concepts library layout, which is also a registry entry; the paths written, in order. ``metadata``
    goes into the header of its safetensors files (an export's ``modelspec.*``)."""
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
        written.append(save_tensors(folder / SAFE_NAME, keyed, metadata=metadata))
        written += _write_diffusers(embedding, folder / DIFFUSERS_DIR, metadata)
    else:
        vectors = embedding.vectors[0]
        written.append(save_tensors(folder / SAFE_NAME, {embedding.token: vectors}, metadata=metadata))
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
