"""What SDXL adds to Textual Inversion training: two text encoders, a pooled embedding and size/crop time ids.

SD 1.x and 2.x condition the UNet on one text encoder's last hidden state. SDXL conditions it on

- the penultimate hidden states of both encoders (CLIP-L, 768 wide, and OpenCLIP-G, 1280 wide), side by side:
  ``[batch, 77, 768 + 1280]``;
- the second encoder's pooled, projected embedding (``text_embeds``, ``[batch, 1280]``);
- six "time ids" per image: its original (height, width), the top-left corner of the crop taken from it (in
  the frame of the image resized so the crop is ``resolution`` pixels), and the target (height, width).

A concept therefore holds one new vector set per encoder, and both are trained together: each encoder sees the
placeholder through its own tokenizer and its own new rows. This is what ``diffusers.StableDiffusionXLPipeline``
computes at inference, so a concept trained here is used at sampling exactly as it was trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tinv_cli.errors import ModelError

if TYPE_CHECKING:
    import torch

# SDXL's UNet config names its added conditioning so; SD 1.x and 2.x UNets have none.
ADDITION_EMBED_TYPE = "text_time"


@dataclass(frozen=True)
class Conditioning:
    """What SDXL training keeps on the device beside the cached latents, indexed like them."""

    input_ids_2: torch.Tensor  # [images, prompts, 77]: every prompt through the second tokenizer
    time_ids: torch.Tensor  # [images, 2, 6]: each image (index 0) and its mirror (index 1)


def is_sdxl(pipe: Any) -> bool:
    """True for a pipeline with SDXL's two text encoders."""
    return getattr(pipe, "text_encoder_2", None) is not None


def check_unet(unet: Any, base: str) -> None:
    """Refuses a two-encoder pipeline whose UNet does not take SDXL's pooled embedding and time ids."""
    if getattr(unet.config, "addition_embed_type", None) != ADDITION_EMBED_TYPE:
        raise ModelError(
            f"{base} has two text encoders but its UNet does not take SDXL's added conditioning",
            "tinv trains Stable Diffusion 1.x, 2.x and SDXL base models (--model)",
        )


def time_ids(
    original_sizes: Sequence[tuple[int, int]],
    crop_boxes: Sequence[tuple[int, int, int, int]],
    resolution: int,
) -> torch.Tensor:
    """SDXL's time ids of every training image and its mirror: float32 ``[N, 2, 6]``, each row
    ``(original height, original width, crop top, crop left, resolution, resolution)``.

    ``crop_boxes`` are ``(left, top, right, bottom)`` in the original image; the corner is given in the frame
    where that box is ``resolution`` pixels, as SDXL's training resized, then cropped. The mirror's crop starts
    where the box ends, counted from the other side.
    """
    import torch

    rows = []
    for (height, width), (left, top, right, bottom) in zip(original_sizes, crop_boxes, strict=True):
        scale_x, scale_y = resolution / (right - left), resolution / (bottom - top)
        crop_top = round(top * scale_y)
        plain = (height, width, crop_top, round(left * scale_x), resolution, resolution)
        mirrored = (height, width, crop_top, round((width - right) * scale_x), resolution, resolution)
        rows.append([plain, mirrored])
    return torch.tensor(rows, dtype=torch.float32)


def encode_text(
    text_encoders: Sequence[Any], input_ids: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hidden, pooled)`` as ``StableDiffusionXLPipeline.encode_prompt`` computes them: the penultimate hidden
    states of every encoder concatenated on the last axis, and the last encoder's projected pooled output."""
    import torch

    hidden = []
    pooled = None
    for encoder, ids in zip(text_encoders, input_ids, strict=True):
        output = encoder(ids, output_hidden_states=True)
        hidden.append(output.hidden_states[-2])
        # CLIPTextModelWithProjection's first output is text_embeds; only the last encoder's is used.
        pooled = output[0]
    if pooled is None:
        raise ModelError("SDXL conditioning needs at least one text encoder")
    return torch.cat(hidden, dim=-1), pooled


def diffusion_loss(
    unet: Any,
    text_encoders: Sequence[Any],
    noise_scheduler: Any,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    input_ids: Sequence[torch.Tensor],
    time_ids: torch.Tensor,
) -> torch.Tensor:
    """``inversion.diffusion_loss`` with SDXL's conditioning: ``input_ids[i]`` ``[B, 77]`` for encoder ``i``,
    ``time_ids`` ``[B, 6]``. Every tensor is per sample, so a batch of any length works."""
    import torch.nn.functional as F

    from tinv_cli.training.inversion import training_target

    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    hidden, pooled = encode_text(text_encoders, input_ids)
    dtype = unet.dtype
    added = {"text_embeds": pooled.to(dtype), "time_ids": time_ids.to(dtype)}
    pred = unet(noisy.to(dtype), timesteps, hidden.to(dtype), added_cond_kwargs=added).sample
    target = training_target(noise_scheduler, latents, noise, timesteps)
    return F.mse_loss(pred.float(), target.float(), reduction="mean")
