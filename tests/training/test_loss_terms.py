"""The training methods beyond the paper's objective, each against its own definition: min-SNR-gamma weighting
(diffusers' train_text_to_image.py), the masked loss, norm control, and initialisation from the text encoder."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from tests.tiny import build_tiny_pipeline, build_tiny_sdxl_pipeline
from tinv_cli.families.sd import SD
from tinv_cli.project.config import Concept
from tinv_cli.training import loss_terms
from tinv_cli.training.inversion import diffusion_loss, encoder_vectors, initial_vectors


def _loss_inputs(prediction_type: str) -> tuple:
    pipe = build_tiny_pipeline(prediction_type=prediction_type)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    generator = torch.Generator().manual_seed(4)
    latents = torch.randn(3, 4, 8, 8, generator=generator)
    noise = torch.randn(3, 4, 8, 8, generator=generator)
    timesteps = torch.tensor([3, 400, 990])
    ids = pipe.tokenizer(
        ["a photo of a toy"] * 3, padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    return pipe, scheduler, latents, noise, timesteps, ids


def _loss(prediction_type: str, **options: object) -> torch.Tensor:
    pipe, scheduler, latents, noise, timesteps, ids = _loss_inputs(prediction_type)
    with torch.no_grad():
        return diffusion_loss(
            pipe.unet, SD, (pipe.text_encoder,), scheduler, latents, noise, timesteps, [ids], {}, **options
        )


def _diffusers_min_snr(prediction_type: str, gamma: float) -> torch.Tensor:
    """train_text_to_image.py's min-SNR loss, written out as it does it."""
    pipe, scheduler, latents, noise, timesteps, ids = _loss_inputs(prediction_type)
    with torch.no_grad():
        noisy = scheduler.add_noise(latents, noise, timesteps)
        hidden = pipe.text_encoder(ids)[0]
        model_pred = pipe.unet(noisy, timesteps, hidden).sample
    target = noise if prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, timesteps)
    snr = compute_snr(scheduler, timesteps)
    mse_loss_weights = torch.stack([snr, gamma * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
    if prediction_type == "epsilon":
        mse_loss_weights = mse_loss_weights / snr
    else:
        mse_loss_weights = mse_loss_weights / (snr + 1)
    loss = F.mse_loss(model_pred.float(), target.float(), reduction="none")
    loss = loss.mean(dim=list(range(1, len(loss.shape)))) * mse_loss_weights
    return loss.mean()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_gamma_is_diffusers_train_text_to_image_weighting(prediction_type: str) -> None:
    ours = _loss(prediction_type, min_snr_gamma=5.0)
    torch.testing.assert_close(ours, _diffusers_min_snr(prediction_type, 5.0))
    assert not torch.equal(ours, _loss(prediction_type))  # the weights do change the loss


def test_min_snr_weights_by_hand() -> None:
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    timesteps = torch.tensor([0, 500, 999])
    alpha_bar = scheduler.alphas_cumprod[timesteps]
    snr = alpha_bar / (1 - alpha_bar)
    expected = torch.minimum(snr, torch.tensor(5.0)) / snr
    torch.testing.assert_close(loss_terms.min_snr_weights(scheduler, timesteps, 5.0), expected)
    v = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    torch.testing.assert_close(
        loss_terms.min_snr_weights(v, timesteps, 5.0), torch.minimum(snr, torch.tensor(5.0)) / (snr + 1)
    )


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_an_all_white_mask_gives_exactly_the_unmasked_loss(prediction_type: str) -> None:
    plain = _loss(prediction_type)
    assert torch.equal(_loss(prediction_type, mask=torch.ones(3, 1, 8, 8)), plain)


def test_a_mask_keeps_only_the_learned_pixels() -> None:
    generator = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 4, 4, 4, generator=generator), torch.randn(2, 4, 4, 4, generator=generator)
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, :, :, :2] = 1  # the left half of the first image; nothing of the second
    error = (pred - target) ** 2
    expected = error[0, :, :, :2].mean()
    torch.testing.assert_close(loss_terms.weighted_mse(pred, target, None, mask), expected)
    # Grey is a weight between: a 0.5 mask everywhere is the plain loss again (normalised by its mean).
    torch.testing.assert_close(
        loss_terms.weighted_mse(pred, target, None, torch.full((2, 1, 4, 4), 0.5)), error.mean()
    )


def test_keep_norm_rescales_each_row_to_the_vocabulary_mean_norm() -> None:
    table = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    target = loss_terms.vocabulary_norm(table)
    assert target == pytest.approx(float(torch.linalg.vector_norm(table, dim=1).mean()))
    new = torch.nn.Parameter(torch.randn(3, 8) * 7)
    direction = new.detach() / new.detach().norm(dim=1, keepdim=True)
    loss_terms.keep_norm([new], [target])
    torch.testing.assert_close(new.detach().norm(dim=1), torch.full((3,), target))
    torch.testing.assert_close(new.detach() / target, direction)  # only the length changed


def test_the_norm_penalty_and_its_gradient() -> None:
    a = torch.nn.Parameter(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))  # norms 5 and 1
    b = torch.nn.Parameter(torch.tensor([[0.0, 2.0, 0.0]]))  # norm 2
    penalty = loss_terms.norm_penalty([a, b], [2.0, 1.0], 0.5)
    # 0.5 * (mean((5-2)^2, (1-2)^2) + (2-1)^2) = 0.5 * (5 + 1)
    assert float(penalty.detach()) == pytest.approx(3.0)
    penalty.backward()
    # d/dv of w * mean((|v| - t)^2) = w * 2 (|v| - t) v/|v| / rows
    torch.testing.assert_close(
        a.grad, torch.tensor([[0.5 * 2 * 3 * 0.6 / 2, 0.5 * 2 * 3 * 0.8 / 2], [0, -0.5]])
    )


def _concept(**kw: object) -> Concept:
    fields = {"name": "t", "token": "<t>", "images": Path("."), "initializer": "toy cat", **kw}
    return Concept(**fields)  # type: ignore[arg-type]


def test_encoder_init_is_the_final_layer_output_at_the_initializer_positions() -> None:
    pipe = build_tiny_pipeline()
    tokenizer, encoder = copy.deepcopy(pipe.tokenizer), pipe.text_encoder
    ids = tokenizer(["toy cat"]).input_ids[0]  # start, toy, cat, end
    with torch.no_grad():
        hidden = encoder(torch.tensor([ids])).last_hidden_state[0]
    table = encoder.get_input_embeddings().weight
    one = initial_vectors(table, _concept(init="encoder"), tokenizer, seed=0, text_encoder=encoder)
    torch.testing.assert_close(one, hidden[1:3].mean(dim=0, keepdim=True))
    two = initial_vectors(table, _concept(init="encoder", vectors=2), tokenizer, seed=0, text_encoder=encoder)
    torch.testing.assert_close(two, hidden[1:3])
    # Not the input rows: the encoder's output is another vector.
    words = initial_vectors(table, _concept(vectors=2), tokenizer, seed=0)
    assert not torch.allclose(two, words)


def test_encoder_init_for_each_sdxl_encoder() -> None:
    pipe = build_tiny_sdxl_pipeline()
    for tokenizer, encoder in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
        ids = tokenizer(["toy"]).input_ids[0]
        with torch.no_grad():
            expected = encoder(torch.tensor([ids])).last_hidden_state[0, 1:2]
        width = encoder.get_input_embeddings().weight.shape[1]
        got = encoder_vectors(encoder, tokenizer, ids[1:2])
        assert got.shape == (1, width)
        torch.testing.assert_close(got, expected)
