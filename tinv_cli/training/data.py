"""A concept's training images: read every file once, in the same order every run, as the model will see it.

The pixel work matches the diffusers textual inversion example (optional center crop to a square, bicubic
resize to ``resolution``, values in [-1, 1]); what it adds is care with the files people actually have:
EXIF orientation applied, alpha composited on white instead of dropped to black, 16-bit and CMYK images
converted, a damaged file named in the error, and small images reported through ``warn`` before training
starts instead of silently upscaled.

Flips are not applied to pixels: the trainer encodes each image and its mirror once, and ``SampleStream``
draws, for every sample, which image, which of the two, and which prompt, from generators whose state can be
saved and restored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli.errors import DataError
from tinv_cli.images import IMAGE_EXTENSIONS, list_images, mask_path

if TYPE_CHECKING:
    import torch
    from PIL import Image

_INTEGER_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


@dataclass(frozen=True)
class TrainingSet:
    """The images of one concept, ready for the VAE. ``pixels`` is float32 ``[N, 3, resolution, resolution]``."""

    paths: tuple[Path, ...]
    pixels: torch.Tensor
    captions: tuple[str | None, ...]
    resolution: int
    # Each image's (height, width) as read, and the (left, top, right, bottom) box of it that became the
    # square: SDXL conditions on both (its "original size" and "crop top-left" time ids).
    original_sizes: tuple[tuple[int, int], ...] = ()
    crop_boxes: tuple[tuple[int, int, int, int], ...] = ()
    # masked_loss: float32 [N, 1, resolution, resolution] in [0, 1], cropped and resized as the images were.
    masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.paths)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB, keeping what a person sees (transparent parts become white, not black)."""
    import numpy as np
    from PIL import Image

    if image.mode in _INTEGER_GRAY_MODES or image.mode == "F":
        values = np.asarray(image).astype(np.float64)
        peak = float(values.max()) if values.size else 0.0
        if image.mode.startswith("I;16") or (image.mode == "I" and peak > 255):
            # 16-bit samples: 65535 / 257 == 255 maps full scale to full scale.
            values = values / 257.0
        elif image.mode == "F" and peak <= 1.0:
            values = values * 255.0
        gray = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        # CMYK, YCbCr, L, 1, P without transparency, LAB, HSV: PIL's own conversions are right for these.
        return image.convert("RGB")
    return image


def open_image(path: Path) -> Image.Image:
    """The image at ``path`` as 8-bit RGB, upright (EXIF orientation applied); a damaged file is a DataError."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as opened:
            # load() decodes every pixel now, so a truncated file fails here with its name, not mid-training.
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            return _to_rgb(upright if upright is not None else opened).copy()
    # These are how PIL reports a damaged or foreign file; anything else is a bug and propagates.
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        reason = str(exc) or type(exc).__name__
        raise DataError(
            f"{path}: not a readable image ({reason})", "replace or remove the file, then run again"
        ) from None


def open_mask(path: Path, size: tuple[int, int]) -> Image.Image | None:
    """The loss mask of the image at ``path`` (whose upright size is ``size``) as 8-bit grey, white = learn:
    ``NAME.mask.png`` beside it, else the image's own alpha channel, else None (all of it is learned)."""
    from PIL import Image, ImageOps

    separate = mask_path(path)
    source = separate if separate.is_file() else path
    try:
        with Image.open(source) as opened:
            opened.load()
            upright = ImageOps.exif_transpose(opened) or opened
            if source == separate:
                mask = upright.convert("L")  # its grey level; any alpha of the mask file is not read
            elif "A" in upright.getbands() or "transparency" in upright.info:
                mask = upright.convert("RGBA").getchannel("A")
            else:
                return None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        reason = str(exc) or type(exc).__name__
        raise DataError(f"{source}: not a readable mask ({reason})", "replace or remove the file") from None
    if mask.size != size:
        raise DataError(
            f"{separate}: the mask is {mask.size[0]}x{mask.size[1]} but its image is {size[0]}x{size[1]}",
            "save the mask at the image's size",
        )
    return mask.copy()


def mask_pixels(mask: Image.Image | None, resolution: int, *, center_crop: bool) -> torch.Tensor:
    """A mask cropped and resized exactly as its image (``prepare_image``), as float32 ``[1, H, W]`` in [0, 1];
    no mask is all ones."""
    import numpy as np
    import torch

    if mask is None:
        return torch.ones(1, resolution, resolution)
    prepared = prepare_image(mask, resolution, center_crop=center_crop)
    return torch.from_numpy(np.asarray(prepared, dtype=np.uint8).astype(np.float32) / 255.0).unsqueeze(0)


def crop_box(size: tuple[int, int], *, center_crop: bool) -> tuple[int, int, int, int]:
    """The ``(left, top, right, bottom)`` part of an image of ``size`` (width, height) that training uses: the
    central square with ``center_crop``, else all of it (squeezed to a square by the resize)."""
    width, height = size
    if not center_crop:
        return (0, 0, width, height)
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return (left, top, left + side, top + side)


def prepare_image(image: Image.Image, resolution: int, *, center_crop: bool) -> Image.Image:
    """The reference script's geometry: crop the central square if asked, then a bicubic resize to a square."""
    from PIL import Image

    if center_crop:
        image = image.crop(crop_box(image.size, center_crop=True))
    if image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), resample=Image.Resampling.BICUBIC)
    return image


