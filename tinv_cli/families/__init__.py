"""The model families tinv knows, and how a model or an embedding finds its family.

``base.py`` is the interface; ``sd.py`` and ``sdxl.py`` implement it. Everything else in tinv asks the family a
model or an embedding belongs to instead of testing which one it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tinv_cli.errors import ModelError
from tinv_cli.families.base import Family, ModelFiles, Variant
from tinv_cli.families.sd import SD
from tinv_cli.families.sdxl import SDXL

# Asked in this order: a model matches the first family that claims it.
FAMILIES: tuple[Family, ...] = (SDXL, SD)


def for_pipeline(pipe: Any) -> Family:
    """The family of a loaded pipeline; ModelError for a pipeline with no tokenizer and text encoder."""
    for family in FAMILIES:
        if family.matches_pipeline(pipe):
            return family
    raise ModelError("this pipeline has no text encoder and tokenizer", "use a text-to-image model (--model)")


def for_files(files: ModelFiles) -> Family | None:
    """The family of a model from its configuration files, before any weights load; None if none claims it."""
    return next((family for family in FAMILIES if family.matches_files(files)), None)


def for_checkpoint(shapes: Mapping[str, tuple[int, ...]]) -> tuple[Family, Variant] | None:
    """The family and variant of a single-file checkpoint from its tensor names and shapes (no weights)."""
    for family in FAMILIES:
        found = family.matches_checkpoint(shapes)
        if found is not None:
            return family, found
    return None


def variant(widths: Sequence[int]) -> Variant | None:
    """The known model whose text encoders have these widths (SD 1.x for ``(768,)``), or None."""
    widths = tuple(widths)
    for family in FAMILIES:
        for known in family.variants:
            if known.widths == widths:
                return known
    return None


def variant_by_id(variant_id: str | None) -> Variant | None:
    return next((v for family in FAMILIES for v in family.variants if v.id == variant_id), None)


def for_widths(widths: Sequence[int]) -> Family:
    """The family whose embeddings have these widths: the family of the known variant, else (models of other
    sizes, such as the test suite's tiny ones) the first family with that many text encoders."""
    widths = tuple(widths)
    for family in FAMILIES:
        if any(known.widths == widths for known in family.variants):
            return family
    for family in FAMILIES:
        if len(family.encoders) == len(widths):
            return family
    raise ModelError(
        f"no model family has {len(widths)} text encoders",
        "tinv knows " + ", ".join(family.label for family in FAMILIES),
    )


def file_keys(family: Family) -> tuple[str, ...] | None:
    """The keys of a family's embedding files, one per text encoder (SDXL: ``clip_l``, ``clip_g``); None for a
    family whose files hold one tensor (under the token, or a tool's own key)."""
    keys = tuple(encoder.file_key for encoder in family.encoders)
    return None if any(key is None for key in keys) else keys  # type: ignore[return-value]


def for_file_keys(keys: Sequence[str]) -> Family | None:
    """The family whose embedding-file keys appear among ``keys``, or None (a file of another layout)."""
    for family in FAMILIES:
        own = file_keys(family)
        if own is not None and any(key in keys for key in own):
            return family
    return None


def describe_widths(widths: Sequence[int]) -> str:
    """Human wording such as ``768-wide text encoder (SD 1.x)`` or ``768 + 1280-wide text encoders (SDXL)``."""
    known = variant(widths)
    label = f" ({known.label})" if known else ""
    if len(widths) == 1:
        return f"{widths[0]}-wide text encoder{label}"
    return " + ".join(str(w) for w in widths) + f"-wide text encoders{label}"
