"""Reading every embedding file format people meet, and telling them apart.

Formats are told apart by what a file holds, not by its name, because the same suffix means different things
in different tools (a kohya ``.pt`` and an A1111 ``.pt`` differ; ``.bin`` files are sometimes safetensors).
The tensors come from ``tensors.load_tensors``, the only place tinv opens an embedding file. Every file read
out of a folder passes ``contained``'s rule first: a regular file really inside the folder, and under
``concept_images/`` a real image of bounded size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli.embedding import Embedding, token_names
from tinv_cli.errors import FormatError, NotFoundError

if TYPE_CHECKING:
    import torch
from tinv_cli import families
from tinv_cli.formats.contained import check_image, contained, contained_folder, read_text
from tinv_cli.formats.layout import (
    BIN_NAME,
    IMAGES_DIR,
    KIND_FILE,
    KINDS,
    SAFE_NAME,
    TOKEN_FILE,
    diffusers_names,
)
from tinv_cli.formats.tensors import is_safetensors, load_tensors, read_head, safetensors_metadata

_DAMAGED = "the file is damaged or not a textual inversion embedding; download or export it again"
_KNOWN_LAYOUTS = ", ".join(
    ["{token: tensor} (diffusers)", "string_to_param (A1111)", "emb_params (kohya)"]
    + [
        f"{' + '.join(keys)} ({family.label})"
        for family in families.FAMILIES
        if (keys := families.file_keys(family)) is not None
    ]
)


@dataclass(frozen=True)
class Imported:
    """An embedding read from a file or folder, with what the file said about itself."""

    embedding: Embedding
    format: str
    source: Path
    kind: str | None = None
    images: tuple[Path, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)


# Detecting a format in a dict of tensors


@dataclass(frozen=True)
class _Found:
    format: str
    token: str
    vectors: tuple[Any, ...]
    meta: dict[str, Any]


def _detect(data: dict[str, Any], path: Path) -> _Found:
    """Which format a loaded dict is, its token (file stem where the format has none) and its tensors."""
    import torch

    stem = path.stem
    keys = [str(k) for k in data]
    tensor_keys = [k for k, v in data.items() if isinstance(v, torch.Tensor)]
    if "string_to_param" in data:
        return _detect_a1111(data, path)
    keyed = families.for_file_keys(keys)
    if keyed is not None:
        # A family of several text encoders keys each encoder's vectors by name (SDXL: clip_l and clip_g).
        expected = families.file_keys(keyed) or ()
        missing = [k for k in expected if k not in data]
        if missing:
            needs = "both" if len(expected) == 2 else "all of " + ", ".join(expected)
            raise FormatError(
                f"{path} holds {_listing(keys)} but no {missing[0]}; an {keyed.label} embedding needs {needs}",
                _DAMAGED,
            )
        extra = [k for k in keys if k not in expected]
        if extra:
            raise FormatError(
                f"{path} holds {keyed.label} keys {' and '.join(expected)} plus unexpected {_listing(extra)}",
                _DAMAGED,
            )
        return _Found(keyed.id, stem, tuple(data[k] for k in expected), {})
    if keys == ["emb_params"] and tensor_keys:
        return _Found("kohya", stem, (data["emb_params"],), {})
    if len(data) == 1 and tensor_keys:
        return _Found("diffusers", str(tensor_keys[0]), (data[tensor_keys[0]],), {})
    if len(tensor_keys) == len(data) > 1:
        split = _merge_split(data, path)
        if split is not None:
            return split
        raise FormatError(
            f"{path} holds {len(data)} embeddings for different tokens ({_listing(keys)}); "
            "tinv reads one concept per file",
            "split the file into one file per token with the tool that made it",
        )
    if not data:
        raise FormatError(f"{path} holds an empty dict; it has no embedding in it", _DAMAGED)
    raise FormatError(
        f"{path} holds keys {_listing(keys)}; not an embedding format tinv knows",
        f"tinv reads {_KNOWN_LAYOUTS}",
    )


def _detect_a1111(data: dict[str, Any], path: Path) -> _Found:
    import torch

    params = data["string_to_param"]
    # The original textual-inversion code (and A1111 files made with it) stored the terms in an nn.ParameterDict.
    if isinstance(params, torch.nn.ParameterDict):
        params = dict(params.items())
    if not isinstance(params, dict):
        raise FormatError(
            f"{path}: string_to_param is a {type(params).__name__}, not a dict of terms", _DAMAGED
        )
    if len(params) != 1:
        raise FormatError(
            f"{path}: string_to_param holds {len(params)} terms; an A1111 embedding has exactly one",
            "split it into one file per term with A1111",
        )
    tensor = next(iter(params.values()))
    if not isinstance(tensor, torch.Tensor):
        raise FormatError(f"{path}: string_to_param holds a {type(tensor).__name__}, not a tensor", _DAMAGED)
    meta = {}
    for key in ("name", "step", "sd_checkpoint", "sd_checkpoint_name", "hash"):
        value = _json_scalar(data.get(key))
        if value is not None:
            meta[key] = value
    # A1111 names an embedding after its file, whatever the stored name says.
    return _Found("a1111", path.stem, (tensor,), meta)


def _merge_split(data: dict[str, Any], path: Path) -> _Found | None:
    """``{tok: [d], tok_1: [d], ...}``, one vector per key, merged into one ``[n, d]`` tensor in index order."""
    import torch

    for base in data:
        if not isinstance(base, str):
            continue
        names = token_names(base, len(data))
        if set(names) != set(data):
            continue
        rows = [data[name] for name in names]
        if any(t.ndim not in (1, 2) or (t.ndim == 2 and t.shape[0] != 1) for t in rows):
            raise FormatError(
                f"{path}: {base} is split over {len(names)} keys but they are not one vector each", _DAMAGED
            )
        widths = {t.shape[-1] for t in rows}
        if len(widths) != 1:
            raise FormatError(
                f"{path}: the vectors of {base} have different widths {sorted(widths)}", _DAMAGED
            )
        return _Found("diffusers", base, (torch.stack([t.reshape(-1) for t in rows]),), {})
    return None


def _json_scalar(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (str, int, float, bool)):
        return value
    return None


def _listing(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _embedding(token: str, vectors: Sequence[torch.Tensor], path: Path) -> Embedding:
    """Embedding's own checks, with the file named in the message."""
    try:
        return Embedding(token, tuple(vectors))
    except FormatError as e:
        if str(path) in e.message:
            raise
        raise FormatError(
            f"{path}: {e.message}", e.hint or "the file does not hold a usable embedding"
        ) from e


