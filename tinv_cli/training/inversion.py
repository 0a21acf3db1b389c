"""The pieces of Textual Inversion that touch the model: new tokens, their rows, cached latents, the loss.

``train.py`` is the recipe that strings these together; they are separate so a test can run each one next to the
reference formulation (the diffusers example's full-matrix parameter and per-step VAE encode) and compare.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli.embedding import token_names
from tinv_cli.errors import DataError, ModelError
from tinv_cli.project.config import Concept

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from tinv_cli.families.base import Family

VALIDATION_INFERENCE_STEPS = 25


def add_placeholder_tokens(tokenizer: Any, token: str, vectors: int) -> list[int]:
    """Add ``token, token_1, ...`` to ``tokenizer`` and return their ids; refuses a token it already has."""
    vocab = tokenizer.get_vocab()
    names = token_names(token, vectors)
    for entry in names:
        pieces = tokenizer.tokenize(entry)
        if entry in vocab or (len(pieces) == 1 and pieces[0] in vocab and pieces[0] != tokenizer.unk_token):
            raise ModelError(
                f"token {entry} is already a word of the base model's tokenizer",
                "pick another token in concepts.toml (a word between < and >, e.g. <my-concept>)",
            )
    before = len(tokenizer)
    added = tokenizer.add_tokens(names)
    ids = tokenizer.convert_tokens_to_ids(names)
    if added != len(names) or ids != list(range(before, before + len(names))):
        raise ModelError(f"could not add {', '.join(names)} to the tokenizer as new tokens")
    return ids


def initial_vectors(
    weight: torch.Tensor,
    concept: Concept,
    tokenizer: Any,
    *,
    seed: int,
    stream: str = "init",
    text_encoder: Any | None = None,
) -> torch.Tensor:
    """The ``[n, d]`` float32 starting vectors: the initializer's rows (vector i averages the tokens
    ``initializer_plan`` gives it), random rows with the vocabulary's per-dimension spread, zeros, or (``init =
    "encoder"``) ``text_encoder``'s output for the initializer (``encoder_vectors``). ``stream`` names the random
    draw, so each text encoder of a model gets its own."""
    import torch

    from tinv_cli.project.tokens import initializer_ids, initializer_plan
    from tinv_cli.training.data import derive_seed

    weight = weight.detach()
    n, d = concept.vectors, weight.shape[1]
    if concept.init == "zero":
        return torch.zeros(n, d, device=weight.device)
    if concept.init == "random":
        table = weight.float()  # the whole table's spread: a float32 copy of it for the moment (bf16/fp16)
        generator = torch.Generator().manual_seed(derive_seed(seed, stream))
        draw = torch.randn(n, d, generator=generator).to(table.device)
        return draw * table.std(dim=0) + table.mean(dim=0)
    ids = initializer_ids(tokenizer, concept.initializer or "")
    plan = initializer_plan(len(ids), n)
    if concept.init == "encoder":
        if text_encoder is None:
            raise ValueError("init = 'encoder' needs the text encoder")
        table = encoder_vectors(text_encoder, tokenizer, ids).to(weight.device)
        return torch.stack([table[group].mean(dim=0) for group in plan])
    # The initializer's rows alone in float32, not a copy of the whole table (the same numbers).
    return torch.stack([weight[[ids[j] for j in group]].float().mean(dim=0) for group in plan])


def encoder_vectors(text_encoder: Any, tokenizer: Any, ids: list[int]) -> torch.Tensor:
    """Cross Initialization (Pang et al. 2024): the text encoder's final-layer output (after its final layer
    norm) at each initializer token's position, for the initializer on its own between the start and end
    tokens; float32 ``[len(ids), d]``. That output lives where the encoder's input rows of a trained concept
    end up, so training starts closer to its result."""
    import torch

    row = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
    device = text_encoder.get_input_embeddings().weight.device
    input_ids = torch.tensor([row], device=device)
    with torch.no_grad():
        hidden = text_encoder(input_ids).last_hidden_state
    return hidden[0, 1 : 1 + len(ids)].float()


def embedding_with_new_rows(
    base: torch.nn.Embedding, new_ids: list[int], vectors: torch.Tensor
) -> torch.nn.Module:
    """A drop-in for ``base`` in which ids ``new_ids`` (consecutive, past the base vocabulary) read their rows from
    a trainable fp32 parameter ``.new``; every other id reads the frozen base table."""
    return _new_rows_class()(base, new_ids[0], vectors)


@functools.cache
def _new_rows_class() -> type:
    # Built on first use, so that importing this module does not import torch.
    import torch

    class EmbeddingWithNewRows(torch.nn.Module):
        def __init__(self, base: torch.nn.Embedding, first_new_id: int, vectors: torch.Tensor) -> None:
            super().__init__()
            self.base = base
            self.first_new_id = first_new_id
            # fp32 whatever the base table's dtype: Adam's small updates vanish in fp16/bf16 rounding.
            self.new = torch.nn.Parameter(
                vectors.detach().to(device=base.weight.device, dtype=torch.float32, copy=True)
            )

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            is_new = input_ids >= self.first_new_id
            old_rows = self.base(torch.where(is_new, 0, input_ids))
            new_rows = torch.nn.functional.embedding((input_ids - self.first_new_id).clamp(min=0), self.new)
            return torch.where(is_new.unsqueeze(-1), new_rows.to(old_rows.dtype), old_rows)

    return EmbeddingWithNewRows


def encode_latents(vae: Any, pixels: torch.Tensor, *, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior of every image and its mirror: float32 ``mean`` and ``std``, ``[N, 2, C, h, w]``
    (index 1 on the second axis is the horizontally flipped image)."""
    import torch

    means, stds = [], []
    with torch.no_grad():
        for start in range(0, pixels.shape[0], batch):
            chunk = pixels[start : start + batch].to(device=vae.device, dtype=vae.dtype)
            both = torch.stack([chunk, torch.flip(chunk, dims=[-1])], dim=1).flatten(0, 1)
            dist = vae.encode(both).latent_dist
            means.append(dist.mean.float().unflatten(0, (-1, 2)))
            stds.append(dist.std.float().unflatten(0, (-1, 2)))
    return torch.cat(means), torch.cat(stds)


