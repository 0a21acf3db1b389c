"""Reading and writing the raw tensors of an embedding file: safetensors, or a pickle opened only with
``torch.load(weights_only=True)``. This is the only place tinv opens an embedding file."""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any

from tinv_cli.atomic import write_with
from tinv_cli.errors import FormatError, NotFoundError

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt"}


# Reading raw tensors


def load_tensors(path: Path) -> dict[str, Any]:
    """The dict a safetensors file or a weights-only pickle holds; FormatError for anything else."""
    head = read_head(path)
    if is_safetensors(head):
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


def read_head(path: Path) -> bytes:
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


def is_safetensors(head: bytes) -> bool:
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


def safetensors_metadata(path: Path) -> dict[str, str]:
    with path.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    return dict(header.get("__metadata__") or {})


def save_tensors(path: Path, tensors: dict[str, Any], *, pickle: bool | None = None) -> Path:
    """safetensors, or torch.save where the name asks for a pickle; each tensor cloned to own its storage."""
    import torch

    if pickle is None:
        pickle = path.suffix.lower() in PICKLE_SUFFIXES

    def owned(value: Any) -> Any:
        # torch.save writes a view's whole storage, and safetensors refuses tensors that share one.
        if isinstance(value, torch.Tensor):
            return value.detach().clone().contiguous()
        if isinstance(value, dict):
            return {k: owned(v) for k, v in value.items()}
        return value

    data = owned(tensors)
    if pickle:
        return write_with(path, lambda tmp: torch.save(data, tmp))
    from safetensors.torch import save_file

    return write_with(path, lambda tmp: save_file(data, str(tmp)))
