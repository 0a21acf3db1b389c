"""Test-only writer of single-file checkpoints: a diffusers pipeline's weights in the original (LDM/A1111) layout.

The key mapping is the public one of the original Stable Diffusion code: the UNet under ``model.diffusion_model.``
(``input_blocks``, ``middle_block``, ``output_blocks``), the VAE under ``first_stage_model.`` (``encoder.down``,
``decoder.up`` in reverse, 1x1-conv attention), OpenAI's CLIP under ``cond_stage_model.transformer.`` (SD 1.x) or
``conditioner.embedders.0.transformer.`` (SDXL), and OpenCLIP under ``cond_stage_model.model.`` (SD 2.x) or
``conditioner.embedders.1.model.`` (SDXL), with the attention's q, k and v stacked in ``in_proj`` and the
projection transposed. ``tests/models/test_ldm_layout.py`` proves the writer: diffusers' ``from_single_file``
reads back every tensor of the original pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

UNET = "model.diffusion_model."
VAE = "first_stage_model."
SD1_CLIP = "cond_stage_model.transformer."
SD2_OPEN_CLIP = "cond_stage_model.model."
SDXL_CLIP_L = "conditioner.embedders.0.transformer."
SDXL_OPEN_CLIP_G = "conditioner.embedders.1.model."

_RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}


def _replace_prefix(key: str, table: dict[str, str]) -> str | None:
    for old, new in table.items():
        if key.startswith(old + "."):
            return new + key[len(old) :]
    return None


def unet_to_ldm(unet: Any) -> dict[str, Any]:
    config = unet.config
    per = config.layers_per_block + 1  # LDM blocks per diffusers down block: its resnets, then a downsampler
    table: dict[str, str] = {}
    for i, block in enumerate(unet.down_blocks):
        for j in range(len(block.resnets)):
            table[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{1 + i * per + j}.0"
            if getattr(block, "attentions", None) is not None:
                table[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{1 + i * per + j}.1"
        if block.downsamplers is not None:
            table[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{(i + 1) * per}.0.op"
    for j in range(len(unet.mid_block.resnets)):
        table[f"mid_block.resnets.{j}"] = f"middle_block.{2 * j}"
    table["mid_block.attentions.0"] = "middle_block.1"
    for i, block in enumerate(unet.up_blocks):
        attended = getattr(block, "attentions", None) is not None
        for j in range(len(block.resnets)):
            table[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{i * per + j}.0"
            if attended:
                table[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{i * per + j}.1"
        if block.upsamplers is not None:
            last = i * per + len(block.resnets) - 1
            table[f"up_blocks.{i}.upsamplers.0"] = f"output_blocks.{last}.{2 if attended else 1}"
    out = {}
    for key, value in unet.state_dict().items():
        new = _replace_prefix(key, _UNET_TOP) or _replace_prefix(key, table)
        if new is None:
            raise KeyError(f"no LDM name for UNet key {key}")
        if ".resnets." in key or key.startswith("mid_block.resnets"):
            for diffusers_name, ldm_name in _RESNET:
                new = new.replace(f".{diffusers_name}.", f".{ldm_name}.")
        out[UNET + new] = value
    return out


def vae_to_ldm(vae: Any) -> dict[str, Any]:
    ups = len(vae.decoder.up_blocks)
    table = {"encoder.conv_norm_out": "encoder.norm_out", "decoder.conv_norm_out": "decoder.norm_out"}
    for i in range(len(vae.encoder.down_blocks)):
        table[f"encoder.down_blocks.{i}.resnets"] = f"encoder.down.{i}.block"
        table[f"encoder.down_blocks.{i}.downsamplers.0"] = f"encoder.down.{i}.downsample"
    for i in range(ups):
        table[f"decoder.up_blocks.{i}.resnets"] = f"decoder.up.{ups - 1 - i}.block"
        table[f"decoder.up_blocks.{i}.upsamplers.0"] = f"decoder.up.{ups - 1 - i}.upsample"
    for part in ("encoder", "decoder"):
        for j in range(2):
            table[f"{part}.mid_block.resnets.{j}"] = f"{part}.mid.block_{j + 1}"
        table[f"{part}.mid_block.attentions.0"] = f"{part}.mid.attn_1"
    attention = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in vae.state_dict().items():
        new = _replace_prefix(key, table) or key
        new = new.replace(".conv_shortcut.", ".nin_shortcut.")
        if ".mid.attn_1." in new:
            for diffusers_name, ldm_name in attention.items():
                new = new.replace(f".attn_1.{diffusers_name}.", f".attn_1.{ldm_name}.")
            if value.ndim == 2:  # LDM's attention is 1x1 convolutions
                value = value[:, :, None, None]
        out[VAE + new] = value
    return out


def _text_model_keys(encoder: Any) -> dict[str, Any]:
    """The encoder's state dict with every text-model key under ``text_model.`` (transformers >= 5.6 dropped that
    level from CLIPTextModel; checkpoints keep it)."""
    out = {}
    for key, value in encoder.state_dict().items():
        if key.startswith("text_projection."):
            out[key] = value
        else:
            out[key if key.startswith("text_model.") else "text_model." + key] = value
    return out


def clip_to_ldm(encoder: Any, prefix: str) -> dict[str, Any]:
    return {prefix + key: value for key, value in _text_model_keys(encoder).items()}


def open_clip_to_ldm(encoder: Any, prefix: str) -> dict[str, Any]:
    import torch

    keys = _text_model_keys(encoder)
    out: dict[str, Any] = {}
    layers = encoder.config.num_hidden_layers
    for i in range(layers):
        src, dst = f"text_model.encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat(
                [keys.pop(src + f"self_attn.{p}_proj.{kind}") for p in "qkv"], dim=0
            )
            for old, new in (
                ("self_attn.out_proj", "attn.out_proj"),
                ("layer_norm1", "ln_1"),
                ("layer_norm2", "ln_2"),
                ("mlp.fc1", "mlp.c_fc"),
                ("mlp.fc2", "mlp.c_proj"),
            ):
                out[dst + f"{new}.{kind}"] = keys.pop(src + f"{old}.{kind}")
    out[prefix + "token_embedding.weight"] = keys.pop("text_model.embeddings.token_embedding.weight")
    out[prefix + "positional_embedding"] = keys.pop("text_model.embeddings.position_embedding.weight")
    out[prefix + "ln_final.weight"] = keys.pop("text_model.final_layer_norm.weight")
    out[prefix + "ln_final.bias"] = keys.pop("text_model.final_layer_norm.bias")
    if "text_projection.weight" in keys:
        out[prefix + "text_projection"] = keys.pop("text_projection.weight").T.contiguous()
    keys.pop("text_model.embeddings.position_ids", None)
    if keys:
        raise KeyError(f"no OpenCLIP name for {sorted(keys)}")
    return out


def pipeline_to_ldm(pipe: Any, *, open_clip: bool = False) -> dict[str, Any]:
    """The pipeline's weights in the original layout: SDXL when it has a second encoder, else SD 1.x (CLIP) or,
    with ``open_clip``, SD 2.x (OpenCLIP)."""
    state = {**unet_to_ldm(pipe.unet), **vae_to_ldm(pipe.vae)}
    second = getattr(pipe, "text_encoder_2", None)
    if second is not None:
        state.update(clip_to_ldm(pipe.text_encoder, SDXL_CLIP_L))
        state.update(open_clip_to_ldm(second, SDXL_OPEN_CLIP_G))
    elif open_clip:
        state.update(open_clip_to_ldm(pipe.text_encoder, SD2_OPEN_CLIP))
    else:
        state.update(clip_to_ldm(pipe.text_encoder, SD1_CLIP))
    return {key: value.detach().clone().contiguous() for key, value in state.items()}


def save_config_folder(pipe: Any, folder: Path) -> Path:
    """The pipeline's configs and tokenizers without its weights: what ``[model] config`` names."""
    pipe.save_pretrained(folder)
    for weights in [*folder.rglob("*.safetensors"), *folder.rglob("*.bin")]:
        weights.unlink()
    return folder


def write_checkpoint(
    pipe: Any, path: Path, *, open_clip: bool = False, extra: dict[str, Any] | None = None
) -> Path:
    """``pipe`` as one ``.safetensors`` file, or for a ``.ckpt`` a weights-only ``torch.save`` of
    ``{"state_dict": ...}`` as the original training code wrote it."""
    import torch
    from safetensors.torch import save_file

    state = {**pipeline_to_ldm(pipe, open_clip=open_clip), **(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".ckpt":
        torch.save({"state_dict": state, "global_step": 1}, path)
    else:
        save_file(state, str(path))
    return path
