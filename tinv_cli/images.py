"""Training image folders: which files count as images, and what is wrong with a folder.

``tinv check`` and ``load_project`` call ``image_problems`` so a bad folder is reported before any model is
loaded; the trainer and the registry use ``list_images`` so both see the same files in the same order.
"""

from __future__ import annotations

from pathlib import Path

from tinv_cli.errors import DataError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
# `NAME.mask.png` beside `NAME.png` is that image's loss mask (masked_loss), not a training image.
MASK_SUFFIX = ".mask"


def mask_path(image: Path) -> Path:
    """Where the loss mask of ``image`` is: ``NAME.mask.png`` beside ``NAME.png`` (or ``NAME.jpg`` ...)."""
    return image.with_name(image.stem + MASK_SUFFIX + ".png")


def _is_image_name(path: Path) -> bool:
    # Hidden files are skipped: macOS litters folders with `._photo.jpg` resource forks that are not images.
    return (
        not path.name.startswith(".")
        and path.suffix.lower() in IMAGE_EXTENSIONS
        and not path.stem.lower().endswith(MASK_SUFFIX)
    )


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (no sub-folders), sorted by name; hidden files are skipped."""
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist", "check the concept's `images` path")
    return sorted((p for p in folder.iterdir() if _is_image_name(p) and p.is_file()), key=lambda p: p.name)


def _unreadable_reason(path: Path) -> str | None:
    """Why PIL cannot read ``path``, or None when it can."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            # verify() checks the file's structure (e.g. PNG chunk checksums) without decoding every pixel.
            image.verify()
    # These are the ways PIL reports a damaged or foreign file; anything else is a bug and propagates.
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        # PIL repeats the file's path in its message; the caller already names the file.
        return str(exc).replace(f" {str(path)!r}", "") or type(exc).__name__
    return None


def image_problems(folder: Path) -> list[str]:
    """Everything that keeps ``folder`` from being a training set; an empty list means it is usable.

    Every unreadable image is listed, not just the first, so one run of ``tinv check`` shows them all.
    """
    if not folder.exists():
        return [f"{folder}: folder does not exist"]
    if not folder.is_dir():
        return [f"{folder}: is not a folder"]
    images = list_images(folder)
    if not images:
        looked_for = ", ".join(sorted(IMAGE_EXTENSIONS))
        return [f"{folder}: holds no images (looked for {looked_for})"]
    problems = []
    for image in images:
        reason = _unreadable_reason(image)
        if reason is not None:
            problems.append(f"{image}: not a readable image ({reason})")
    return problems
