"""Every embedding file format people meet: detect, read and write them.

Formats are told apart by what a file holds, not by its name, because the same suffix means different things
in different tools (a kohya ``.pt`` and an A1111 ``.pt`` differ; ``.bin`` files are sometimes safetensors).
``load_tensors`` is the only place tinv opens an embedding file, and it unpickles only with
``torch.load(weights_only=True)``: a file that would need anything beyond tensors and containers is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli.embedding import Embedding, token_names
from tinv_cli.errors import DataError, FormatError, NotFoundError

if TYPE_CHECKING:
    import torch

FORMAT_NAMES: tuple[str, ...] = ("diffusers", "concepts-library", "a1111", "kohya", "sdxl")
EXPORT_FORMATS: tuple[str, ...] = ("diffusers", "a1111", "kohya", "concepts-library")
KINDS: tuple[str, ...] = ("object", "style")

SAFE_NAME = "learned_embeds.safetensors"
BIN_NAME = "learned_embeds.bin"
# diffusers' SDXL convention: the second text encoder's vectors in a file of their own, loaded by a second
# ``load_textual_inversion(..., text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)`` call.
SECOND_NAME = "learned_embeds_2.safetensors"
# Where a concepts-library folder (a registry entry, a pushed repository) keeps that pair for an SDXL concept,
# beside the {clip_l, clip_g} file the other tools read: ``load_textual_inversion(repo, subfolder="diffusers")``.
DIFFUSERS_DIR = "diffusers"
TOKEN_FILE = "token_identifier.txt"
KIND_FILE = "type_of_concept.txt"
IMAGES_DIR = "concept_images"

SDXL_KEYS = ("clip_l", "clip_g")
# What A1111 has always written for string_to_token; nothing reads the number, but loaders expect the key.
A1111_TOKEN_ID = 265
_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt"}
_DAMAGED = "the file is damaged or not a textual inversion embedding; download or export it again"
_KNOWN_LAYOUTS = (
    "{token: tensor} (diffusers), string_to_param (A1111), emb_params (kohya), clip_l + clip_g (SDXL)"
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


# Reading raw tensors


def load_tensors(path: Path) -> dict[str, Any]:
    """The dict a safetensors file or a weights-only pickle holds; FormatError for anything else."""
    head = _read_head(path)
    if _is_safetensors(head):
        return _load_safetensors(path)
    if path.suffix.lower() == ".safetensors" and not _is_pickle(head):
        raise FormatError(
            f"{path} is not a valid safetensors file (it does not start with a safetensors header)",
            "the file is damaged or mislabelled; download or export it again",
        )
    if not _is_pickle(head):
        raise FormatError(
            f"{path} is neither a safetensors file nor a PyTorch pickle",
            "pass an embedding file (.safetensors, .pt or .bin)",
        )
    return _load_pickle(path)


def _read_head(path: Path) -> bytes:
    if path.is_dir():
        raise FormatError(f"{path} is a folder, not an embedding file", "pass the embedding file inside it")
    try:
        with path.open("rb") as f:
            head = f.read(9)
    except FileNotFoundError as e:
        raise NotFoundError(f"{path} does not exist", "check the path") from e
    except OSError as e:
        raise FormatError(f"{path} cannot be read: {e.strerror}", "check the file's permissions") from e
    if not head:
        raise FormatError(
            f"{path} is empty (0 bytes)", "the download or export was interrupted; get it again"
        )
    return head


def _is_safetensors(head: bytes) -> bool:
    # safetensors: an 8-byte little-endian header length, then the JSON header itself.
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") >= 2


def _is_pickle(head: bytes) -> bool:
    # torch.save writes a zip archive; older torch and plain pickles start with the PROTO opcode.
    return head.startswith(b"PK\x03\x04") or (
        head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    )


def _load_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as e:
        raise FormatError(
            f"{path} is a truncated or corrupt safetensors file ({e})", "download or export it again"
        ) from e


def _load_pickle(path: Path) -> dict[str, Any]:
    import pickle

    import torch

    # The original textual-inversion code (and A1111 files made with it) stored string_to_param as an
    # nn.ParameterDict. Rebuilding one only sets attributes on a module object, so it is safe to allow.
    allowed = (
        torch.serialization.safe_globals([torch.nn.ParameterDict])
        if hasattr(torch.serialization, "safe_globals")
        else contextlib.nullcontext()
    )
    try:
        # A file object, not the path: recent torch picks safetensors by the ".safetensors" suffix alone.
        with allowed, warnings.catch_warnings(), path.open("rb") as f:
            warnings.simplefilter("ignore")
            data = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Weights only load failed" not in text:
            raise FormatError(f"{path} is a corrupt pickle ({_first_line(text)})", "download it again") from e
        raise FormatError(
            f"{path} was refused: unpickling it needs arbitrary Python objects, which would run code "
            f"({_weights_only_reason(text)}); tinv never executes such files",
            "ask for a .safetensors version of the embedding, or re-save it from a trusted tool",
        ) from e
    except (RuntimeError, EOFError, ValueError, KeyError, OSError) as e:
        raise FormatError(
            f"{path} is a truncated or corrupt PyTorch file ({_first_line(str(e))})",
            "download or export it again",
        ) from e
    if not isinstance(data, dict):
        raise FormatError(
            f"{path} holds a {type(data).__name__}, not a dict of named tensors",
            "tinv reads embedding files whose tensors are stored under names (tokens or format keys)",
        )
    return data


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no details"


def _weights_only_reason(text: str) -> str:
    for line in text.splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return line.strip().rstrip(".")
    return "it needs objects other than tensors"


def _safetensors_metadata(path: Path) -> dict[str, str]:
    with path.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    return dict(header.get("__metadata__") or {})


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
    if any(k in data for k in SDXL_KEYS):
        missing = [k for k in SDXL_KEYS if k not in data]
        if missing:
            raise FormatError(
                f"{path} holds {_listing(keys)} but no {missing[0]}; an SDXL embedding needs both", _DAMAGED
            )
        extra = [k for k in keys if k not in SDXL_KEYS]
        if extra:
            raise FormatError(
                f"{path} holds SDXL keys clip_l and clip_g plus unexpected {_listing(extra)}", _DAMAGED
            )
        return _Found("sdxl", stem, (data["clip_l"], data["clip_g"]), {})
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
    params = getattr(params, "_parameters", params)
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


def read(path: Path, token: str | None = None) -> Imported:
    """Read any embedding file or concepts-library folder; ``token`` replaces the token the file gives."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path, token)
    if path.name in (SAFE_NAME, BIN_NAME) and _is_concept_folder(path.parent):
        return _read_folder(path.parent, token, embeds=path)
    found = _detect(load_tensors(path), path)
    meta = dict(found.meta)
    if _is_safetensors(_read_head(path)):
        metadata = _safetensors_metadata(path)
        if metadata:
            meta["safetensors_metadata"] = metadata
    vectors = found.vectors
    second = path.with_name(SECOND_NAME)
    if path.name == SAFE_NAME and second.is_file() and found.format == "diffusers":
        vectors = vectors + _second_encoder(second)
    embedding = _embedding(token or found.token, vectors, path)
    return Imported(embedding, found.format, path, meta=meta)