def diffusion_loss(
    unet: Any,
    family: Family,
    text_encoders: Sequence[Any],
    noise_scheduler: Any,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    input_ids: Sequence[torch.Tensor],
    extras: Mapping[str, torch.Tensor],
    *,
    min_snr_gamma: float = 0.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The example's objective: MSE between the denoiser's prediction and the family's target (the noise for
    epsilon models, the velocity for v-prediction ones), under the family's conditioning. ``input_ids[i]`` are
    encoder ``i``'s ``[B, 77]`` ids; every tensor is per sample, so a batch of any length works.

    ``min_snr_gamma`` > 0 weights each sample by min-SNR-gamma; ``mask`` (``[B, 1, h, w]``) weights the error
    per latent pixel (``loss_terms``). Without either, the loss is the example's, bit for bit."""
    import torch.nn.functional as F

    from tinv_cli.training import loss_terms

    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    condition = family.conditioning(text_encoders, input_ids, extras, unet.dtype)
    pred = unet(noisy.to(unet.dtype), timesteps, **condition).sample
    target = family.training_target(noise_scheduler, latents, noise, timesteps)
    if min_snr_gamma <= 0 and mask is None:
        return F.mse_loss(pred.float(), target.float(), reduction="mean")
    weights = (
        loss_terms.min_snr_weights(noise_scheduler, timesteps, min_snr_gamma) if min_snr_gamma > 0 else None
    )
    return loss_terms.weighted_mse(pred, target, weights, mask)


def validation_images(
    parts: Parts,
    tokenizers: Sequence[Any],
    prompt: str,
    *,
    count: int,
    seed: int,
    resolution: int,
    steps: int = VALIDATION_INFERENCE_STEPS,
) -> list[Image.Image]:
    """``count`` images for ``prompt`` from the modules being trained (no reload from disk), with a fixed seed.

    ``tokenizers``: the run's tokenizers (which know the placeholder), in pipeline order. The VAE comes onto the
    UNet's device for the occasion and goes back to where it was; the UNet and text encoders run in eval mode and get their modes
    back; no random stream outside the seeded generator moves.
    """
    import torch

    pipe = validation_pipeline(parts, tokenizers)
    pipe.set_progress_bar_config(disable=True)
    device = parts.unet.device
    vae_device = parts.vae.device
    modes = [(m, m.training) for m in (parts.unet, *parts.text_encoders)]
    cuda = [device.index or 0] if device.type == "cuda" else []
    # Half-precision modules meet the fp32 new rows: autocast, as in training, settles every op's dtype.
    half = parts.unet.dtype in (torch.float16, torch.bfloat16)
    autocast = torch.autocast(device.type, dtype=parts.unet.dtype, enabled=half)
    try:
        parts.vae.to(device)
        with torch.random.fork_rng(devices=cuda), torch.no_grad(), autocast:
            for module, _ in modes:
                module.eval()
            return list(
                pipe(
                    prompt,
                    num_images_per_prompt=count,
                    num_inference_steps=steps,
                    generator=torch.Generator(device=device).manual_seed(seed),
                    height=resolution,
                    width=resolution,
                ).images
            )
    finally:
        parts.vae.to(vae_device)
        for module, mode in modes:
            module.train(mode)


