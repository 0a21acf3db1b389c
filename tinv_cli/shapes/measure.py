"""Measurements of the shapes model: how often its samples show what the prompt asks for.

``prompt_fidelity`` samples every in-vocabulary ``colour shape`` prompt and lets the judge score each sample;
``accuracy`` scores any list of images against one target label. Both run the pipeline as ``tinv sample`` does
(the same scheduler choice, steps and guidance), so the figures describe what a user gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tinv_cli.sampling.denoise import generate_images
from tinv_cli.shapes import world

if TYPE_CHECKING:
    from PIL import Image

    from tinv_cli.shapes.judge import Judge

PROMPT = "a photo of a {}"
BATCH = 64  # images per pipeline call: 32 px images, so a batch this size is small


@dataclass(frozen=True)
class PromptScore:
    prompt: str
    colour: str
    shape: str
    samples: int
    correct: int  # colour and shape both match
    colour_correct: int
    shape_correct: int


def prompt_fidelity(
    pipe: Any, judge: Judge, *, per_prompt: int, steps: int = 20, guidance: float = 7.5, seed: int = 0
) -> list[PromptScore]:
    """Judge ``per_prompt`` samples of each of the 30 ``a photo of a COLOUR SHAPE`` prompts."""
    pairs = [(colour, shape) for colour in world.COLOURS for shape in world.SHAPES]
    prompts = [PROMPT.format(f"{c} {s}") for c, s in pairs for _ in range(per_prompt)]
    images = generate_images(
        pipe,
        prompts,
        [seed + i for i in range(len(prompts))],
        steps=steps,
        guidance=guidance,
        size=(world.SIZE, world.SIZE),
        batch_size=BATCH,
    )
    verdicts = judge.classify(images)
    scores = []
    for n, (colour, shape) in enumerate(pairs):
        mine = verdicts[n * per_prompt : (n + 1) * per_prompt]
        scores.append(
            PromptScore(
                prompt=PROMPT.format(f"{colour} {shape}"),
                colour=colour,
                shape=shape,
                samples=per_prompt,
                correct=sum(v.colour == colour and v.shape == shape for v in mine),
                colour_correct=sum(v.colour == colour for v in mine),
                shape_correct=sum(v.shape == shape for v in mine),
            )
        )
    return scores


def accuracy(judge: Judge, images: Sequence[Image.Image], colour: str, shape: str) -> float:
    """The fraction of ``images`` the judge reads as a ``colour shape``."""
    verdicts = judge.classify(images)
    return sum(v.colour == colour and v.shape == shape for v in verdicts) / max(1, len(verdicts))
