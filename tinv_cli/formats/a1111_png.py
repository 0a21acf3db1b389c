"""AUTOMATIC1111's image embeddings: a ``.png`` (or ``.webp``) whose picture is a preview and which carries
the embedding twice.

- The ``sd-ti-embedding`` text chunk: base64 of the JSON of A1111's ``.pt`` dict, each tensor written as
  ``{"TORCHTENSOR": nested lists}``.
- The pixels, for image sites that strip text chunks: the same JSON, zlib-compressed at level 9, split into its
  low and high 4 bits, each laid out as an ``(height, -1, 3)`` block (``np.resize`` repeating the bytes up to a
  multiple of ``height * 3``). The high 4 bits of each block's pixels draw grey dots whose shades come from the
  first vector's normalised magnitudes; the low 4 bits carry the data XOR-ed with a linear congruential stream
  (m = 2**32, a = 1664525, c = 1013904223, seed 0, each value % 255, & 0x0F). The low block is pasted left of
  the preview, the high block right of it, each behind a 1-pixel black column. The reader crops the black
  border, keeps the low 4 bits, finds the all-zero columns, undoes the XOR, puts each byte together again
  (upper << 4 | lower) and decompresses.

This is A1111's ``modules/textual_inversion/image_embedding.py`` format; tests check both directions against it.
A1111 names such an embedding by the ``name`` its data holds. It never wrote them for SDXL (two encoders).
The chunk is read by walking the PNG's chunks (Pillow refuses text chunks over 1 MB, which a 75-vector
embedding's is), and everything a file claims is bounded before it is decoded.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli.embedding import Embedding
from tinv_cli.errors import FormatError

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

CHUNK_KEY = "sd-ti-embedding"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SUFFIXES = (".png", ".webp")
PREVIEW_SIDE = 512  # the long side of the preview picture of an export
# An embedding's JSON is at most about 2.5 M numbers of ~20 characters; more is not an embedding.
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_PIXELS = 64 * 1024 * 1024
_NONE = (
    "it is an ordinary picture: export the embedding from A1111 again, or pass its .pt or .safetensors file"
)


def is_image(path: Path) -> bool:
    """Whether ``path`` starts as a PNG or a WebP does."""
    with path.open("rb") as f:
        head = f.read(12)
    return head.startswith(PNG_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


# Reading


def read(path: Path) -> tuple[dict[str, Any], str]:
    """The A1111 dict an image embedding holds (tensors as torch tensors) and its carrier ("text chunk" or
    "pixels"); FormatError for an image without one."""
    raw = path.read_bytes()
    text = _png_text(raw, path) if raw.startswith(PNG_MAGIC) else None
    if text is not None:
        try:
            payload = base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError) as e:
            raise FormatError(f"{path}: its {CHUNK_KEY} chunk is not base64", "export it again") from e
        return _decode_json(payload, path), "text chunk"
    if raw[:4] == b"RIFF" and _webp_is_lossy(raw):
        raise FormatError(
            f"{path} is a lossy WebP without an {CHUNK_KEY} chunk; lossy compression destroys the embedding "
            "A1111 hides in the pixels",
            "get the original .png (or a lossless WebP) of the embedding",
        )
    data = extract(_open_image(path))
    if data is None:
        raise FormatError(f"{path} holds no A1111 embedding (no {CHUNK_KEY} chunk, no data strips)", _NONE)
    return _decode_json(_inflate(data, path), path), "pixels"


def _png_text(raw: bytes, path: Path) -> str | None:
    """The ``sd-ti-embedding`` text of a PNG (tEXt, zTXt or iTXt), or None."""
    at = len(PNG_MAGIC)
    key = CHUNK_KEY.encode("latin-1") + b"\0"
    while at + 8 <= len(raw):
        length, kind = struct.unpack(">I4s", raw[at : at + 8])
        body = raw[at + 8 : at + 8 + length]
        at += 12 + length
        if kind == b"IEND":
            break
        if not body.startswith(key):
            continue
        rest = body[len(key) :]
        if kind == b"tEXt":
            return rest.decode("latin-1")
        if kind == b"zTXt":
            return _inflate(rest[1:], path).decode("latin-1")
        if kind == b"iTXt":
            compressed = rest[:1] == b"\1"
            _lang, _, rest = rest[2:].partition(b"\0")
            _translated, _, rest = rest.partition(b"\0")
            return (_inflate(rest, path) if compressed else rest).decode("utf-8")
    return None


def _webp_is_lossy(raw: bytes) -> bool:
    """Whether a WebP's picture is VP8 (lossy) rather than VP8L (lossless), from its RIFF chunks."""
    at = 12
    while at + 8 <= len(raw):
        kind, size = raw[at : at + 4], int.from_bytes(raw[at + 4 : at + 8], "little")
        if kind == b"VP8 ":
            return True
        if kind == b"VP8L":
            return False
        at += 8 + size + (size & 1)
    return False


