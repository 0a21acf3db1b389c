"""Stable Diffusion XL: two text encoders, a pooled embedding and size/crop time ids.

SD 1.x and 2.x condition the UNet on one text encoder's last hidden state. SDXL conditions it on

- the penultimate hidden states of both encoders (CLIP-L, 768 wide, and OpenCLIP-G, 1280 wide), side by side:
  ``[batch, 77, 768 + 1280]``;
- the second encoder's pooled, projected embedding (``text_embeds``, ``[batch, 1280]``);
- six "time ids" per image: its original (height, width), the top-left corner of the crop taken from it (in
  the frame of the image resized so the crop is ``resolution`` pixels), and the target (height, width).

A concept therefore holds one new vector set per encoder, and both are trained together: each encoder sees the
placeholder through its own tokenizer and its own new rows. This is what ``diffusers.StableDiffusionXLPipeline``
computes at inference, so a concept trained here is used at sampling exactly as it was trained. Embedding files
(kohya, A1111, ComfyUI, civitai) key the two sets ``clip_l`` and ``clip_g``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tinv_cli.errors import ModelError
from tinv_cli.families import ddpm
from tinv_cli.families.base import Encoder, ModelFiles, Variant

if TYPE_CHECKING:
    import torch

# SDXL's UNet config names its added conditioning so; SD 1.x and 2.x UNets have none.
ADDITION_EMBED_TYPE = "text_time"
TIME_IDS = "time_ids"
# Key prefixes of the original (LDM) checkpoint layout: the UNet and the conditioner's two text encoders.
LDM_UNET = "model.diffusion_model."
LDM_CLIP_L = "conditioner.embedders.0.transformer."
LDM_OPEN_CLIP_G = "conditioner.embedders.1.model."


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


class StableDiffusionXL:
    id: str = "sdxl"
    label: str = "SDXL"
    encoders: tuple[Encoder, ...] = (
        Encoder("tokenizer", "text_encoder", "clip_l"),
        Encoder("tokenizer_2", "text_encoder_2", "clip_g"),
    )
    variants: tuple[Variant, ...] = (
        Variant(
            "sdxl",
            "SDXL",
            "Stable Diffusion XL",
            (768, 1280),
            "stable-diffusion-xl",
            "stabilityai/stable-diffusion-xl-base-1.0",
            checkpoint_configs=(("epsilon", "stable-diffusion-xl-base-1.0"),),
            modelspec_architecture="stable-diffusion-xl-v1-base",
        ),
    )
    prompt_embeds: tuple[str, ...] = (
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    )

    def matches_files(self, files: ModelFiles) -> bool:
        unet = files.configs.get("unet") or {}
        return (
            files.has("text_encoder_2")
            and unet.get("addition_embed_type", ADDITION_EMBED_TYPE) == ADDITION_EMBED_TYPE
        )

    def matches_checkpoint(self, shapes: Mapping[str, tuple[int, ...]]) -> Variant | None:
        # CLIP-L as embedder 0 and OpenCLIP-G as embedder 1, and the UNet's added (pooled + time ids) embedding.
        # The refiner has OpenCLIP-G alone, as embedder 0: it is not a model concepts are trained on.
        conv_in = shapes.get(LDM_UNET + "input_blocks.0.0.weight")
        if conv_in is None or len(conv_in) != 4 or conv_in[1] != 4:
            return None
        if (
            LDM_CLIP_L + "text_model.embeddings.token_embedding.weight" in shapes
            and LDM_OPEN_CLIP_G + "token_embedding.weight" in shapes
            and LDM_UNET + "label_emb.0.0.weight" in shapes
        ):
            return self.variants[0]
        return None

    def matches_pipeline(self, pipe: Any) -> bool:
        return getattr(pipe, "text_encoder_2", None) is not None

    def check_pipeline(self, pipe: Any, base: str) -> None:
        names = ("tokenizer", "text_encoder", "tokenizer_2", "unet", "vae", "scheduler")
        missing = [name for name in names if getattr(pipe, name, None) is None]
        if missing:
            raise ModelError(
                f"{base} has no {', '.join(missing)}", "use a Stable Diffusion text-to-image model"
            )
        if getattr(pipe.unet.config, "addition_embed_type", None) != ADDITION_EMBED_TYPE:
            raise ModelError(
                f"{base} has two text encoders but its UNet does not take SDXL's added conditioning",
                "tinv trains Stable Diffusion 1.x, 2.x and SDXL base models (--model)",
            )

    def native_resolution(self, unet_config: Any, vae_config: Any) -> int:
        return ddpm.native_resolution(unet_config, vae_config)

    def noise_scheduler(self, scheduler_config: Any) -> Any:
        return ddpm.noise_scheduler(scheduler_config)

    def objective(self, noise_scheduler: Any) -> str:
        return ddpm.OBJECTIVES[ddpm.prediction_type(noise_scheduler)]

    def training_target(
        self, noise_scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        return ddpm.training_target(noise_scheduler, latents, noise, timesteps)

    def training_extras(
        self,
        original_sizes: Sequence[tuple[int, int]],
        crop_boxes: Sequence[tuple[int, int, int, int]],
        resolution: int,
    ) -> dict[str, torch.Tensor]:
        return {TIME_IDS: time_ids(original_sizes, crop_boxes, resolution)}

    def conditioning(
        self,
        text_encoders: Sequence[Any],
        input_ids: Sequence[torch.Tensor],
        extras: Mapping[str, torch.Tensor],
        dtype: torch.dtype,
    ) -> dict[str, Any]:
        hidden, pooled = encode_text(text_encoders, input_ids)
        added = {"text_embeds": pooled.to(dtype), "time_ids": extras[TIME_IDS].to(dtype)}
        return {"encoder_hidden_states": hidden.to(dtype), "added_cond_kwargs": added}

    def pipeline(self, modules: Mapping[str, Any], scheduler: Any) -> Any:
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline(
            vae=modules["vae"],
            text_encoder=modules["text_encoder"],
            text_encoder_2=modules["text_encoder_2"],
            tokenizer=modules["tokenizer"],
            tokenizer_2=modules["tokenizer_2"],
            unet=modules["unet"],
            scheduler=scheduler,
            add_watermarker=False,
        )


SDXL = StableDiffusionXL()
