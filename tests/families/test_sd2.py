"""SD 2.x: a 1024-wide text encoder and v-prediction. The training loss must use the velocity target
v = sqrt(alpha_bar_t) * noise - sqrt(1 - alpha_bar_t) * x0, written out here from the scheduler's alphas_cumprod."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import Recorder, make_project
from tests.tiny import build_tiny_pipeline, build_tiny_sdxl_pipeline
from tinv_cli.families import sdxl
from tinv_cli.families.sd import SD
from tinv_cli.families.sdxl import SDXL
from tinv_cli.project.load import load_project
from tinv_cli.registry.store import Registry
from tinv_cli.training import inversion
from tinv_cli.training.recipe import train
from tinv_cli.training.request import StartInfo, TrainRequest


def _by_hand(
    scheduler: Any, predict: Any, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(MSE against the v target, MSE against the noise) with every term computed here, not by the scheduler."""
    alpha_bar = scheduler.alphas_cumprod.to(latents.device)[timesteps].view(-1, 1, 1, 1)
    alpha, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    noisy = alpha * latents + sigma * noise
    velocity = alpha * noise - sigma * latents
    pred = predict(noisy).float()
    return ((pred - velocity) ** 2).mean(), ((pred - noise) ** 2).mean()


def _ids(tokenizer: Any, prompts: list[str]) -> torch.Tensor:
    return tokenizer(
        prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_v_prediction_loss_is_the_velocity_formula(family: str) -> None:
    from diffusers import DDPMScheduler

    generator = torch.Generator().manual_seed(4)
    latents = torch.randn(2, 4, 16, 16, generator=generator)
    noise = torch.randn(2, 4, 16, 16, generator=generator)
    timesteps = torch.tensor([50, 900])  # little noise and mostly noise: v is far from eps at both ends
    prompts = ["a photo of a cat", "a red toy"]
    if family == "sd2":
        pipe = build_tiny_pipeline(1024, prediction_type="v_prediction")
        scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        ids = _ids(pipe.tokenizer, prompts)
        with torch.no_grad():
            loss = inversion.diffusion_loss(
                pipe.unet, SD, (pipe.text_encoder,), scheduler, latents, noise, timesteps, [ids], {}
            )
            hidden = pipe.text_encoder(ids)[0]
            v_loss, eps_loss = _by_hand(
                scheduler, lambda x: pipe.unet(x, timesteps, hidden).sample, latents, noise, timesteps
            )
    else:
        pipe = build_tiny_sdxl_pipeline(prediction_type="v_prediction")
        scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        encoders = (pipe.text_encoder, pipe.text_encoder_2)
        ids2 = (_ids(pipe.tokenizer, prompts), _ids(pipe.tokenizer_2, prompts))
        times = sdxl.time_ids([(32, 32)] * 2, [(0, 0, 32, 32)] * 2, 32)[:, 0]
        with torch.no_grad():
            loss = inversion.diffusion_loss(
                pipe.unet, SDXL, encoders, scheduler, latents, noise, timesteps, ids2, {"time_ids": times}
            )
            hidden, pooled = sdxl.encode_text(encoders, ids2)
            added = {"text_embeds": pooled, "time_ids": times}
            v_loss, eps_loss = _by_hand(
                scheduler,
                lambda x: pipe.unet(x, timesteps, hidden, added_cond_kwargs=added).sample,
                latents,
                noise,
                timesteps,
            )
    assert scheduler.config.prediction_type == "v_prediction"
    torch.testing.assert_close(loss, v_loss, rtol=1e-5, atol=1e-6)
    assert abs(float(v_loss) - float(eps_loss)) > 1e-3  # the check tells the two targets apart


@pytest.mark.slow
def test_training_an_sd2_v_model_reports_the_v_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real run on a 1024-wide v-prediction pipeline: the loss each step computes is the v formula, evaluated
    on that step's own latents, noise and timesteps before the optimizer moves anything."""
    pipe = build_tiny_pipeline(1024, prediction_type="v_prediction")
    real_loss = inversion.diffusion_loss
    seen: list[tuple[float, float, float]] = []

    def checked(
        unet: Any,
        family: Any,
        text_encoders: Any,
        scheduler: Any,
        latents: Any,
        noise: Any,
        timesteps: Any,
        ids: Any,
        extras: Any,
        **options: Any,
    ) -> Any:
        with torch.no_grad():
            hidden = text_encoders[0](ids[0])[0]
            v_loss, eps_loss = _by_hand(
                scheduler, lambda x: unet(x, timesteps, hidden).sample, latents, noise, timesteps
            )
        loss = real_loss(
            unet, family, text_encoders, scheduler, latents, noise, timesteps, ids, extras, **options
        )
        seen.append((float(loss.detach()), float(v_loss), float(eps_loss)))
        return loss

    monkeypatch.setattr(inversion, "diffusion_loss", checked)
    project = make_project(tmp_path, tmp_path / "unused", train={"steps": 2, "learning_rate": 5e-3})
    starts: list[StartInfo] = []
    recorder = Recorder()
    recorder.on_start = starts.append  # type: ignore[method-assign]
    summary = train(TrainRequest(load_project(project), "cat-toy"), recorder, pipeline=pipe)
    assert starts[0].model == "1024-wide text encoder (SD 2.x), v-prediction"  # the family, as detected

    assert len(seen) == 2
    for loss, v_loss, eps_loss in seen:
        assert loss == pytest.approx(v_loss, rel=1e-5) and abs(v_loss - eps_loss) > 1e-3
    assert recorder.losses[2] == pytest.approx((seen[0][0] + seen[1][0]) / 2, rel=1e-6)
    entry = Registry().get(summary.entry)
    assert (entry.widths, entry.family) == ((1024,), "sd2")