def to_pixels(image: Image.Image) -> torch.Tensor:
    """An RGB image as a float32 ``[3, H, W]`` tensor scaled to [-1, 1], the VAE's input range."""
    import numpy as np
    import torch

    array = np.asarray(image, dtype=np.uint8).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def read_caption(image_path: Path) -> str | None:
    """The caption in ``img.txt`` next to ``img.png``, or None when there is none (or it is empty)."""
    caption_path = image_path.with_suffix(".txt")
    if not caption_path.is_file():
        return None
    try:
        text = caption_path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{caption_path}: not UTF-8 text", "save the caption file as UTF-8") from None
    # One caption per image: only the first non-empty line counts, so a trailing newline is harmless.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else None


def small_image_note(path: Path, size: tuple[int, int], resolution: int) -> str | None:
    """A warning when an image must be upscaled to reach the training resolution, else None."""
    width, height = size
    if min(width, height) >= resolution:
        return None
    return (
        f"{path.name} is {width}x{height}, smaller than the training resolution {resolution}; "
        "it will be upscaled and look blurry to the model"
    )


def load_training_set(
    folder: Path,
    *,
    resolution: int,
    center_crop: bool,
    warn: Callable[[str], None] | None = None,
    masks: bool = False,
) -> TrainingSet:
    """Read every image in ``folder`` (sorted by name) into one tensor, plus its caption if it has one, and with
    ``masks`` each image's loss mask (``open_mask``)."""
    import torch

    paths = list_images(folder)
    if not paths:
        looked_for = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise DataError(
            f"image folder {folder} holds no images (looked for {looked_for})",
            "add the concept's training images (3-5 are usually enough) to that folder",
        )
    pixels = []
    captions = []
    sizes = []
    boxes = []
    mask_list = []
    for path in paths:
        image = open_image(path)
        if masks:
            mask = open_mask(path, image.size)
            mask_list.append(mask_pixels(mask, resolution, center_crop=center_crop))
        note = small_image_note(path, image.size, resolution)
        if note and warn is not None:
            warn(note)
        pixels.append(to_pixels(prepare_image(image, resolution, center_crop=center_crop)))
        captions.append(read_caption(path))
        sizes.append((image.height, image.width))
        boxes.append(crop_box(image.size, center_crop=center_crop))
    return TrainingSet(
        paths=tuple(paths),
        pixels=torch.stack(pixels),
        captions=tuple(captions),
        resolution=resolution,
        original_sizes=tuple(sizes),
        crop_boxes=tuple(boxes),
        masks=torch.stack(mask_list) if masks else None,
    )


def fingerprint(paths: Sequence[Path]) -> str:
    """sha256 over the images' names and bytes and their captions: changes whenever the training set does."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
        caption = path.with_suffix(".txt")
        digest.update(caption.read_bytes() if caption.is_file() else b"\0no caption\0")
        mask = mask_path(path)
        if mask.is_file():  # only then: the fingerprint of a folder without masks is as it always was
            digest.update(b"\0mask\0" + hashlib.sha256(mask.read_bytes()).digest())
    return digest.hexdigest()


def derive_seed(seed: int, stream: str, rank: int = 0) -> int:
    """A 63-bit seed for one named random stream of one process, derived from the run's seed.

    Separate streams keep one kind of draw (say, flips) from shifting another (say, noise) when a setting
    changes how many draws it makes.
    """
    digest = hashlib.sha256(f"tinv/{seed}/{stream}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class SampleStream:
    """Which image, mirror and prompt each training sample uses.

    Image order is a fresh permutation per epoch from a generator every process shares, so the processes of a
    data-parallel run split each global batch between them (process r takes items r*B .. r*B+B-1) instead of
    training on the same images. Flips and prompt choices come from a per-process generator. All of it is CPU
    work on small tensors: choosing a batch never waits on the accelerator.
    """

    def __init__(
        self,
        prompt_counts: Sequence[int],
        *,
        batch_size: int,
        flip_p: float,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        import torch

        self.counts = torch.tensor(list(prompt_counts), dtype=torch.float64)
        self.batch_size = batch_size
        self.flip_p = flip_p
        self.rank = rank
        self.world_size = world_size
        self.order = torch.Generator().manual_seed(derive_seed(seed, "order"))
        self.picks = torch.Generator().manual_seed(derive_seed(seed, "picks", rank))
        self.permutation = torch.zeros(0, dtype=torch.long)
        self.position = 0

    def _next_images(self, count: int) -> torch.Tensor:
        import torch

        taken = []
        while count > 0:
            if self.position >= len(self.permutation):
                self.permutation = torch.randperm(len(self.counts), generator=self.order)
                self.position = 0
            chunk = self.permutation[self.position : self.position + count]
            taken.append(chunk)
            self.position += len(chunk)
            count -= len(chunk)
        return torch.cat(taken)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(image indices, flipped 0/1, prompt indices)`` for this process's share of the next batch."""
        import torch

        global_batch = self._next_images(self.batch_size * self.world_size)
        images = global_batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        flips = (torch.rand(self.batch_size, generator=self.picks) < self.flip_p).long()
        counts = self.counts[images]
        draws = torch.rand(self.batch_size, generator=self.picks, dtype=torch.float64)
        prompts = torch.minimum((draws * counts).long(), counts.long() - 1)
        return images, flips, prompts

    def state_dict(self) -> dict[str, Any]:
        return {
            "order": self.order.get_state(),
            "picks": self.picks.get_state(),
            "permutation": self.permutation.clone(),
            "position": self.position,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.order.set_state(state["order"])
        self.picks.set_state(state["picks"])
        self.permutation = state["permutation"].clone()
        self.position = int(state["position"])
