"""The one rule for the files tinv reads out of a source folder (``tinv import FOLDER``, a pulled snapshot, an
entry about to be pushed): only regular files that are really inside the folder, and only real images under
``concept_images/``.

A file is "inside" when its real path (every symlink followed) lies under the allowed root. The root is the
folder itself for an import and a push, and the repository's own cache folder (``models--OWNER--NAME``) for a
pull, because the Hugging Face cache makes each snapshot file a symlink to ``../../blobs/<hash>`` in that folder.
A path that spells ``..`` is refused outright, and so is a file with a second name (a hard link, ``st_nlink > 1``):
its other name may be anywhere on the disk, so being "inside" says nothing about where its bytes belong.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tinv_cli.errors import DataError, FormatError

# Images under concept_images/ are copied into the registry and published by `tinv push`. The concepts library's
# images are photos of a few hundred pixels; 4096 px a side is far past any of them and still decodes in
# about 64 MB, and 50 MB a file is more than a lossless 4096x4096 PNG takes.
MAX_IMAGE_SIDE = 4096
MAX_IMAGE_BYTES = 50 * 1024 * 1024
# token_identifier.txt and type_of_concept.txt hold one word each (a token is at most 100 characters).
MAX_TEXT_BYTES = 4096

_DAMAGED_TEXT = "write the token (or the kind) as one line of UTF-8 text"
_HINT = "tinv copies only regular files inside the folder it reads; replace the link with the file itself"


def _inside(path: Path, root: Path) -> Path:
    """``path``'s real location, if it is spelled ``root / ...`` without ``..`` and really lies inside ``root``."""
    try:
        spelled = Path(path).relative_to(root)
    except ValueError:
        spelled = None
    if spelled is None or ".." in spelled.parts:
        raise FormatError(f"{path}: a path that leads out of {root}; refused", _HINT)
    real = Path(os.path.realpath(path))
    root_real = Path(os.path.realpath(root))
    if real != root_real and root_real not in real.parents:
        raise FormatError(f"{path}: a symlink to {real}, outside {root}; refused", _HINT)
    return real


def contained(path: Path, root: Path) -> Path:
    """``path``'s real location, after checking that it is a regular file inside ``root`` with no other name.

    FormatError names the file and the rule it breaks. ``path`` must be spelled from ``root`` (``root / ...``).
    """
    real = _inside(path, root)
    try:
        info = real.stat()
    except OSError as e:
        raise FormatError(f"{path} cannot be read: {e.strerror}", "check the file's permissions") from e
    if not stat.S_ISREG(info.st_mode):
        raise FormatError(f"{path}: not a regular file; refused", _HINT)
    if info.st_nlink > 1:
        raise FormatError(
            f"{path}: a hard link (the file has {info.st_nlink} names, some perhaps outside {root}); refused",
            "copy the file into the folder (cp, not ln) and try again",
        )
    return real


def contained_folder(path: Path, root: Path) -> Path | None:
    """``path``'s real location if it is a folder inside ``root``, None if nothing is there; FormatError if it
    leads out of ``root`` or is something else."""
    if not os.path.lexists(path):
        return None
    real = _inside(path, root)
    if not real.is_dir():
        raise FormatError(f"{path}: not a folder", "concept_images must be a folder of images")
    return real


def read_text(path: Path, root: Path) -> str | None:
    """A one-word text file of the layout, stripped; None when it is absent or empty."""
    if not os.path.lexists(path):
        return None
    real = contained(path, root)
    with real.open("rb") as f:
        data = f.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise FormatError(f"{path}: over {MAX_TEXT_BYTES} bytes; it should hold one word", _DAMAGED_TEXT)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FormatError(
            f"{path}: not UTF-8 text (byte {e.start} is {data[e.start]:#04x})", _DAMAGED_TEXT
        ) from e
    return text.strip() or None


def check_image(path: Path, real: Path) -> None:
    """Refuse what is not a real image of at most MAX_IMAGE_SIDE px a side and MAX_IMAGE_BYTES bytes."""
    from PIL import Image

    size = real.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise DataError(
            f"{path}: {size / 1e6:.0f} MB; concept images are at most {MAX_IMAGE_BYTES // (1024 * 1024)} MB",
            "resize the image",
        )
    try:
        # open() reads the header only, so the size is known before a pixel is decoded; verify() then checks
        # the file's structure (chunk checksums) without decoding it.
        with Image.open(real) as image:
            width, height = image.size
            if max(width, height) > MAX_IMAGE_SIDE:
                raise DataError(
                    f"{path}: {width}x{height} px; concept images are at most {MAX_IMAGE_SIDE} px a side",
                    "resize the image",
                )
            image.verify()
    except Image.DecompressionBombError as e:  # PIL's own bound, far past ours, met before the size is known
        raise DataError(
            f"{path}: too many pixels; concept images are at most {MAX_IMAGE_SIDE} px a side",
            "resize the image",
        ) from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DataError(
            f"{path}: not a readable image ({type(e).__name__})",
            "concept_images holds only images (PNG, JPEG, WebP, ...); remove the file",
        ) from e
