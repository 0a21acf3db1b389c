"""What the denoising-diffusion families (SD 1.x, 2.x, SDXL) share: a DDPM noise schedule and a target that
follows the scheduler's ``prediction_type``. A family trained by flow matching (SD 3.x, Flux) has its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tinv_cli.errors import ModelError

if TYPE_CHECKING:
    import torch

OBJECTIVES = {"epsilon": "noise prediction", "v_prediction": "v-prediction"}


def noise_scheduler(scheduler_config: Any) -> Any:
    """A DDPMScheduler from the model's scheduler config, as the diffusers training examples build it."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler_config)


def prediction_type(noise_scheduler: Any) -> str:
    prediction = noise_scheduler.config.prediction_type
    if prediction not in OBJECTIVES:
        raise ModelError(
            f"the base model's scheduler predicts {prediction!r}; tinv trains epsilon and v_prediction models",
            "use a Stable Diffusion 1.x, 2.x or SDXL base model",
        )
    return str(prediction)


def training_target(
    noise_scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """The noise for epsilon models, the velocity ``sqrt(alpha_bar_t) * noise - sqrt(1 - alpha_bar_t) * latents``
    for v-prediction ones (SD 2.x at 768 px)."""
    if prediction_type(noise_scheduler) == "epsilon":
        return noise
    return noise_scheduler.get_velocity(latents, noise, timesteps)


def native_resolution(unet_config: Any, vae_config: Any) -> int:
    """The UNet's latent side times the VAE's downsampling (2 per block after the first)."""
    return int(unet_config.sample_size) * 2 ** (len(vae_config.block_out_channels) - 1)
