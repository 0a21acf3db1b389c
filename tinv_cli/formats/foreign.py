"""Embedding layouts of models tinv reads and writes back but does not train or sample: Flux.

diffusers' advanced Flux script and OneTrainer save a Flux embedding as ``{clip_l: [n, 768], t5: [n, 4096]}``.
tinv has no Flux family, so such a file is kept as it is: its vectors in the layout's key order, recorded as
this layout (``tinv list``/``show`` say "Flux (clip_l + t5)"), exported back under the same keys. Training or
sampling it needs a Flux model, which tinv does not load; ``refusal`` says so in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tinv_cli import families
from tinv_cli.errors import ModelError


@dataclass(frozen=True)
class Layout:
    id: str  # recorded in tinv.json as the entry's "family"
    label: str  # "Flux (clip_l + t5)"
    keys: tuple[str, ...]  # one per text encoder, in the order of the embedding's vectors
    widths: tuple[int, ...]
    modelspec_architecture: str
    modelspec_implementation: str


def single_encoder_key() -> str:
    """The key OneTrainer's LoRA bundles give an SD 1.x embedding's one tensor: CLIP ViT-L's."""
    return _clip_l_key()


def _clip_l_key() -> str:
    """The key files give CLIP ViT-L's vectors: SDXL's first text encoder, and Flux's."""
    sdxl = families.variant_by_id("sdxl")
    keys = families.file_keys(families.for_widths(sdxl.widths)) if sdxl else None
    if not keys:
        raise ModelError("no model family keys a CLIP ViT-L text encoder's vectors")
    return keys[0]


def layouts() -> tuple[Layout, ...]:
    clip_l = _clip_l_key()
    return (
        Layout(
            "flux",
            f"Flux ({clip_l} + t5)",
            (clip_l, "t5"),
            (768, 4096),
            "flux-1",  # kohya's id for a Flux.1 model of unknown kind (dev, schnell)
            "https://github.com/black-forest-labs/flux",
        ),
    )


def for_keys(keys: Sequence[str]) -> Layout | None:
    """The layout whose keys are exactly ``keys`` (in any order), or None."""
    return next((layout for layout in layouts() if set(layout.keys) == set(keys)), None)


def for_widths(widths: Sequence[int]) -> Layout | None:
    return next((layout for layout in layouts() if layout.widths == tuple(widths)), None)


def for_id(layout_id: str | None) -> Layout | None:
    return next((layout for layout in layouts() if layout.id == layout_id), None)


def refusal(widths: Sequence[int], action: str) -> ModelError | None:
    """The error for ``action`` ("sample", "train") on an embedding of a foreign layout; None for the others."""
    layout = for_widths(widths)
    if layout is None:
        return None
    return ModelError(
        f"this is a {layout.label} embedding; tinv cannot {action} with it: it has no Flux model support",
        "use it in a tool that runs Flux (ComfyUI, OneTrainer); tinv imports, lists and exports it",
    )
