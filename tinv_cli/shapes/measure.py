"""Measurements of the shapes model: how often its samples show what the prompt asks for.

``prompt_fidelity`` samples every in-vocabulary ``colour shape`` prompt and lets the judge score each sample;
``accuracy`` scores any list of images against one target label. Both run the pipeline as ``tinv sample`` does
(the same scheduler choice, steps and guidance), so the figures describe what a user gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tinv_cli.shapes import world

if TYPE_CHECKING:
    from PIL import Image

    from tinv_cli.shapes.judge import Judge

PROMPT = "a photo of a {}"


@dataclass(frozen=True)
class PromptScore:
    prompt: str
    colour: str
    shape: str
    samples: int
    correct: int  # colour and shape both match
    colour_correct: int
    shape_correct: int


def generate(
    pipe: Any,
    prompts: Sequence[str],
    *,
    steps: int,
    guidance: float,
    seed: int,
    batch: int = 64,
    size: int = world.SIZE,
) -> list[Image.Image]:
    """One image per prompt, seeded per position so a batch size never changes an image."""
    import torch

    images: list[Image.Image] = []
    device = pipe.unet.device
    side = size // pipe.vae_scale_factor
    for start in range(0, len(prompts), batch):
        chunk = list(prompts[start : start + batch])
        generators = [torch.Generator(device="cpu").manual_seed(seed + start + i) for i in range(len(chunk))]
        latents = torch.stack(
            [torch.randn(pipe.unet.config.in_channels, side, side, generator=g) for g in generators]
        ).to(device=device, dtype=pipe.unet.dtype)
        out = pipe(
            chunk,
            num_inference_steps=steps,
            guidance_scale=guidance,
            latents=latents,
            height=size,
            width=size,
        )
        images.extend(out.images)
    return images


def prompt_fidelity(
    pipe: Any, judge: Judge, *, per_prompt: int, steps: int = 20, guidance: float = 7.5, seed: int = 0
) -> list[PromptScore]:
    """Judge ``per_prompt`` samples of each of the 30 ``a photo of a COLOUR SHAPE`` prompts."""
    pairs = [(colour, shape) for colour in world.COLOURS for shape in world.SHAPES]
    prompts = [PROMPT.format(f"{c} {s}") for c, s in pairs for _ in range(per_prompt)]
    verdicts = judge.classify(generate(pipe, prompts, steps=steps, guidance=guidance, seed=seed))
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