# Reading files and folders


def read(path: Path, token: str | None = None, *, root: Path | None = None) -> Imported:
    """Read any embedding file or concepts-library folder; ``token`` replaces the token the file gives.

    Every file read must really lie inside ``root`` (``contained``): by default the folder read, or the folder
    of the file named; a pull passes the repository's cache folder, which its snapshot's symlinks lead into.
    """
    path = Path(path)
    if path.is_dir():
        return _read_folder(path, token, root or path)
    if path.name in (SAFE_NAME, BIN_NAME) and _is_concept_folder(path.parent):
        return _read_folder(path.parent, token, root or path.parent, embeds=path)
    if root is not None:
        contained(path, root)
    found = _detect(load_tensors(path), path)
    meta = dict(found.meta)
    if is_safetensors(read_head(path)):
        metadata = safetensors_metadata(path)
        if metadata:
            meta["safetensors_metadata"] = metadata
    vectors = found.vectors
    if path.name == SAFE_NAME and found.format == "diffusers":
        vectors = vectors + _later_encoders(path.parent, root or path.parent)
    embedding = _embedding(token or found.token, vectors, path)
    return Imported(embedding, found.format, path, meta=meta)


def _is_concept_folder(folder: Path) -> bool:
    return (folder / TOKEN_FILE).is_file() or (folder / KIND_FILE).is_file() or (folder / IMAGES_DIR).is_dir()


def _read_folder(folder: Path, token: str | None, root: Path, embeds: Path | None = None) -> Imported:
    source = embeds or folder
    if embeds is None:
        # The safetensors copy is the one that cannot run code and keeps the full [n, d] shape.
        embeds = folder / SAFE_NAME if (folder / SAFE_NAME).is_file() else folder / BIN_NAME
        if not embeds.is_file():
            raise NotFoundError(
                f"{folder} has no {SAFE_NAME} or {BIN_NAME}",
                "pass a concepts-library folder or an embedding file",
            )
    contained(embeds, root)
    found = _detect(load_tensors(embeds), embeds)
    vectors = found.vectors
    fmt = "concepts-library"
    later = _later_encoders(folder, root) if embeds.name == SAFE_NAME and found.format == "diffusers" else ()
    if later:
        vectors = vectors + later
        fmt = "diffusers"
    # Formats without a token in the file are named after the file; here the file name is generic.
    default = found.token if found.format == "diffusers" else folder.name
    # The token file is read even with --token, so a link out of the folder is refused either way.
    stored = read_text(folder / TOKEN_FILE, root)
    embedding = _embedding(token or stored or default, vectors, embeds)
    kind = (read_text(folder / KIND_FILE, root) or "").lower()
    return Imported(
        embedding, fmt, source, kind if kind in KINDS else None, _images(folder, root), found.meta
    )


def _images(folder: Path, root: Path) -> tuple[Path, ...]:
    """The images of ``folder/concept_images``, each checked to be a real image inside ``root``.

    The paths keep their spelling under ``folder`` (the registry copies each under its own name; a pulled
    snapshot's real files are named by their hash). Hidden files are skipped: macOS litters folders with
    ``._photo.jpg`` resource forks.
    """
    images_dir = folder / IMAGES_DIR
    if contained_folder(images_dir, root) is None:
        return ()
    images = sorted(p for p in images_dir.iterdir() if not p.name.startswith("."))
    for image in images:
        check_image(image, contained(image, root))
    return tuple(images)


def _later_encoders(folder: Path, root: Path) -> tuple[Any, ...]:
    """The vectors of the second, third, ... text encoder from diffusers' ``learned_embeds_2.safetensors``,
    ``learned_embeds_3.safetensors``, ... beside the first encoder's file, as far as they go."""
    vectors: tuple[Any, ...] = ()
    most = max(len(family.encoders) for family in families.FAMILIES)
    for name in diffusers_names(most)[1:]:
        path = folder / name
        if not path.is_file():
            break
        contained(path, root)
        found = _detect(load_tensors(path), path)
        if found.format != "diffusers" or len(found.vectors) != 1:
            raise FormatError(
                f"{path} should hold one text encoder's {{token: tensor}}, found {found.format} data",
                _DAMAGED,
            )
        vectors += found.vectors
    return vectors


def read_entry_embedding(folder: Path) -> Embedding:
    """The embedding of a concepts-library folder from its safetensors file: the registry's fast path."""
    folder = Path(folder)
    path = folder / SAFE_NAME
    if not path.is_file():
        raise NotFoundError(
            f"{path} does not exist", "the entry is incomplete; remove it and import it again"
        )
    contained(path, folder)
    found = _detect(load_tensors(path), path)
    return _embedding(read_text(folder / TOKEN_FILE, folder) or found.token, found.vectors, path)
