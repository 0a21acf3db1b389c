"""The one seeded generation loop: ``tinv sample``, ``tinv eval`` and the shapes model's measurements all make
their images here, so a seed means the same image in each of them.

Image ``i`` is drawn from its own CPU generator seeded ``seeds[i]``: its starting noise and every noise the
sampler adds are the same whatever the batch it falls in and whatever the device (batched matrix products may
still round differently in the last float bit, which moves a rare pixel by one level).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.Image import Image

# Called after every denoising step of every batch with (steps done, steps in all).
StepCallback = Callable[[int, int], None]


def generate_images(
    pipe: Any,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    steps: int,
    guidance: float,
    size: tuple[int, int],
    negative_prompt: str | None = None,
    batch_size: int = 1,
    on_step: StepCallback | None = None,
) -> list[Image]:
    """One image per (prompt, seed) pair, ``batch_size`` at a time; ``size`` is (width, height).

    Prompts arrive as the pipeline must take them (multi-vector tokens spelled out by ``expand_prompt``). A batch
    of one prompt repeated is encoded once, as ``num_images_per_prompt`` does it.
    """
    import torch

    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    starts = range(0, len(seeds), batch_size)
    total = len(starts)
    done = 0

    def step_end(pipeline: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        nonlocal done
        done += 1
        if on_step is not None:
            on_step(done, pipeline.num_timesteps * total)
        return kwargs

    width, height = size
    images: list[Image] = []
    for start in starts:
        batch_prompts = list(prompts[start : start + batch_size])
        batch_seeds = seeds[start : start + batch_size]
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in batch_seeds]
        same = len(set(batch_prompts)) == 1
        negative = negative_prompt or None
        output = pipe(
            prompt=batch_prompts[0] if same else batch_prompts,
            # The pipeline wants the negative prompt in the prompt's form: one text, or one per prompt.
            negative_prompt=negative if same or negative is None else [negative] * len(batch_prompts),
            num_images_per_prompt=len(batch_prompts) if same else 1,
            generator=generators,
            num_inference_steps=steps,
            guidance_scale=guidance,
            width=width,
            height=height,
            callback_on_step_end=step_end,
        )
        images.extend(output.images)
    return images