def _open_image(path: Path) -> Image:
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise FormatError(
                    f"{path} is {image.width}x{image.height} pixels; an embedding's image is far smaller",
                    _NONE,
                )
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise FormatError(f"{path} is not a readable image ({e})", _NONE) from e


def _inflate(data: bytes, path: Path) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_JSON_BYTES)
    except zlib.error as e:
        raise FormatError(
            f"{path} holds no A1111 embedding (its data does not decompress: {e})", _NONE
        ) from e
    if inflater.unconsumed_tail:
        raise FormatError(f"{path}: its embedding data unpacks to more than {MAX_JSON_BYTES} bytes", _NONE)
    if not inflater.eof:
        raise FormatError(f"{path} holds no A1111 embedding (its data is cut short)", _NONE)
    return out


def _decode_json(payload: bytes, path: Path) -> dict[str, Any]:
    import torch

    def tensors(d: dict[str, Any]) -> Any:
        if "TORCHTENSOR" in d:
            return torch.tensor(d["TORCHTENSOR"], dtype=torch.float64)
        return d

    try:
        data = json.loads(payload, object_hook=tensors)
    except (UnicodeDecodeError, ValueError, TypeError) as e:
        raise FormatError(f"{path}: its embedding data is not A1111's JSON ({e})", "export it again") from e
    if not isinstance(data, dict) or "string_to_param" not in data:
        raise FormatError(f"{path}: its embedding data has no string_to_param", "export it again")
    return data


def extract(image: Image) -> bytes | None:
    """The compressed bytes hidden in an image's side strips, or None where there are none."""
    import numpy as np

    pixels = _crop_black(np.asarray(image.convert("RGB"), dtype=np.uint8)) & 0x0F
    zero = np.flatnonzero(pixels.sum(axis=(0, 2)) == 0)
    if zero.size < 2:
        return None
    lower = _xor(pixels[:, : zero.min(), :])
    upper = _xor(pixels[:, zero.max() + 1 :, :])
    if lower.shape != upper.shape or lower.size == 0:
        return None
    return ((upper << 4) | lower).astype(np.uint8).tobytes()


def _crop_black(pixels: np.ndarray) -> np.ndarray:
    """The pixels inside the black border: rows and columns with at least one pixel bright in every channel."""
    import numpy as np

    bright = np.all(pixels > 0, axis=2)
    rows = np.flatnonzero(np.any(bright, axis=1))
    cols = np.flatnonzero(np.any(bright, axis=0))
    if rows.size == 0:
        return pixels[:0, :0]
    return pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


@functools.lru_cache(maxsize=4)
def _stream(count: int) -> np.ndarray:
    """The first ``count`` values of A1111's generator, each ``% 255``, low 4 bits kept (both strips of an
    image have the same size, so the second is free)."""
    import numpy as np

    values = np.empty(count, dtype=np.uint8)
    seed = 0
    for i in range(count):
        seed = (1664525 * seed + 1013904223) % 2**32
        values[i] = (seed % 255) & 0x0F
    values.flags.writeable = False
    return values


def _xor(block: np.ndarray) -> np.ndarray:
    """XOR with the stream, in the block's row-major order (its own inverse)."""
    return block ^ _stream(block.size).reshape(block.shape)


# Writing


def write(embedding: Embedding, out: Path, meta: dict[str, Any], preview: Path | None = None) -> Path:
    """``out`` as A1111 writes an image embedding: a preview (``preview`` resized, else a card) with the data
    strips on its sides and the ``sd-ti-embedding`` chunk."""
    from tinv_cli.atomic import write_with
    from tinv_cli.formats.a1111 import a1111_data

    if len(embedding.vectors) != 1:
        raise FormatError(
            f"{embedding.token}: A1111 image embeddings hold one text encoder's vectors; this embedding has "
            f"{len(embedding.vectors)} (A1111 never wrote them for SDXL)",
            "export it with --format a1111 (a .safetensors file A1111 loads)",
        )
    if out.suffix.lower() != ".png":
        raise FormatError(f"{out}: an a1111-png export is a .png file", f"use {out.with_suffix('.png')}")
    data = a1111_data(embedding, str(meta.get("name") or out.stem), meta)
    text = json.dumps(data, default=_tensor_json)
    picture = _preview(preview, embedding, data)
    image = embed(picture, zlib.compress(text.encode(), level=9), embedding.vectors[0][0].tolist())
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(CHUNK_KEY, base64.b64encode(text.encode()).decode("ascii"))
    return write_with(out, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))


