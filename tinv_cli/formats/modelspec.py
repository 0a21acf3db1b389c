"""kohya's ``modelspec.*`` safetensors metadata (Stability AI's ModelSpec): written into every safetensors export,
read from imported files.

What kohya's sd-scripts write for a textual inversion (``library/sai_model_spec.py``): the spec version, the
architecture (the base model's id and ``/textual-inversion``), the implementation, a title and the date; tinv
adds the trigger phrase (the token). The date is the entry's creation time, never the time of the export, so
the same entry exports to the same bytes (and A1111's hash of the file stays the same).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tinv_cli import families
from tinv_cli.embedding import Embedding

PREFIX = "modelspec."
SPEC_VERSION = "1.0.1"  # what kohya's sd-scripts write today (ModelSpec 1.0.1 added is_negative_embedding)
ADAPTER = "textual-inversion"
# kohya writes Stability AI's reference implementation for every textual inversion.
IMPLEMENTATION = "https://github.com/Stability-AI/generative-models"


def architecture(embedding: Embedding) -> str | None:
    """``stable-diffusion-v1/textual-inversion`` for an SD 1.x embedding; None for widths of no known model."""
    from tinv_cli.formats import foreign

    layout = foreign.for_widths(embedding.widths)
    if layout is not None:
        return f"{layout.modelspec_architecture}/{ADAPTER}"
    known = families.variant(embedding.widths)
    base = getattr(known, "modelspec_architecture", None) if known else None
    return f"{base}/{ADAPTER}" if base else None


def implementation(embedding: Embedding) -> str:
    from tinv_cli.formats import foreign

    layout = foreign.for_widths(embedding.widths)
    return layout.modelspec_implementation if layout is not None else IMPLEMENTATION


def metadata(embedding: Embedding, meta: Mapping[str, Any]) -> dict[str, str]:
    """The ``modelspec.*`` keys of an export of ``embedding``; ``meta``: ``title``, ``created``, ``negative``,
    ``encoder_layer`` (each optional)."""
    spec: dict[str, str] = {"sai_model_spec": SPEC_VERSION}
    arch = architecture(embedding)
    if arch is not None:
        spec["architecture"] = arch
    spec["implementation"] = implementation(embedding)
    spec["title"] = str(meta.get("title") or embedding.token)
    spec["trigger_phrase"] = embedding.token
    if meta.get("created"):
        spec["date"] = str(meta["created"])
    if meta.get("encoder_layer") is not None:
        spec["encoder_layer"] = str(meta["encoder_layer"])
    if meta.get("negative"):
        spec["is_negative_embedding"] = "true"
    return {PREFIX + key: value for key, value in spec.items()}


def read(metadata: Mapping[str, str]) -> dict[str, str]:
    """The ``modelspec.*`` entries of a file's safetensors metadata, without the prefix."""
    return {k[len(PREFIX) :]: str(v) for k, v in metadata.items() if k.startswith(PREFIX)}
