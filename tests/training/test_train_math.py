"""The engineering changed speed, not math.

For the same images, noise, timesteps and latent sample, tinv's step (cached latents, a small fp32 parameter for
the new rows only) gives the loss, the gradient on the new vectors and the updated vectors of the reference
formulation: the diffusers textual inversion example's step, with the VAE encode inside the step, the whole
resized embedding matrix as the parameter, and the restore of every other row after the optimizer step.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from tests.tiny import build_tiny_pipeline
from tinv_cli.errors import ModelError
from tinv_cli.families.sd import SD
from tinv_cli.project.config import Concept
from tinv_cli.project.tokens import initializer_ids
from tinv_cli.training.inversion import (
    add_placeholder_tokens,
    diffusion_loss,
    embedding_with_new_rows,
    encode_latents,
    initial_vectors,
)

ADAM = {"lr": 5e-3, "betas": (0.9, 0.999), "weight_decay": 1e-2, "eps": 1e-8}


def _pixels(count: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(11)
    return torch.rand(count, 3, 32, 32, generator=generator) * 2 - 1


def _concept(**kw: object) -> Concept:
    fields = {"name": "t", "token": "<t>", "images": Path("."), "initializer": "toy", **kw}
    return Concept(**fields)  # type: ignore[arg-type]


def _fixed_draws(latent_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    noise = torch.randn(latent_shape, generator=generator)
    timesteps = torch.tensor([17, 803])
    return noise, timesteps


def _prompt_ids(tokenizer: object, vectors: int) -> torch.Tensor:
    placeholder = " ".join(["<t>"] + [f"<t>_{i}" for i in range(1, vectors)])
    prompts = [f"a photo of a {placeholder}", f"a rendering of a {placeholder}"]
    return tokenizer(
        prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids  # type: ignore[operator]


def _reference_step(prediction_type: str, vectors: int) -> dict[str, torch.Tensor]:
    """examples/textual_inversion/textual_inversion.py, one optimizer step, written out as it does it."""
    pipe = build_tiny_pipeline(prediction_type=prediction_type)
    tokenizer, text_encoder, vae, unet = pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.unet
    names = ["<t>"] + [f"<t>_{i}" for i in range(1, vectors)]
    tokenizer.add_tokens(names)
    placeholder_ids = tokenizer.convert_tokens_to_ids(names)
    initializer_id = tokenizer.encode("toy", add_special_tokens=False)[0]
    text_encoder.resize_token_embeddings(len(tokenizer))
    token_embeds = text_encoder.get_input_embeddings().weight.data
    with torch.no_grad():
        for token_id in placeholder_ids:
            token_embeds[token_id] = token_embeds[initializer_id].clone()
    vae.requires_grad_(False)
    unet.requires_grad_(False)
    # The example freezes the encoder, final layer norm and position embeddings by name; transformers 5 moved
    # them, so: everything but the token embedding.
    text_encoder.requires_grad_(False)
    text_encoder.get_input_embeddings().requires_grad_(True)
    text_encoder.train()
    optimizer = torch.optim.AdamW(text_encoder.get_input_embeddings().parameters(), **ADAM)
    orig_embeds_params = text_encoder.get_input_embeddings().weight.data.clone()
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    latents = vae.encode(_pixels()).latent_dist.sample(generator=torch.Generator().manual_seed(3)).detach()
    latents = latents * vae.config.scaling_factor
    noise, timesteps = _fixed_draws(tuple(latents.shape))
    noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
    encoder_hidden_states = text_encoder(_prompt_ids(tokenizer, vectors))[0]
    model_pred = unet(noisy_latents, timesteps, encoder_hidden_states).sample
    if noise_scheduler.config.prediction_type == "epsilon":
        target = noise
    else:
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
    loss.backward()
    weight = text_encoder.get_input_embeddings().weight
    grad = weight.grad[placeholder_ids].clone()
    optimizer.step()
    optimizer.zero_grad()
    index_no_updates = torch.ones((len(tokenizer),), dtype=torch.bool)
    index_no_updates[min(placeholder_ids) : max(placeholder_ids) + 1] = False
    with torch.no_grad():
        weight[index_no_updates] = orig_embeds_params[index_no_updates]
    return {
        "loss": loss.detach(),
        "grad": grad,
        "vectors": weight[placeholder_ids].detach().clone(),
        "others": weight[index_no_updates].detach().clone(),
    }


def _tinv_step(prediction_type: str, vectors: int, *, checkpointing: bool = False) -> dict[str, torch.Tensor]:
    pipe = build_tiny_pipeline(prediction_type=prediction_type)
    tokenizer = copy.deepcopy(pipe.tokenizer)
    text_encoder, vae, unet = pipe.text_encoder, pipe.vae, pipe.unet
    new_ids = add_placeholder_tokens(tokenizer, "<t>", vectors)
    base = text_encoder.get_input_embeddings()
    base_before = base.weight.detach().clone()
    init = initial_vectors(base.weight, _concept(vectors=vectors), tokenizer, seed=0)
    for module in (text_encoder, unet, vae):
        module.requires_grad_(False)
    rows = embedding_with_new_rows(base, new_ids, init)
    text_encoder.set_input_embeddings(rows)
    text_encoder.train()
    if checkpointing:
        unet.enable_gradient_checkpointing()
        text_encoder.gradient_checkpointing_enable()
        unet.train()
    optimizer = torch.optim.AdamW([rows.new], **ADAM)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    mean, std = encode_latents(vae, _pixels())
    sample = torch.randn(mean[:, 0].shape, generator=torch.Generator().manual_seed(3))
    latents = (mean[:, 0] + std[:, 0] * sample) * vae.config.scaling_factor
    noise, timesteps = _fixed_draws(tuple(latents.shape))
    loss = diffusion_loss(
        unet,
        SD,
        (text_encoder,),
        noise_scheduler,
        latents,
        noise,
        timesteps,
        [_prompt_ids(tokenizer, vectors)],
        {},
    )
    loss.backward()
    grad = rows.new.grad.clone()
    optimizer.step()
    assert [p for p in text_encoder.parameters() if p.requires_grad] == [rows.new]
    assert torch.equal(base.weight, base_before)  # the base table is never written
    return {
        "loss": loss.detach(),
        "grad": grad,
        "init": init,
        "vectors": rows.new.detach().clone(),
        "others": base_before,
    }


@pytest.mark.parametrize(("prediction_type", "vectors"), [("epsilon", 1), ("v_prediction", 2)])
def test_loss_gradient_and_update_match_the_reference(prediction_type: str, vectors: int) -> None:
    reference = _reference_step(prediction_type, vectors)
    ours = _tinv_step(prediction_type, vectors)
    assert reference["grad"].abs().max() > 0  # the comparison is not between zeros
    torch.testing.assert_close(ours["loss"], reference["loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["grad"], reference["grad"], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(ours["vectors"], reference["vectors"], rtol=1e-5, atol=1e-7)
    assert not torch.equal(ours["vectors"], ours["init"])  # the step moved the vectors
    # Every other row: the reference restores it after the step; tinv never touched it. Both are the base rows.
    assert torch.equal(reference["others"], ours["others"])


def test_gradient_checkpointing_changes_memory_not_math() -> None:
    plain = _tinv_step("epsilon", 1)
    checkpointed = _tinv_step("epsilon", 1, checkpointing=True)
    torch.testing.assert_close(checkpointed["loss"], plain["loss"], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(checkpointed["grad"], plain["grad"], rtol=1e-5, atol=1e-8)


def test_cached_mirror_is_the_encoded_mirror() -> None:
    vae = build_tiny_pipeline().vae
    pixels = _pixels(3)
    mean, std = encode_latents(vae, pixels, batch=2)
    with torch.no_grad():
        mirrored = vae.encode(torch.flip(pixels, dims=[-1])).latent_dist
    assert mean.shape == (3, 2, 4, 16, 16)
    torch.testing.assert_close(mean[:, 1], mirrored.mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(std[:, 1], mirrored.std, rtol=1e-5, atol=1e-6)


def test_new_rows_module_reads_both_tables() -> None:
    base = torch.nn.Embedding(10, 4)
    new = torch.arange(8, dtype=torch.float32).reshape(2, 4)
    rows = embedding_with_new_rows(base, [10, 11], new)
    ids = torch.tensor([[1, 10, 11, 9]])
    out = rows(ids)
    assert torch.equal(out[0, 0], base.weight[1]) and torch.equal(out[0, 3], base.weight[9])
    assert torch.equal(out[0, 1], new[0]) and torch.equal(out[0, 2], new[1])
    out.sum().backward()
    assert base.weight.grad is not None  # the base is not frozen by the module itself...
    assert torch.equal(rows.new.grad, torch.ones(2, 4))  # ...and each new row gets its own gradient


def test_half_precision_base_keeps_fp32_rows() -> None:
    base = torch.nn.Embedding(10, 4).to(torch.bfloat16)
    rows = embedding_with_new_rows(base, [10], torch.ones(1, 4))
    assert rows.new.dtype == torch.float32
    assert rows(torch.tensor([[10, 3]])).dtype == torch.bfloat16


def test_placeholder_that_is_already_a_word_is_refused() -> None:
    tokenizer = build_tiny_pipeline().tokenizer
    for taken in ("toy", "<|endoftext|>"):
        with pytest.raises(ModelError, match="already a word"):
            add_placeholder_tokens(copy.deepcopy(tokenizer), taken, 1)
    ids = add_placeholder_tokens(tokenizer, "<cat-toy>", 3)
    assert ids == list(range(len(tokenizer) - 3, len(tokenizer)))
    with pytest.raises(ModelError, match="already a word"):
        add_placeholder_tokens(tokenizer, "<cat-toy>", 1)  # added once, refused the second time


def test_initializers() -> None:
    pipe = build_tiny_pipeline()
    tokenizer, weight = pipe.tokenizer, pipe.text_encoder.get_input_embeddings().weight
    toy, cat = (tokenizer.encode(w, add_special_tokens=False)[0] for w in ("toy", "cat"))
    assert initializer_ids(tokenizer, "toy cat") == [toy, cat]
    with pytest.raises(ModelError, match="'xyzzyq' is not in the base model's vocabulary"):
        initializer_ids(tokenizer, "toy xyzzyq")
    # Three vectors from two words: the words are cycled (vector 2 starts from "toy" again).
    three = initial_vectors(weight, _concept(initializer="toy cat", vectors=3), tokenizer, seed=0)
    assert torch.equal(three, torch.stack([weight[toy], weight[cat], weight[toy]]).detach())
    # One vector from two words: their mean.
    one = initial_vectors(weight, _concept(initializer="toy cat", vectors=1), tokenizer, seed=0)
    torch.testing.assert_close(one[0], (weight[toy] + weight[cat]).detach() / 2)
    zero = initial_vectors(weight, _concept(init="zero", initializer=None, vectors=2), tokenizer, seed=0)
    assert torch.equal(zero, torch.zeros(2, 32))
    rand = initial_vectors(weight, _concept(init="random", initializer=None, vectors=2), tokenizer, seed=0)
    again = initial_vectors(weight, _concept(init="random", initializer=None, vectors=2), tokenizer, seed=0)
    assert torch.equal(rand, again) and not torch.equal(rand[0], rand[1])
    assert 0.5 < float(rand.std() / weight.detach().std()) < 2  # the vocabulary's spread


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_validation_images_from_the_modules_in_training(dtype: torch.dtype) -> None:
    from tinv_cli.training.inversion import Parts, validation_images

    pipe = build_tiny_pipeline()
    pipe.to(dtype=dtype)
    tokenizer = copy.deepcopy(pipe.tokenizer)
    new_ids = add_placeholder_tokens(tokenizer, "<t>", 1)
    encoder = pipe.text_encoder
    encoder.set_input_embeddings(
        embedding_with_new_rows(encoder.get_input_embeddings(), new_ids, torch.ones(1, 32))
    )
    encoder.train()
    parts = Parts(SD, (pipe.tokenizer,), (encoder,), pipe.unet, pipe.vae, pipe.scheduler)
    state = torch.get_rng_state()
    kwargs = {"count": 2, "seed": 4, "resolution": 32, "steps": 2}
    images = validation_images(parts, (tokenizer,), "a photo of a <t>", **kwargs)  # type: ignore[arg-type]
    assert len(images) == 2 and images[0].size == (32, 32)
    assert torch.equal(torch.get_rng_state(), state)  # the training run's streams did not move
    assert encoder.training  # modes handed back
    again = validation_images(parts, (tokenizer,), "a photo of a <t>", **kwargs)  # type: ignore[arg-type]
    assert [np.asarray(i).tobytes() for i in again] == [np.asarray(i).tobytes() for i in images]  # fixed seed


def test_a_caption_too_long_for_the_token_is_refused(tmp_path: Path) -> None:
    from tinv_cli.errors import DataError
    from tinv_cli.training.inversion import tokenize_prompts

    tokenizer = build_tiny_pipeline().tokenizer
    new_ids = add_placeholder_tokens(tokenizer, "<t>", 1)
    ok = tokenize_prompts(
        tokenizer, [["a photo of a <t>", "a <t>"], ["a <t>"]], new_ids, (Path("a.png"), Path("b.png"))
    )
    assert ok.shape == (2, 2, 77) and torch.equal(ok[1, 0], ok[1, 1])  # the shorter list repeats its last
    too_long = " ".join(["red"] * 80) + " <t>"
    with pytest.raises(DataError, match=r"b\.txt"):
        tokenize_prompts(
            tokenizer, [["a <t>"], [too_long]], new_ids, (tmp_path / "a.png", tmp_path / "b.png")
        )
