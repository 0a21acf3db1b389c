"""Generation parameters stored inside PNG files, so an image carries what it takes to make it again.

Two text chunks:

``parameters``  AUTOMATIC1111's format, which A1111, ComfyUI, InvokeAI and image sites read::

    a photo of <cat-toy>
    Negative prompt: blurry
    Steps: 30, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: stable-diffusion-v1-5, ...

``tinv``        tinv's own JSON: every option and each concept's registry entry and sha256.

A1111 writes a value that holds ``,``, ``:`` or a newline as a JSON string; the parser here reads what A1111's
``parse_generation_parameters`` reads, so a file written by either tool parses the same.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli.errors import FormatError

if TYPE_CHECKING:
    from PIL.PngImagePlugin import PngInfo

PARAMETERS_KEY = "parameters"
TINV_KEY = "tinv"
TINV_SCHEMA = 1
NEGATIVE_PREFIX = "Negative prompt:"

# A1111's re_param: "Key: value" pairs, a value being a JSON string or text up to the next comma.
_PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
# The settings line is the last line and holds at least three "Key: value" pairs (A1111's own test).
_MIN_SETTINGS = 3


def _quote(value: object) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return str(json.loads(text))
        except ValueError:
            return text
    return text


def format_parameters(prompt: str, negative_prompt: str, settings: Mapping[str, object]) -> str:
    """The A1111 ``parameters`` text: prompt, ``Negative prompt:`` line (if any), then ``Key: value, ...``.

    ``settings`` keeps its order; None values are left out.
    """
    pairs = ", ".join(f"{key}: {_quote(value)}" for key, value in settings.items() if value is not None)
    lines = [prompt]
    if negative_prompt:
        lines.append(f"{NEGATIVE_PREFIX} {negative_prompt}")
    lines.append(pairs)
    return "\n".join(lines)


def parse_parameters(text: str) -> dict[str, str]:
    """Read an A1111 ``parameters`` text into ``{"Prompt": ..., "Negative prompt": ..., "Steps": "30", ...}``.

    Values stay strings, as A1111 keeps them; quoted values are unquoted.
    """
    *lines, last = text.strip().split("\n")
    if len(_PARAM_RE.findall(last)) < _MIN_SETTINGS:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    target = prompt
    for line in lines:
        # Everything from the first "Negative prompt:" line on is the negative prompt (it may span lines).
        if target is prompt and line.startswith(NEGATIVE_PREFIX):
            target = negative
            line = line[len(NEGATIVE_PREFIX) :].lstrip()
        target.append(line)
    result = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in _PARAM_RE.findall(last):
        result[key.strip()] = _unquote(value.strip())
    return result


def png_info(parameters: str, tinv: Mapping[str, Any]) -> PngInfo:
    """The PNG text chunks for one image: A1111's ``parameters`` and tinv's JSON."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    # add_text writes tEXt for Latin-1 text and iTXt (UTF-8) otherwise, as A1111 does.
    info.add_text(PARAMETERS_KEY, parameters)
    info.add_text(TINV_KEY, json.dumps({"schema": TINV_SCHEMA, **tinv}, ensure_ascii=False, sort_keys=True))
    return info


def read_png_text(path: Path) -> dict[str, str]:
    """Every text chunk of a PNG file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()  # text chunks after the image data are read only with the pixels
            return {str(k): str(v) for k, v in getattr(image, "text", {}).items()}
    except (OSError, UnidentifiedImageError) as exc:
        raise FormatError(f"{path}: not a readable PNG ({exc})") from None


def read_metadata(path: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """The parsed ``parameters`` and ``tinv`` chunks of an image written by ``tinv sample``."""
    text = read_png_text(path)
    if PARAMETERS_KEY not in text or TINV_KEY not in text:
        raise FormatError(
            f"{path}: no generation parameters in this image", "only PNGs written by `tinv sample` carry them"
        )
    try:
        tinv = json.loads(text[TINV_KEY])
    except ValueError as exc:
        raise FormatError(f"{path}: the tinv metadata chunk is not JSON ({exc})") from None
    return parse_parameters(text[PARAMETERS_KEY]), tinv
