"""Stable Diffusion 1.x and 2.x: one CLIP text encoder, a UNet conditioned on its last hidden state.

SD 1.x has OpenAI's CLIP ViT-L (768 wide), SD 2.x OpenCLIP ViT-H (1024 wide), told apart by that width alone;
SD 2.x at 768 px predicts the velocity rather than the noise, which its scheduler config says
(``prediction_type``). Embedding files hold one ``[n, d]`` tensor, under the token (diffusers) or a tool's key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tinv_cli.errors import ModelError
from tinv_cli.families import ddpm
from tinv_cli.families.base import Encoder, ModelFiles, Variant

if TYPE_CHECKING:
    import torch

SD1_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# Key prefixes of the original (LDM) checkpoint layout: the UNet, SD 1.x's CLIP, SD 2.x's OpenCLIP, and SDXL's
# conditioner (which an SD checkpoint never has).
LDM_UNET = "model.diffusion_model."
LDM_CLIP = "cond_stage_model.transformer."
LDM_OPEN_CLIP = "cond_stage_model.model."
LDM_SDXL_TEXT = "conditioner.embedders."


class StableDiffusion:
    id: str = "sd"
    label: str = "SD 1.x/2.x"
    encoders: tuple[Encoder, ...] = (Encoder("tokenizer", "text_encoder"),)
    variants: tuple[Variant, ...] = (
        Variant(
            "sd1",
            "SD 1.x",
            "Stable Diffusion 1.x",
            (768,),
            "stable-diffusion",
            SD1_BASE,
            checkpoint_configs=(("epsilon", "stable-diffusion-v1-5"),),
            modelspec_architecture="stable-diffusion-v1",
        ),
        # The weights of 2.x at 768 px (v-prediction) and 2.x-base at 512 px (epsilon) look alike; v-prediction
        # is the default, as in diffusers' own single-file loading.
        Variant(
            "sd2",
            "SD 2.x",
            "Stable Diffusion 2.x",
            (1024,),
            "stable-diffusion",
            checkpoint_configs=(
                ("v_prediction", "stable-diffusion-2-1"),
                ("epsilon", "stable-diffusion-2-1-base"),
            ),
            # kohya's id for 2.x at 768 px (v-prediction), the default 2.x model; 2.x-base is "-v2-512".
            modelspec_architecture="stable-diffusion-v2-768-v",
        ),
    )
    prompt_embeds: tuple[str, ...] = ("prompt_embeds", "negative_prompt_embeds")

    def matches_files(self, files: ModelFiles) -> bool:
        return files.has("text_encoder") and not files.has("text_encoder_2")

    def matches_checkpoint(self, shapes: Mapping[str, tuple[int, ...]]) -> Variant | None:
        # A 4-channel UNet (an inpainting one takes 9) and one text encoder: OpenAI's CLIP (1.x) or OpenCLIP (2.x).
        conv_in = shapes.get(LDM_UNET + "input_blocks.0.0.weight")
        if conv_in is None or len(conv_in) != 4 or conv_in[1] != 4:
            return None
        if any(key.startswith(LDM_SDXL_TEXT) for key in shapes):
            return None
        if LDM_CLIP + "text_model.embeddings.token_embedding.weight" in shapes:
            return self.variants[0]
        if LDM_OPEN_CLIP + "token_embedding.weight" in shapes:
            return self.variants[1]
        return None

    def matches_pipeline(self, pipe: Any) -> bool:
        return (
            getattr(pipe, "text_encoder", None) is not None
            and getattr(pipe, "tokenizer", None) is not None
            and getattr(pipe, "text_encoder_2", None) is None
        )

    def check_pipeline(self, pipe: Any, base: str) -> None:
        missing = [name for name in ("unet", "vae", "scheduler") if getattr(pipe, name, None) is None]
        if missing:
            raise ModelError(
                f"{base} has no {', '.join(missing)}", "use a Stable Diffusion text-to-image model"
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
        return {}

    def conditioning(
        self,
        text_encoders: Sequence[Any],
        input_ids: Sequence[torch.Tensor],
        extras: Mapping[str, torch.Tensor],
        dtype: torch.dtype,
    ) -> dict[str, Any]:
        (encoder,), (ids,) = text_encoders, input_ids
        return {"encoder_hidden_states": encoder(ids)[0].to(dtype)}

    def pipeline(self, modules: Mapping[str, Any], scheduler: Any) -> Any:
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=modules["vae"],
            text_encoder=modules["text_encoder"],
            tokenizer=modules["tokenizer"],
            unet=modules["unet"],
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )


SD = StableDiffusion()
