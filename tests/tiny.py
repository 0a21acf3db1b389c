"""Tiny Stable Diffusion pipelines built in-process, for tests that need a real pipeline but no downloads.

The shapes follow SD 1.x (a CLIP text encoder, a cross-attention UNet, a 4-channel VAE, the SD 1.5 scheduler
settings) at a scale that builds in a fraction of a second on a laptop CPU. ``width`` is the text encoder's hidden
size, so 768 and 1024 give real-shaped embeddings (SD 1.x and SD 2.x concepts) while the rest stays tiny.
The tokenizer is the shipped one in ``tests/assets/tokenizer`` (see ``tests/assets/make_tokenizer.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

TOKENIZER_DIR = Path(__file__).resolve().parent / "assets" / "tokenizer"

# Latents are sample_size x sample_size; two VAE blocks halve the side once, so images are 32 x 32 pixels.
UNET_SAMPLE_SIZE = 16
IMAGE_SIZE = 32

# stable-diffusion-v1-5's scheduler_config.json; the diffusers textual inversion example trains with a
# DDPMScheduler made from this same config.
SCHEDULER_CONFIG: dict[str, object] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
}


def tiny_vae(**config: Any) -> Any:
    """The tiny pipelines' VAE (16x16 latents of 4 channels from 32x32 images), with ``config`` on top."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=IMAGE_SIZE,
        **config,
    )


def build_tiny_pipeline(
    width: int = 32, *, seed: int = 0, prediction_type: str = "epsilon"
) -> StableDiffusionPipeline:
    """A fresh, seeded StableDiffusionPipeline whose text encoder is ``width`` wide.

    The same arguments give bit-identical weights. The caller's global RNG state is left as it was.
    """
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=width,
                # Few layers and a small MLP keep even the 1024-wide encoder at a few million weights.
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=tokenizer.model_max_length,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        torch.manual_seed(seed + 1)
        unet = UNet2DConditionModel(
            sample_size=UNET_SAMPLE_SIZE,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            block_out_channels=(32, 64),
            layers_per_block=1,
            cross_attention_dim=width,
            attention_head_dim=4,
            norm_num_groups=32,
        )
        torch.manual_seed(seed + 2)
        vae = tiny_vae()
    scheduler = PNDMScheduler(**SCHEDULER_CONFIG, prediction_type=prediction_type)
    for model in (text_encoder, unet, vae):
        # from_pretrained hands back models in eval mode; match it so a built and a loaded pipeline agree.
        model.eval()
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_tiny_pipeline(
    folder: str | Path, width: int = 32, *, seed: int = 0, prediction_type: str = "epsilon"
) -> Path:
    """Saves ``build_tiny_pipeline(...)`` in diffusers layout; ``StableDiffusionPipeline.from_pretrained`` loads it
    offline."""
    folder = Path(folder)
    pipe = build_tiny_pipeline(width, seed=seed, prediction_type=prediction_type)
    pipe.save_pretrained(folder)
    return folder


# stabilityai/stable-diffusion-xl-base-1.0's scheduler_config.json (EulerDiscreteScheduler); training builds a
# DDPMScheduler from the same config, as the diffusers SDXL training examples do.
SDXL_SCHEDULER_CONFIG: dict[str, object] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
}
# SDXL embeds each of the six time ids (original size, crop top-left, target size) in this many dimensions
# (256 in the real model).
SDXL_TIME_EMBED_DIM = 8


def build_tiny_sdxl_pipeline(
    widths: tuple[int, int] = (32, 64), *, seed: int = 0, prediction_type: str = "epsilon"
) -> StableDiffusionXLPipeline:
    """A fresh, seeded StableDiffusionXLPipeline with SDXL's structure at toy scale.

    Two tokenizers (the shipped one; the second pads with ``!`` as SDXL's does) and two text encoders
    ``widths`` wide, the second a ``CLIPTextModelWithProjection`` whose projection gives the pooled text
    embedding; a UNet with SDXL's added conditioning (``text_time``: pooled embedding plus six time ids) and
    cross-attention over both encoders' states side by side (``widths[0] + widths[1]``); the SDXL scheduler.
    ``(768, 1280)`` gives real-shaped SDXL concepts while the rest stays tiny.
    """
    import torch
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR)
    tokenizer_2 = CLIPTokenizer.from_pretrained(TOKENIZER_DIR, pad_token="!")

    def encoder_config(width: int) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=64,
            # Two layers: the penultimate hidden state SDXL conditions on is then the first layer's output.
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            projection_dim=width,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(encoder_config(widths[0]))
        torch.manual_seed(seed + 1)
        text_encoder_2 = CLIPTextModelWithProjection(encoder_config(widths[1]))
        torch.manual_seed(seed + 2)
        unet = UNet2DConditionModel(
            sample_size=UNET_SAMPLE_SIZE,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(32, 64),
            layers_per_block=1,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            cross_attention_dim=widths[0] + widths[1],
            addition_embed_type="text_time",
            addition_time_embed_dim=SDXL_TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=6 * SDXL_TIME_EMBED_DIM + widths[1],
            norm_num_groups=32,
        )
        torch.manual_seed(seed + 3)
        vae = tiny_vae(scaling_factor=0.13025)  # SDXL's
    scheduler = EulerDiscreteScheduler(**SDXL_SCHEDULER_CONFIG, prediction_type=prediction_type)
    for model in (text_encoder, text_encoder_2, unet, vae):
        model.eval()
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )


def save_tiny_sdxl_pipeline(folder: str | Path, widths: tuple[int, int] = (32, 64), *, seed: int = 0) -> Path:
    """Saves ``build_tiny_sdxl_pipeline(...)`` in diffusers layout (``DiffusionPipeline.from_pretrained`` loads
    it offline as a StableDiffusionXLPipeline)."""
    folder = Path(folder)
    build_tiny_sdxl_pipeline(widths, seed=seed).save_pretrained(folder)
    return folder
