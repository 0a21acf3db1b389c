"""The tensor names and shapes of a single-file checkpoint, read without loading its weights.

A ``.safetensors`` file says them in its JSON header; the header's offsets are checked against the file's size,
so a cut download is named here rather than by a failure halfway through loading gigabytes. A ``.ckpt`` (a torch
pickle) is opened only with ``torch.load(weights_only=True, mmap=True)``: its tensors are mapped, not read, and a
pickle that needs more than tensors (one that would run code) is refused, as ``formats/tensors.py`` refuses such
embedding files. ``describe_foreign`` words what a file that is no base model tinv knows looks like.
"""

from __future__ import annotations

import json
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tinv_cli.errors import ModelError, NotFoundError
from tinv_cli.formats.tensors import is_safetensors

Shapes = dict[str, tuple[int, ...]]

# An SDXL checkpoint's header is about 300 kB; anything past this is not a checkpoint's header.
MAX_HEADER_BYTES = 64 * 1024 * 1024
_CONVERT = "convert it to .safetensors with a tool you trust, or use a diffusers folder"


def checkpoint_shapes(path: Path) -> Shapes:
    """``{tensor name: shape}`` of a single-file checkpoint (under ``state_dict`` where a ``.ckpt`` nests it)."""
    try:
        with path.open("rb") as f:
            head = f.read(9)
    except FileNotFoundError:
        raise NotFoundError(
            f"checkpoint file {path} does not exist", "check the path given as the model"
        ) from None
    except OSError as error:
        raise ModelError(f"{path} cannot be read: {error.strerror}", "check the file's permissions") from None
    if not head:
        raise ModelError(f"{path.name} is empty (0 bytes)", "the download was interrupted; get it again")
    if is_safetensors(head):
        return _safetensors_shapes(path)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return _pickle_shapes(path)
    raise ModelError(
        f"{path.name} is neither a safetensors file nor a PyTorch checkpoint",
        "pass a .safetensors or .ckpt checkpoint, a diffusers folder or a Hub id",
    )


def _safetensors_shapes(path: Path) -> Shapes:
    size = path.stat().st_size
    with path.open("rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise ModelError(
                f"{path.name} is truncated or not a safetensors file: its header claims {length} bytes of "
                f"a {size}-byte file",
                "download it again",
            )
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelError(
            f"{path.name} is a corrupt safetensors file (its header is not JSON)", "download it again"
        ) from None
    if not isinstance(header, dict):
        raise ModelError(f"{path.name} is a corrupt safetensors file", "download it again")
    shapes: Shapes = {}
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        shape = info.get("shape") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and isinstance(shape, list)):
            raise ModelError(f"{path.name} is a corrupt safetensors file (tensor {key})", "download it again")
        end = max(end, int(offsets[1]))
        shapes[key] = tuple(int(n) for n in shape)
    if 8 + length + end > size:
        raise ModelError(
            f"{path.name} is truncated: its header describes {8 + length + end} bytes, the file has {size}",
            "the download was interrupted; download it again",
        )
    return shapes


def _pickle_shapes(path: Path) -> Shapes:
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:
                if "mmap" not in str(error):
                    raise
                # Only torch's zip format can be mapped; the legacy format is read into memory.
                data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        if "GLOBAL" in text or "Unsupported" in text:
            reason = next(
                (line.strip() for line in text.splitlines() if "GLOBAL" in line), "objects other than tensors"
            )
            raise ModelError(
                f"{path.name} was refused: unpickling it needs arbitrary Python objects, which would run code "
                f"({reason.rstrip('.')}); tinv never executes such files",
                _CONVERT,
            ) from None
        raise ModelError(f"{path.name} is a corrupt PyTorch checkpoint", "download it again") from None
    except (RuntimeError, EOFError, ValueError, KeyError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(
            f"{path.name} is a truncated or corrupt PyTorch checkpoint ({first})", "download it again"
        ) from None
    while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ModelError(f"{path.name} holds a {type(data).__name__}, not a state dict", _CONVERT)
    return {str(k): tuple(v.shape) for k, v in data.items() if isinstance(v, torch.Tensor)}


def _has(shapes: Mapping[str, Any], *parts: str) -> bool:
    return any(all(part in key for part in parts) for key in shapes)


def describe_foreign(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """What a checkpoint no family claims looks like, in a few words, for the one-line error."""
    keys = list(shapes)
    if not keys:
        return "no tensors"
    if _has(shapes, "lora_") or _has(shapes, "lora_A") or _has(shapes, ".alpha"):
        return "a LoRA (lora_* keys), not a base model"
    if len(keys) <= 8 and all(len(shape) <= 2 for shape in shapes.values()):
        return f"an embedding or other small file ({len(keys)} tensors: {', '.join(keys[:3])})"
    if _has(shapes, "joint_blocks."):
        return "an SD 3.x model"
    if _has(shapes, "double_blocks."):
        return "a Flux model"
    if _has(shapes, "conditioner.embedders.0.model.") and not _has(shapes, "conditioner.embedders.1."):
        return "an SDXL refiner (OpenCLIP-G alone): concepts are trained on a base model"
    conv_in = shapes.get("model.diffusion_model.input_blocks.0.0.weight")
    if conv_in is not None and len(conv_in) == 4 and conv_in[1] != 4:
        return f"a UNet taking {conv_in[1]} input channels (an inpainting or other special model)"
    if not _has(shapes, "model.diffusion_model.") and (
        _has(shapes, "first_stage_model.") or (_has(shapes, "encoder.") and _has(shapes, "decoder."))
    ):
        return "a VAE on its own, not a whole model"
    if _has(shapes, "model.diffusion_model."):
        return "a UNet without a text encoder tinv knows"
    return f"{len(keys)} tensors in no layout tinv knows (e.g. {keys[0]})"