def validation_pipeline(parts: Parts, tokenizers: Sequence[Any]) -> Any:
    """A pipeline of the model's family over the modules in training, sampling with DPM++ 2M; it takes prompts
    as ``expand_prompt`` spells them out."""
    from diffusers import DPMSolverMultistepScheduler

    from tinv_cli.sampling.loader import use_tinv_expansion

    scheduler = DPMSolverMultistepScheduler.from_config(parts.scheduler.config)
    return use_tinv_expansion(parts.family.pipeline(parts.modules(tokenizers), scheduler))


@dataclass(frozen=True)
class Parts:
    """The modules training uses, and the family they belong to. ``tokenizers`` and ``text_encoders`` are in
    pipeline order, the order of ``Embedding.vectors``."""

    family: Family
    tokenizers: tuple[Any, ...]
    text_encoders: tuple[Any, ...]
    unet: Any
    vae: Any  # None in a run that loaded the model itself and will not validate, once latents are cached
    scheduler: Any

    def modules(self, tokenizers: Sequence[Any] | None = None) -> dict[str, Any]:
        """The modules by pipeline attribute, with ``tokenizers`` instead of the pipeline's own if given."""
        modules = {"unet": self.unet, "vae": self.vae, "scheduler": self.scheduler}
        chosen = tuple(tokenizers) if tokenizers is not None else self.tokenizers
        for encoder, tokenizer, text_encoder in zip(
            self.family.encoders, chosen, self.text_encoders, strict=True
        ):
            modules[encoder.tokenizer] = tokenizer
            modules[encoder.text_encoder] = text_encoder
        return modules


def load_parts(base: str, revision: str | None, dtype: torch.dtype, pipeline: Any | None) -> Parts:
    """The modules of ``pipeline``, or of the base model loaded in ``dtype``; ModelError for a pipeline that no
    family tinv trains can use."""
    from tinv_cli import families
    from tinv_cli.models.loading import load_pipeline

    pipe: Any = (
        pipeline if pipeline is not None else load_pipeline(base, revision=revision, torch_dtype=dtype)
    )
    family = families.for_pipeline(pipe)
    family.check_pipeline(pipe, base)
    return Parts(
        family=family,
        tokenizers=tuple(getattr(pipe, encoder.tokenizer) for encoder in family.encoders),
        text_encoders=tuple(getattr(pipe, encoder.text_encoder) for encoder in family.encoders),
        unet=pipe.unet,
        vae=pipe.vae,
        scheduler=pipe.scheduler,
    )


def tokenize_prompts(
    tokenizer: Any, prompts: list[list[str]], new_ids: list[int], images: tuple[Path, ...]
) -> torch.Tensor:
    """Every prompt of every image as token ids, ``[images, prompts, max_length]`` (an image with fewer prompts
    repeats its last). Refuses a prompt so long that truncation would cut the placeholder off."""
    import torch

    longest = max(len(p) for p in prompts)
    rows = []
    for image_prompts, image in zip(prompts, images, strict=True):
        padded = image_prompts + [image_prompts[-1]] * (longest - len(image_prompts))
        ids = tokenizer(
            padded,
            padding="max_length",
            truncation=True,
            max_length=tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids
        found = (ids.unsqueeze(-1) == torch.tensor(new_ids)).any(dim=1).all(dim=1)
        if not bool(found.all()):
            missing = padded[int((~found).nonzero()[0, 0])]
            if len(tokenizer(missing).input_ids) > tokenizer.model_max_length:
                raise DataError(
                    f"{image.with_suffix('.txt')}: the prompt {missing!r} is longer than the text encoder's "
                    f"{tokenizer.model_max_length} tokens, so the concept's token would be cut off",
                    "shorten the caption",
                )
            raise DataError(f"the tokenizer does not find the concept's token in the prompt {missing!r}")
        rows.append(ids)
    return torch.stack(rows)
