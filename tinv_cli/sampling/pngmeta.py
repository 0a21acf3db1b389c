"""Generation parameters stored inside PNG files, so an image carries what it takes to make it again.

Two text chunks:

``parameters``  AUTOMATIC1111's format, which A1111, ComfyUI, InvokeAI and image sites read::

    a photo of <cat-toy>
    Negative prompt: blurry
    Steps: 30, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: stable-diffusion-v1-5, ...

``tinv``        tinv's own JSON: every option and each concept's registry entry and sha256.

A1111 writes a value that holds ``,``, ``:`` or a newline as a JSON string, and so does ``format_parameters``,
so A1111's ``parse_generation_parameters`` reads what tinv writes (tests/helpers.py parses it the same way).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.PngImagePlugin import PngInfo

    from tinv_cli.sampling.prompt import PromptConcept

PARAMETERS_KEY = "parameters"
TINV_KEY = "tinv"
TINV_SCHEMA = 1
NEGATIVE_PREFIX = "Negative prompt:"


def _quote(value: object) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


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


def png_info(parameters: str, tinv: Mapping[str, Any]) -> PngInfo:
    """The PNG text chunks for one image: A1111's ``parameters`` and tinv's JSON."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    # add_text writes tEXt for Latin-1 text and iTXt (UTF-8) otherwise, as A1111 does.
    info.add_text(PARAMETERS_KEY, parameters)
    info.add_text(TINV_KEY, json.dumps({"schema": TINV_SCHEMA, **tinv}, ensure_ascii=False, sort_keys=True))
    return info


def ti_hashes(concepts: Iterable[PromptConcept]) -> str | None:
    """A1111's ``TI hashes`` value: ``name: hash`` per embedding, joined by ``", "`` (quoted by
    ``format_parameters``, as A1111 quotes it); None when the prompt names none.

    The name is the word A1111 would load the embedding by, the file stem of tinv's a1111 export (the entry's
    name), with ``:`` and ``,`` removed as A1111 removes them; the hash is the first 12 hex digits of the sha256
    of that export's bytes (``transfer.a1111_hash``), which is what A1111 computes for the file it loaded.
    """
    from tinv_cli.registry.transfer import a1111_hash

    seen: dict[str, str] = {}
    for concept in concepts:
        name = concept.entry.name.replace(":", "").replace(",", "")
        seen.setdefault(name, a1111_hash(concept.entry))
    return ", ".join(f"{name}: {short}" for name, short in seen.items()) or None


def model_hash(base: str) -> str | None:
    """A1111's ``Model hash`` (10 hex digits) of a single-file checkpoint; None for other models."""
    try:
        from tinv_cli.models.model_hash import model_hash as checkpoint_hash
    except ImportError:  # a tree without single-file checkpoint support: there is no file to hash
        return None
    return checkpoint_hash(base)
