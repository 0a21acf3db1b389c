"""What a run frees and how it holds the frozen weights (training/memory.py): the same weights as diffusers'
``torch_dtype`` load, no longer mapped from their files; the VAE's encoder gone once the latents are cached and
the whole VAE without validation; and vectors bitwise the same as a run that keeps everything."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import make_project
from tinv_cli.models.loading import load_pipeline
from tinv_cli.project.load import load_project
from tinv_cli.registry.store import Registry
from tinv_cli.training import inversion, memory, trainable
from tinv_cli.training.data import load_training_set
from tinv_cli.training.recipe import train
from tinv_cli.training.request import TrainRequest, resolve_concept

MODULES = ("text_encoder", "unet", "vae")


def _mapped(tensor: torch.Tensor) -> bool:
    return any(low <= tensor.data_ptr() < high for low, high in memory.mapped_weight_ranges())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_own_weights_equals_a_torch_dtype_load_and_maps_no_file(
    tiny_model_dir: Path, dtype: torch.dtype
) -> None:
    lazy = load_pipeline(str(tiny_model_dir), torch_dtype=None)
    assert any(_mapped(p) for p in lazy.unet.parameters())  # what diffusers hands over: views of the files
    modules = tuple(getattr(lazy, name) for name in MODULES)
    memory.own_weights(modules, dtype, channels_last=(lazy.unet,))
    reference = load_pipeline(str(tiny_model_dir), torch_dtype=dtype)
    for name in MODULES:
        ours, theirs = getattr(lazy, name).state_dict(), getattr(reference, name).state_dict()
        assert ours.keys() == theirs.keys()
        for key, tensor in ours.items():
            assert tensor.dtype == theirs[key].dtype and torch.equal(tensor, theirs[key]), (name, key)
            assert not _mapped(tensor), (name, key)
    convs = [p for p in lazy.unet.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)


@pytest.mark.parametrize("validation", [None, "a <cat-toy> on a table"])
def test_attach_frees_the_vae_encoder_and_without_validation_the_vae(
    tmp_path: Path, tiny_model_dir: Path, validation: str | None
) -> None:
    project = load_project(make_project(tmp_path, tiny_model_dir, concept={"validation_prompt": validation}))
    concept, config = resolve_concept(project, "cat-toy", {})
    images = load_training_set(concept.images, resolution=config.resolution, center_crop=config.center_crop)
    parts = inversion.load_parts(str(tiny_model_dir), None, torch.float32, load_pipeline(str(tiny_model_dir)))
    model = trainable.attach(
        parts,
        concept,
        config,
        images,
        torch.device("cpu"),
        lambda tables, tokenizers, encoders: [t[:1].clone() for t in tables],
        caller_pipeline=False,
        undo=[],
        dtype=torch.float32,
    )
    assert model.latent_mean.shape[:2] == (3, 2) and model.scaling_factor == parts.vae.config.scaling_factor
    if validation is None:
        assert model.parts.vae is None
    else:
        assert model.parts.vae.encoder is None and model.parts.vae.quant_conv is None
        assert model.parts.vae.decoder is not None


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_vectors_equal_those_of_a_run_that_keeps_everything(
    tmp_path: Path, tiny_model_dir: Path, precision: str
) -> None:
    """A caller's pipeline is handed back whole, so its run frees nothing and loads nothing: the old behaviour.
    The run that loads the folder itself (cast a tensor at a time, VAE parts freed) trains the same vectors.

    The caller's weights are first copied out of their files: a view of a safetensors file may start at any
    8-byte offset, and on AVX-512 CPUs a matrix product reads an unaligned operand through other kernels, which
    round differently in the last bit. The copy is what ``own_weights`` makes too, so what is compared is the
    run's own logic, not where the weights happen to lie."""
    settings = {"steps": 4, "mixed_precision": precision, "learning_rate": 5e-3}
    project = load_project(
        make_project(tmp_path, tiny_model_dir, train=settings, concept={"validation_prompt": "a <cat-toy>"})
    )
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    pipeline = load_pipeline(str(tiny_model_dir), torch_dtype=dtype)
    for name in MODULES:
        for tensor in getattr(pipeline, name).parameters():
            tensor.data = tensor.data.clone()
    kept = train(TrainRequest(project, "cat-toy", restart=True), pipeline=pipeline)
    own = train(TrainRequest(project, "cat-toy", restart=True))
    first, second = (Registry().get(s.entry).embedding().vectors[0] for s in (kept, own))
    assert torch.equal(first, second)
    assert kept.final_loss == own.final_loss
