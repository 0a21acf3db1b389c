"""Writing sampled images: predictable names, metadata in every PNG, and an optional labelled grid.

Names are ``<slug>-<seed>.png``, the slug made from the prompt and the seed being the image's own (``seed + i``),
so the name says how to make the image again. A name that is taken gets ``-2``, ``-3``, ...: nothing is ever
overwritten, and each file is created exclusively, so two runs writing into one folder cannot collide.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tinv_cli.errors import TinvError
from tinv_cli.paths import ensure_folder
from tinv_cli.sampling import pngmeta

if TYPE_CHECKING:
    from PIL.Image import Image
    from PIL.PngImagePlugin import PngInfo

SLUG_LENGTH = 48
_LABEL_HEIGHT = 16


def slug(prompt: str) -> str:
    """``"A <cat-toy> backpack!"`` -> ``"a-cat-toy-backpack"`` (at most 48 characters; ``image`` if empty)."""
    text = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return text[:SLUG_LENGTH].rstrip("-") or "image"


def _write_new(folder: Path, stem: str, data: bytes) -> Path:
    """Write ``data`` to ``folder/stem.png``, or ``stem-2.png``, ... whichever is free first."""
    for attempt in range(1, 10_000):
        path = folder / (f"{stem}.png" if attempt == 1 else f"{stem}-{attempt}.png")
        try:
            with open(path, "xb") as f:  # "x": fail rather than replace an existing file
                f.write(data)
        except FileExistsError:
            continue
        return path
    raise TinvError(f"{folder}: too many files named {stem}-N.png", "choose another --out folder")


def _png_bytes(image: Image, info: PngInfo) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def labelled_grid(images: list[Image], labels: list[str]) -> Image:
    """The images in a near-square grid, each with its label (e.g. its seed) in a strip beneath it."""
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    width = max(image.width for image in images)
    height = max(image.height for image in images)
    cell_height = height + _LABEL_HEIGHT
    grid = PILImage.new("RGB", (columns * width, rows * cell_height), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        x, y = (index % columns) * width, (index // columns) * cell_height
        grid.paste(image.convert("RGB"), (x, y))
        draw.text((x + 2, y + height + 2), label, fill="black", font=font)
    return grid


class Samples(Protocol):
    """What ``save_result`` writes: ``sample.SampleResult`` has these fields."""

    @property
    def prompt(self) -> str: ...
    @property
    def images(self) -> Sequence[Image]: ...
    @property
    def seeds(self) -> Sequence[int]: ...
    @property
    def parameters(self) -> Sequence[str]: ...
    @property
    def metadata(self) -> Sequence[dict[str, Any]]: ...


def save_result(result: Samples, out_dir: Path, *, grid: bool = False) -> list[Path]:
    """Write every image of ``result`` (and the grid, last) into ``out_dir``; returns the paths in order."""
    ensure_folder(out_dir, "output folder")
    stem = slug(result.prompt)
    written = []
    for image, seed, parameters, metadata in zip(
        result.images, result.seeds, result.parameters, result.metadata, strict=True
    ):
        info = pngmeta.png_info(parameters, metadata)
        written.append(_write_new(out_dir, f"{stem}-{seed}", _png_bytes(image, info)))
    if grid and result.images:
        picture = labelled_grid(list(result.images), [f"seed {seed}" for seed in result.seeds])
        # The grid carries the first image's parameters, plus every seed and file it shows.
        tinv = {
            **result.metadata[0],
            "grid": {"seeds": list(result.seeds), "files": [p.name for p in written]},
        }
        info = pngmeta.png_info(result.parameters[0], tinv)
        written.append(_write_new(out_dir, f"{stem}-{result.seeds[0]}-grid", _png_bytes(picture, info)))
    return written
