"""Measurements of the shapes model: how often its samples show what the prompt asks for.

``prompt_fidelity`` samples every in-vocabulary ``colour shape`` prompt and lets the judge score each sample;
``accuracy`` scores any list of images against one target label; ``attribute_fidelity`` scores prompts that
name several attributes, one figure per attribute. ``judged_samples``, the sampling and reading they share,
runs the pipeline as ``tinv sample`` does (the same scheduler choice, steps and guidance), so the figures
describe what a user gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tinv_cli.sampling.denoise import generate_images
from tinv_cli.shapes import world

if TYPE_CHECKING:
    from PIL import Image

    from tinv_cli.shapes.judge import Judge, Judgement

PROMPT = "a photo of a {}"
BATCH = 64  # images per pipeline call: 32 px images, so a batch this size is small


def judged_samples(
    pipe: Any, judge: Judge, prompts: Sequence[str], seeds: Sequence[int], *, steps: int, guidance: float
) -> list[Judgement]:
    """One sample per (prompt, seed) at the judge's size, as ``tinv sample`` makes it, and what the judge reads."""
    images = generate_images(
        pipe, prompts, seeds, steps=steps, guidance=guidance, size=(judge.size, judge.size), batch_size=BATCH
    )
    return judge.classify(images)


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
    seeds = [seed + i for i in range(len(prompts))]
    verdicts = judged_samples(pipe, judge, prompts, seeds, steps=steps, guidance=guidance)
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


@dataclass(frozen=True)
class AttributeScore:
    """Of the samples of prompts that name an attribute, how many the judge reads with the named value."""

    attribute: str
    samples: int
    correct: int


def attribute_fidelity(
    pipe: Any,
    judge: Judge,
    prompts: Sequence[tuple[str, dict[str, str]]],
    *,
    per_prompt: int,
    steps: int = 20,
    guidance: float = 7.5,
    seed: int = 0,
) -> tuple[list[AttributeScore], float]:
    """Judge ``per_prompt`` samples of each (prompt, what it names) pair: per attribute, the samples showing the
    named value, and the fraction of samples showing every named value at once."""
    jobs = [(prompt, target) for prompt, target in prompts for _ in range(per_prompt)]
    seeds = [seed + i for i in range(len(jobs))]
    verdicts = judged_samples(pipe, judge, [p for p, _ in jobs], seeds, steps=steps, guidance=guidance)
    scores = []
    for name in judge.heads:
        named = [(v, t) for v, (_, t) in zip(verdicts, jobs, strict=True) if name in t]
        if named:
            scores.append(AttributeScore(name, len(named), sum(v.values[name] == t[name] for v, t in named)))
    whole = sum(v.matches(t) for v, (_, t) in zip(verdicts, jobs, strict=True)) / max(1, len(jobs))
    return scores, whole


def scenes_prompts() -> list[tuple[str, dict[str, str]]]:
    """builtin:scenes prompts naming every attribute: each colour and shape pair twice, as an object and as a
    style, the other attributes cycling so that each value is asked for equally often."""
    from tinv_cli.shapes import scenes

    prompts = []
    pairs = [(colour, shape) for colour in world.COLOURS for shape in world.SHAPES]
    grounds, sizes, fills = list(scenes.GROUNDS), list(scenes.SIZES), list(scenes.FILLS)
    for n, (colour, shape) in enumerate(pairs):
        ground, size, fill = grounds[n % 3], sizes[(n // 3) % 2], fills[(n // 6) % 2]
        target = {"colour": colour, "shape": shape, "background": ground, "size": size, "fill": fill}
        prompts.append((f"a photo of a {size} {colour} {fill} {shape} on {ground}", target))
        ground, fill = grounds[(n + 1) % 3], fills[(n // 6 + 1) % 2]
        style = {"colour": colour, "shape": shape, "background": ground, "fill": fill}
        prompts.append((f"a painting of a {colour} {shape} in the style of {fill} {ground}", style))
    return prompts
