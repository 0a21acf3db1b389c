"""The shapes models' networks: the VAE, text encoder and UNet a build trains, and the noise schedule.

Sizes follow a world's image side (32 px for both shipped worlds): the VAE maps it to a latent a quarter as
wide, and the UNet works on that latent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinv_cli.shapes import world

# stable-diffusion-v1-5's scheduler_config.json: tinv trains concepts with a DDPMScheduler of this config.
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}
MAX_TOKENS = 32


def make_vae(size: int = world.SIZE) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=size,
    )


def make_text_encoder(tokenizer: Any) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def make_unet(size: int = world.SIZE) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=size // 4,
        in_channels=4,
        out_channels=4,
        # Attention only at 4x4 (and in the mid block): at 8x8 it costs four times as much on a CPU and the
        # prompts here name one object, which the coarse level places well enough.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def scheduler_config(prediction_type: str = "epsilon", zero_terminal_snr: bool = False) -> dict[str, Any]:
    """SD 1.5's scheduler config with a prediction type and, optionally, zero terminal SNR."""
    config = {**SCHEDULER_CONFIG, "prediction_type": prediction_type}
    if zero_terminal_snr:
        config["rescale_betas_zero_snr"] = True
    return config


def save_pipeline(
    out: Path, vae: Any, scale: float, text_encoder: Any, tokenizer: Any, unet: Any, scheduler: dict[str, Any]
) -> None:
    """The trained parts as a diffusers StableDiffusionPipeline folder, sampling with DPM++ 2M."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    vae.register_to_config(scaling_factor=scale)
    pipe: Any = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DPMSolverMultistepScheduler.from_config(scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