def _tensor_json(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return {"TORCHTENSOR": value.detach().cpu().tolist()}
    raise TypeError(f"{type(value).__name__} is not JSON")


def embed(picture: Image, compressed: bytes, first_vector: list[float]) -> Image:
    """``picture`` with ``compressed`` in a strip on each side, as A1111's ``insert_image_data_embed`` lays them."""
    import numpy as np
    from PIL import Image as PILImage

    height = picture.height
    raw = np.frombuffer(compressed, dtype=np.uint8)
    size = raw.size + (height - raw.size % height)
    size += height * 3 - size % (height * 3)
    # A1111 rounds up with np.resize, which repeats the bytes; zlib ignores what follows its stream.
    low = np.resize(raw & 0x0F, size).reshape(height, -1, 3)
    high = np.resize(raw >> 4, size).reshape(height, -1, 3)
    shades = _shades(first_vector)
    low = _xor(_dots(low, shades))
    high = _xor(_dots(high, shades[::-1]))
    width = low.shape[1]
    canvas = PILImage.new("RGB", (picture.width + 2 * width + 2, height), (0, 0, 0))
    canvas.paste(PILImage.fromarray(low, mode="RGB"), (0, 0))
    canvas.paste(picture.convert("RGB"), (width + 1, 0))
    canvas.paste(PILImage.fromarray(high, mode="RGB"), (width + 1 + picture.width + 1, 0))
    return canvas


def _shades(first_vector: list[float]) -> list[int]:
    import numpy as np

    magnitudes = np.abs(np.asarray(first_vector[:1024], dtype=np.float64))
    top = magnitudes.max() if magnitudes.size else 0.0
    if not top > 0:
        return [0]
    return (magnitudes / top * 255).astype(np.uint8).tolist()


def _dots(block: np.ndarray, shades: list[int]) -> np.ndarray:
    """The block with a grid of grey dots (every 8 px, odd rows shifted by 4) drawn in its high 4 bits."""
    import numpy as np
    from PIL import Image as PILImage
    from PIL import ImageDraw

    art = PILImage.new("RGB", (block.shape[1], block.shape[0]))
    draw = ImageDraw.Draw(art)
    i = 0
    for x in range(-6, art.width, 8):
        for row, y in enumerate(range(-6, art.height, 8)):
            shift = 4 if row % 2 == 0 else 0
            shade = shades[i % len(shades)]
            i += 1
            draw.ellipse((x + shift, y, x + 6 + shift, y + 6), fill=(shade, shade, shade))
    return block.astype(np.uint8) ^ (np.asarray(art, dtype=np.uint8) & 0xF0)


def _preview(path: Path | None, embedding: Embedding, data: dict[str, Any]) -> Image:
    """The picture between the strips: the concept's first image, its long side PREVIEW_SIDE, else a card."""
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageOps

    if path is not None:
        with PILImage.open(path) as image:
            picture = ImageOps.exif_transpose(image).convert("RGB")
        scale = PREVIEW_SIDE / max(picture.size)
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        return picture.resize(size, PILImage.Resampling.LANCZOS)
    card = PILImage.new("RGB", (PREVIEW_SIDE, PREVIEW_SIDE), (38, 42, 56))
    draw = ImageDraw.Draw(card)
    draw.rectangle((16, 16, PREVIEW_SIDE - 17, PREVIEW_SIDE - 17), outline=(120, 130, 160), width=2)
    lines = [
        f"<{data['name']}>",
        f"{embedding.num_vectors} vector{'s' if embedding.num_vectors != 1 else ''} x {embedding.widths[0]}",
    ]
    if data.get("step"):
        lines.append(f"{data['step']} steps")
    lines.append("textual inversion (tinv)")
    for n, line in enumerate(lines):
        draw.text((40, 40 + 28 * n), line, fill=(230, 232, 240), font_size=22)
    return card
