"""The model as a training run sees it: the placeholder tokens added, the new rows trainable and everything
else frozen, the latents cached, every prompt tokenized.

``attach`` makes those changes to the modules of ``inversion.Parts`` and registers how to undo each one on the
run's undo list, so a caller's pipeline is handed back as it came (modules, weights, devices, modes and
``requires_grad`` flags). The recipe (``recipe.py``) then trains ``Trainable.trainable``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from tinv_cli.embedding import token_names
from tinv_cli.training import inversion, loss_terms, memory, speed
from tinv_cli.training.templates import all_prompts

if TYPE_CHECKING:
    import torch

    from tinv_cli.project.config import Concept, TrainConfig
    from tinv_cli.training.data import TrainingSet

# (base token tables, the run's tokenizers, the text encoders) -> the starting [n, d] vectors, one per encoder.
InitialVectors = Callable[[list["torch.Tensor"], tuple[Any, ...], tuple[Any, ...]], Sequence["torch.Tensor"]]


@dataclass(frozen=True)
class Trainable:
    """What ``attach`` set up. ``rows[i].new`` is the trainable ``[n, d_i]`` parameter of text encoder ``i``."""

    parts: inversion.Parts
    tokenizers: tuple[Any, ...]  # copies of the model's, with the placeholder tokens added
    rows: tuple[Any, ...]
    restore_rows: Callable[[], None]  # puts the encoders' own token tables back
    train_unet: Any  # the UNet, or its compiled training-step wrapper
    latent_mean: torch.Tensor  # [images, 2 (image, mirror), C, h, w], float32, on the device
    latent_std: torch.Tensor
    scaling_factor: float
    prompts: list[list[str]]  # every prompt each image can draw
    input_ids: list[torch.Tensor]  # per tokenizer: [images, prompts, 77] on the device
    extras: dict[str, torch.Tensor]  # the family's per-image conditioning, [images, 2, ...]
    vocab_norms: tuple[float, ...]  # per encoder: the mean L2 norm of its base vocabulary's rows
    latent_mask: torch.Tensor | None = None  # masked_loss: [images, 2, 1, h, w] on the device, else None

    @property
    def trainable(self) -> list[torch.Tensor]:
        """The parameters the optimizer sees, in pipeline order (the order of Embedding.vectors)."""
        return [rows.new for rows in self.rows]


def attach(
    parts: inversion.Parts,
    concept: Concept,
    config: TrainConfig,
    images: TrainingSet,
    device: torch.device,
    initial_vectors: InitialVectors,
    *,
    caller_pipeline: bool,
    undo: list[Callable[[], object]],
    dtype: torch.dtype | None = None,
) -> Trainable:
    """Add the tokens, swap in the trainable rows, cache latents and tokenize the prompts on ``device``.

    Every tokenizer/text-encoder pair of the model's family gets the tokens and trainable rows of its own (one
    pair for SD 1.x and 2.x, two for SDXL), and all of them train together. ``undo`` receives the undoing of each
    change as it is made (run last-in first-out); with ``caller_pipeline`` also devices, modes and flags.
    A model the run loaded (not ``caller_pipeline``) gets its weights in ``dtype`` and their training layout,
    held once (``memory.own_weights``), before anything reads them.
    """
    # Copies: the pipeline's own tokenizers must not keep the new tokens (a caller's pipeline, a later run).
    tokenizers = tuple(copy.deepcopy(tokenizer) for tokenizer in parts.tokenizers)
    new_ids = [
        inversion.add_placeholder_tokens(tokenizer, concept.token, concept.vectors)
        for tokenizer in tokenizers
    ]
    encoders, unet, vae = parts.text_encoders, parts.unet, parts.vae
    original_rows = [encoder.get_input_embeddings() for encoder in encoders]

    # Freeze everything, then swap in the trainable rows. Cleanup undoes each change in reverse order; a
    # caller's pipeline also gets its devices, modes and requires_grad flags back.
    modules = (*encoders, unet, vae)
    if caller_pipeline:
        flags = [(p, p.requires_grad) for m in modules for p in m.parameters()]
        places = [(m, m.device, m.training) for m in modules]
        undo.append(lambda: [p.requires_grad_(flag) for p, flag in flags])
        undo.append(lambda: [m.to(where).train(mode) for m, where, mode in places])
    if not caller_pipeline:
        # Cast and laid out as training uses them in one copy a tensor at a time, before they go to the device:
        # the channels-last copy below then has nothing to do (a UNet to be compiled keeps the default layout).
        memory.own_weights(modules, dtype, channels_last=(vae,) if config.compile else (unet, vae))
    for module in modules:
        module.requires_grad_(False).to(device)
    # On the device, before the rows are swapped: init = "encoder" runs the encoders as they came.
    inits = initial_vectors([rows.weight for rows in original_rows], tokenizers, tuple(encoders))
    rows_ = tuple(
        inversion.embedding_with_new_rows(base_rows, ids, init)
        for base_rows, ids, init in zip(original_rows, new_ids, inits, strict=True)
    )
    # The parameters the optimizer sees, in pipeline order (the order of Embedding.vectors).
    for encoder, rows in zip(encoders, rows_, strict=True):
        encoder.set_input_embeddings(rows)

    def restore_rows() -> None:
        for encoder, rows in zip(encoders, original_rows, strict=True):
            encoder.set_input_embeddings(rows)

    undo.append(restore_rows)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        undo.append(unet.disable_gradient_checkpointing)
        for encoder in encoders:
            encoder.gradient_checkpointing_enable()
            undo.append(encoder.gradient_checkpointing_disable)
    # As in the reference script: the text encoders in train mode (CLIP's dropout is 0), the UNet only when
    # gradient checkpointing needs it.
    for encoder in encoders:
        encoder.train()
    unet.train(config.gradient_checkpointing)
    # Channels-last convolutions: the UNet and text-encoder step at 256 px takes 0.92x the time in fp32 on a
    # CPU (docs/benchmarks.md), and oneDNN's bf16 and tensor cores on a GPU want this layout. Only the layout changes. A UNet
    # to be compiled stays in the default layout, the one whose compiled gradients are right
    # (speed.COMPILE_OPTIONS); its wrapper is for the training step only, and validation runs it eagerly.
    layouts = [speed.to_channels_last(vae)]
    if config.compile:
        layouts.append(speed.to_contiguous(unet))
        train_unet = speed.compile_unet(unet)
    else:
        layouts.append(speed.to_channels_last(unet))
        train_unet = unet
    if caller_pipeline:
        undo.extend(layouts)

    # Each image and its mirror through the VAE once; then the VAE leaves the device until a validation.
    # One image and its mirror at a time: encoding then never needs more memory than a training step.
    latent_mean, latent_std = inversion.encode_latents(vae, images.pixels, batch=1)
    vae.to("cpu")
    scaling_factor = float(vae.config.scaling_factor)
    if not caller_pipeline:
        # A model the run loaded itself is the run's to cut down: validation only decodes, and a run without
        # a validation prompt never uses the VAE again (memory.py; docs/benchmarks.md).
        if concept.validation_prompt:
            memory.drop_vae_encoder(vae)
        else:
            parts = replace(parts, vae=None)
        del vae, modules, module  # the loop above leaves `module` naming the VAE

    # Every prompt an image can draw, tokenized once per tokenizer and kept on the device.
    placeholder = " ".join(token_names(concept.token, concept.vectors))
    prompts = all_prompts(concept.kind, placeholder, concept.token, images.captions)
    input_ids = [
        inversion.tokenize_prompts(tokenizer, prompts, ids, images.paths).to(device)
        for tokenizer, ids in zip(tokenizers, new_ids, strict=True)
    ]
    # What else the family conditions on per image and mirror (SDXL: sizes and crops), beside the latents.
    extras = parts.family.training_extras(images.original_sizes, images.crop_boxes, config.resolution)
    return Trainable(
        parts=parts,
        tokenizers=tokenizers,
        rows=rows_,
        restore_rows=restore_rows,
        train_unet=train_unet,
        latent_mean=latent_mean,
        latent_std=latent_std,
        scaling_factor=scaling_factor,
        prompts=prompts,
        input_ids=input_ids,
        extras={name: tensor.to(device) for name, tensor in extras.items()},
        vocab_norms=tuple(loss_terms.vocabulary_norm(rows.weight) for rows in original_rows),
        latent_mask=latent_mask(images.masks, latent_mean.shape[-2:], device),
    )


def latent_mask(masks: torch.Tensor | None, size: Sequence[int], device: torch.device) -> torch.Tensor | None:
    """Each image's mask ``[N, 1, H, W]`` (at the training resolution, cropped and resized as the image was)
    and its mirror at the latent size: ``[N, 2, 1, h, w]``, averaged over each latent pixel's area, as the
    latents come from the image and its mirror (index 1 is the flipped one)."""
    if masks is None:
        return None
    import torch
    import torch.nn.functional as F

    small = F.interpolate(masks.float(), size=tuple(size), mode="area")
    return torch.stack([small, torch.flip(small, dims=[-1])], dim=1).to(device)