def _is_concept_folder(folder: Path) -> bool:
    return (folder / TOKEN_FILE).is_file() or (folder / KIND_FILE).is_file() or (folder / IMAGES_DIR).is_dir()


def _read_folder(folder: Path, token: str | None, embeds: Path | None = None) -> Imported:
    source = embeds or folder
    if embeds is None:
        # The safetensors copy is the one that cannot run code and keeps the full [n, d] shape.
        embeds = folder / SAFE_NAME if (folder / SAFE_NAME).is_file() else folder / BIN_NAME
        if not embeds.is_file():
            raise NotFoundError(
                f"{folder} has no {SAFE_NAME} or {BIN_NAME}",
                "pass a concepts-library folder or an embedding file",
            )
    found = _detect(load_tensors(embeds), embeds)
    vectors = found.vectors
    fmt = "concepts-library"
    second = folder / SECOND_NAME
    if embeds.name == SAFE_NAME and second.is_file() and found.format == "diffusers":
        vectors = vectors + _second_encoder(second)
        fmt = "diffusers"
    # Formats without a token in the file are named after the file; here the file name is generic.
    default = found.token if found.format == "diffusers" else folder.name
    embedding = _embedding(token or _read_text(folder / TOKEN_FILE) or default, vectors, embeds)
    kind = (_read_text(folder / KIND_FILE) or "").lower()
    images_dir = folder / IMAGES_DIR
    images: list[Path] = []
    if images_dir.is_dir():
        images = sorted(p for p in images_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    return Imported(embedding, fmt, source, kind if kind in KINDS else None, tuple(images), found.meta)


def _second_encoder(path: Path) -> tuple[Any, ...]:
    found = _detect(load_tensors(path), path)
    if found.format != "diffusers" or len(found.vectors) != 1:
        raise FormatError(
            f"{path} should hold the second text encoder's {{token: tensor}}, found {found.format} data",
            _DAMAGED,
        )
    return found.vectors


def _read_text(path: Path) -> str | None:
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8").strip() or None


def read_entry_embedding(folder: Path) -> Embedding:
    """The embedding of a concepts-library folder from its safetensors file: the registry's fast path."""
    path = Path(folder) / SAFE_NAME
    if not path.is_file():
        raise NotFoundError(
            f"{path} does not exist", "the entry is incomplete; remove it and import it again"
        )
    found = _detect(load_tensors(path), path)
    return _embedding(_read_text(Path(folder) / TOKEN_FILE) or found.token, found.vectors, path)


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
            f"two images share the name {clashes[0]}", "rename one; concept_images keeps file names"
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
    written.append(_write_text(folder / TOKEN_FILE, embedding.token))
    written.append(_write_text(folder / KIND_FILE, kind))
    if sources:
        (folder / IMAGES_DIR).mkdir(exist_ok=True)
    for image in sources:
        target = folder / IMAGES_DIR / image.name
        written.append(_atomic(target, lambda tmp, src=image: shutil.copyfile(src, tmp)))
    if readme is not None:
        written.append(_write_text(folder / "README.md", readme))
    return written


def _save(path: Path, tensors: dict[str, Any], *, pickle: bool | None = None) -> Path:
    """safetensors, or torch.save where the name asks for a pickle; each tensor cloned to own its storage."""
    import torch

    if pickle is None:
        pickle = path.suffix.lower() in _PICKLE_SUFFIXES

    def owned(value: Any) -> Any:
        # torch.save writes a view's whole storage, and safetensors refuses tensors that share one.
        if isinstance(value, torch.Tensor):
            return value.detach().clone().contiguous()
        if isinstance(value, dict):
            return {k: owned(v) for k, v in value.items()}
        return value

    data = owned(tensors)
    if pickle:
        return _atomic(path, lambda tmp: torch.save(data, tmp))
    from safetensors.torch import save_file

    return _atomic(path, lambda tmp: save_file(data, str(tmp)))


def _write_text(path: Path, text: str) -> Path:
    return _atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _atomic(path: Path, write_to: Callable[[Path], object]) -> Path:
    """Write through a temporary file in the same folder, then rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name the writer creates itself (not mkstemp's 0600 file), so the result gets the usual permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write_to(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
