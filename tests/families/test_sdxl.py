"""SDXL concepts: trained with SDXL's conditioning on a tiny SDXL pipeline, sampled, exported, re-imported and
loaded by diffusers; and kept away from models of another family."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from tests.helpers import Recorder, make_project
from tests.tiny import build_tiny_sdxl_pipeline, save_tiny_sdxl_pipeline
from tinv_cli.embedding import Embedding
from tinv_cli.errors import ModelError
from tinv_cli.families import sdxl
from tinv_cli.project.load import load_project
from tinv_cli.registry.store import Registry
from tinv_cli.training.inversion import diffusion_loss
from tinv_cli.training.recipe import train
from tinv_cli.training.request import TrainingInterrupted, TrainRequest

# Real-shaped concepts (CLIP-L 768 + OpenCLIP-G 1280) on an otherwise tiny model, where the widths matter.
REAL = (768, 1280)
PROMPT = "a <cat-toy> on a beach"


@pytest.fixture(scope="module")
def sdxl_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``build_tiny_sdxl_pipeline(REAL)`` saved in diffusers layout, once for this module."""
    return save_tiny_sdxl_pipeline(tmp_path_factory.mktemp("sdxl") / "sdxl-tiny", REAL)


def _config_only_model(folder: Path, widths: tuple[int, ...]) -> Path:
    """A diffusers folder with model_index.json and text-encoder configs but no weights at all: whatever uses it
    must decide from the configs alone."""
    names = ["text_encoder", "text_encoder_2"][: len(widths)]
    index = {"_class_name": "StableDiffusionPipeline" if len(widths) == 1 else "StableDiffusionXLPipeline"}
    index.update({name: ["transformers", "CLIPTextModel"] for name in names})
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps(index))
    for name, width in zip(names, widths, strict=True):
        (folder / name).mkdir()
        (folder / name / "config.json").write_text(json.dumps({"hidden_size": width}))
    return folder


def test_time_ids_record_each_images_size_and_crop() -> None:
    # A 40 x 48 (h x w) image center-cropped to its central 40 x 40, trained at 32 px: the crop starts 4 px in
    # from the left, 3.2 px once the box is scaled to 32. Its mirror's crop starts 4 px from the other side.
    # A 20 x 10 image squeezed whole into the square has no crop.
    ids = sdxl.time_ids([(40, 48), (20, 10)], [(4, 0, 44, 40), (0, 0, 10, 20)], 32)
    assert ids.shape == (2, 2, 6) and ids.dtype == torch.float32
    assert ids[0].tolist() == [[40, 48, 0, 3, 32, 32], [40, 48, 0, 3, 32, 32]]
    assert ids[1].tolist() == [[20, 10, 0, 0, 32, 32], [20, 10, 0, 0, 32, 32]]
    # An off-center box: the mirror's corner is where the box ends, counted from the right.
    off = sdxl.time_ids([(64, 100)], [(10, 0, 74, 64)], 64)
    assert off[0].tolist() == [[64, 100, 0, 10, 64, 64], [64, 100, 0, 26, 64, 64]]


def test_training_set_records_original_sizes_and_crop_boxes(tmp_path: Path) -> None:
    from PIL import Image

    from tinv_cli.training.data import load_training_set

    Image.new("RGB", (48, 40), (10, 20, 30)).save(tmp_path / "a.png")
    Image.new("RGB", (10, 20), (10, 20, 30)).save(tmp_path / "b.png")
    cropped = load_training_set(tmp_path, resolution=32, center_crop=True)
    assert cropped.original_sizes == ((40, 48), (20, 10))
    assert cropped.crop_boxes == ((4, 0, 44, 40), (0, 5, 10, 15))
    whole = load_training_set(tmp_path, resolution=32, center_crop=False)
    assert whole.crop_boxes == ((0, 0, 48, 40), (0, 0, 10, 20))


def _ids(tokenizer: object, prompts: list[str]) -> torch.Tensor:
    return tokenizer(  # type: ignore[operator]
        prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids


def test_training_conditioning_is_what_the_sdxl_pipeline_computes() -> None:
    pipe = build_tiny_sdxl_pipeline()
    prompts = ["a photo of a cat", "a red toy on a beach"]
    ids = (_ids(pipe.tokenizer, prompts), _ids(pipe.tokenizer_2, prompts))
    assert not torch.equal(ids[0], ids[1])  # the second tokenizer pads with "!", as SDXL's does
    with torch.no_grad():
        hidden, pooled = sdxl.encode_text((pipe.text_encoder, pipe.text_encoder_2), ids)
        expected, _, expected_pooled, _ = pipe.encode_prompt(
            prompts, device="cpu", do_classifier_free_guidance=False
        )
    assert hidden.shape == (2, 77, 32 + 64) and pooled.shape == (2, 64)
    assert torch.equal(hidden, expected) and torch.equal(pooled, expected_pooled)


def test_loss_is_per_sample_so_any_batch_length_works() -> None:
    from diffusers import DDPMScheduler

    pipe = build_tiny_sdxl_pipeline()
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(3, 4, 16, 16, generator=generator)
    noise = torch.randn(3, 4, 16, 16, generator=generator)
    timesteps = torch.tensor([10, 500, 990])
    prompts = ["a photo of a cat", "a red toy", "a toy on a beach"]
    ids = (_ids(pipe.tokenizer, prompts), _ids(pipe.tokenizer_2, prompts))
    time_ids = sdxl.time_ids(
        [(40, 48), (32, 32), (64, 100)], [(4, 0, 44, 40), (0, 0, 32, 32), (10, 0, 74, 64)], 32
    )
    times = time_ids[:, 0]
    encoders = (pipe.text_encoder, pipe.text_encoder_2)

    def loss(rows: list[int], time_rows: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return diffusion_loss(
                pipe.unet,
                sdxl.SDXL,
                encoders,
                scheduler,
                latents[rows],
                noise[rows],
                timesteps[rows],
                tuple(i[rows] for i in ids),
                {"time_ids": time_rows},
            )

    whole = loss([0, 1, 2], times)
    singles = [loss([i], times[[i]]) for i in range(3)]
    torch.testing.assert_close(whole, torch.stack(singles).mean(), rtol=1e-5, atol=1e-7)
    # The time ids reach the UNet: another crop is another loss.
    assert not torch.equal(loss([0], time_ids[[0], 0] + torch.tensor([0, 0, 0, 8, 0, 0])), singles[0])


def test_validation_images_from_the_sdxl_modules_in_training() -> None:
    import copy

    from tinv_cli.sampling.loader import expand_prompt
    from tinv_cli.training.inversion import (
        add_placeholder_tokens,
        embedding_with_new_rows,
        load_parts,
        validation_images,
        validation_pipeline,
    )

    pipe = build_tiny_sdxl_pipeline()
    tokenizers = (copy.deepcopy(pipe.tokenizer), copy.deepcopy(pipe.tokenizer_2))
    for tokenizer, encoder, width in zip(
        tokenizers, (pipe.text_encoder, pipe.text_encoder_2), (32, 64), strict=True
    ):
        ids = add_placeholder_tokens(tokenizer, "<t>", 2)
        encoder.set_input_embeddings(
            embedding_with_new_rows(encoder.get_input_embeddings(), ids, torch.ones(2, width))
        )
        encoder.train()
    parts = load_parts("tiny-xl", None, torch.float32, pipe)
    prompt = expand_prompt("a photo of a <t>", [Embedding("<t>", (torch.ones(2, 32), torch.ones(2, 64)))])
    # The prompt arrives spelled out; the validation pipeline must not spell it out again.
    validation = validation_pipeline(parts, tokenizers)
    assert all(validation.maybe_convert_prompt(prompt, t) == "a photo of a <t> <t>_1" for t in tokenizers)
    images = validation_images(parts, tokenizers, prompt, count=2, seed=4, resolution=32, steps=2)
    assert len(images) == 2 and images[0].size == (32, 32)
    assert pipe.text_encoder.training and pipe.text_encoder_2.training  # modes handed back


def _tables(pipe: object) -> list[torch.Tensor]:
    return [
        e.get_input_embeddings().weight.detach().clone() for e in (pipe.text_encoder, pipe.text_encoder_2)
    ]  # type: ignore[attr-defined]


@pytest.mark.slow
def test_sdxl_concept_trains_samples_exports_and_loads_in_diffusers(
    tmp_path: Path, sdxl_model_dir: Path
) -> None:
    from tinv_cli.registry.transfer import export_entry, import_file
    from tinv_cli.sampling.sample import SampleOptions, denoise, prepare

    pipe = build_tiny_sdxl_pipeline(REAL)
    tables, vocab = _tables(pipe), (len(pipe.tokenizer), len(pipe.tokenizer_2))
    encoders = (pipe.text_encoder, pipe.text_encoder_2)
    modules = [e.get_input_embeddings() for e in encoders]
    # Three images in batches of two: the second batch takes the last image of one epoch and the first of the
    # next, and no batch is the size of the image set.
    project = make_project(
        tmp_path,
        sdxl_model_dir,
        train={"steps": 3, "batch_size": 2, "learning_rate": 5e-3, "checkpoint_every": 2},
        concept={"vectors": 2, "initializer": "toy cat"},
    )
    recorder = Recorder()
    summary = train(TrainRequest(load_project(project), "cat-toy"), recorder, pipeline=pipe)
    assert summary.final_loss is not None and recorder.checkpoints == [2, 3]

    # The pipeline came back as it was: same embedding modules and rows, tokenizers without the new tokens.
    assert [e.get_input_embeddings() for e in encoders] == modules
    assert all(torch.equal(a, b) for a, b in zip(_tables(pipe), tables, strict=True))
    assert (len(pipe.tokenizer), len(pipe.tokenizer_2)) == vocab

    entry = Registry().get(summary.entry)
    assert (entry.widths, entry.family, entry.num_vectors) == (REAL, "sdxl", 2)
    stored = load_file(str(entry.embedding_file()))
    assert {k: tuple(v.shape) for k, v in stored.items()} == {"clip_l": (2, 768), "clip_g": (2, 1280)}
    clip_l, clip_g = entry.embedding().vectors
    # Both halves trained: each moved away from its initializer rows ("toy", "cat" in its own table).
    for table, tokenizer, trained in zip(
        tables, (pipe.tokenizer, pipe.tokenizer_2), (clip_l, clip_g), strict=True
    ):
        start = table[[tokenizer.encode(w, add_special_tokens=False)[0] for w in ("toy", "cat")]]
        assert not torch.allclose(trained, start)
    card = (entry.path / "README.md").read_text()
    assert "stable-diffusion-xl" in card and 'state_dict["clip_g"]' in card

    # Export as diffusers' pair, import it back: the same concept.
    export = tmp_path / "export"
    written = export_entry(entry, "diffusers", export)
    assert [p.name for p in written] == ["learned_embeds.safetensors", "learned_embeds_2.safetensors"]
    again = import_file(Registry(), export, name="cat-toy-again")
    assert again.format == "diffusers" and again.entry.embedding().equal(entry.embedding())
    # The entry (and so a pushed repository) carries the same pair in diffusers/; the export adds modelspec.
    from safetensors import safe_open

    for path in written:
        stored_pair, exported = (load_file(str(p)) for p in (entry.path / "diffusers" / path.name, path))
        assert stored_pair.keys() == exported.keys()
        assert all(torch.equal(stored_pair[k], exported[k]) for k in exported)
        with safe_open(str(path), "pt") as handle:
            assert (handle.metadata() or {})["modelspec.architecture"].startswith("stable-diffusion-xl")

    # tinv sample's pipeline: the model's own size, the concept in both tokenizers, the prompt spelled out.
    options = SampleOptions(model=str(sdxl_model_dir), steps=2, seed=1, device="cpu")
    prepared = prepare(PROMPT, options)
    assert prepared.size == (32, 32) and type(prepared.pipe).__name__ == "StableDiffusionXLPipeline"
    assert prepared.text == "a <cat-toy> <cat-toy>_1 on a beach"
    for tokenizer in (prepared.pipe.tokenizer, prepared.pipe.tokenizer_2):
        new = tokenizer.convert_tokens_to_ids(["<cat-toy>", "<cat-toy>_1"])
        assert [i for i in tokenizer(prepared.text).input_ids if i >= min(new)] == new
    with torch.no_grad():
        ours = prepared.pipe.encode_prompt(prepared.text, device="cpu", do_classifier_free_guidance=False)

    # diffusers loads the exported pair with its two load_textual_inversion calls, and the {clip_l, clip_g}
    # file with the two calls of its documented recipe; both condition exactly as tinv's loaded pipeline does.
    from diffusers import StableDiffusionXLPipeline

    pair = StableDiffusionXLPipeline.from_pretrained(sdxl_model_dir)
    pair.load_textual_inversion(str(export / "learned_embeds.safetensors"))
    pair.load_textual_inversion(
        str(export / "learned_embeds_2.safetensors"),
        text_encoder=pair.text_encoder_2,
        tokenizer=pair.tokenizer_2,
    )
    recipe = StableDiffusionXLPipeline.from_pretrained(sdxl_model_dir)
    state_dict = load_file(str(entry.embedding_file()))
    recipe.load_textual_inversion(
        state_dict["clip_g"],
        token="<cat-toy>",
        text_encoder=recipe.text_encoder_2,
        tokenizer=recipe.tokenizer_2,
    )
    recipe.load_textual_inversion(
        state_dict["clip_l"], token="<cat-toy>", text_encoder=recipe.text_encoder, tokenizer=recipe.tokenizer
    )
    # The entry's own layout, which is a pushed repository's: the pair in diffusers/. (For a local folder diffusers
    # prefers a root file over subfolder=, so the subfolder is named in the path; test_hub loads it by repo id.)
    folder = StableDiffusionXLPipeline.from_pretrained(sdxl_model_dir)
    folder.load_textual_inversion(str(entry.path / "diffusers"))
    folder.load_textual_inversion(
        str(entry.path / "diffusers"),
        weight_name="learned_embeds_2.safetensors",
        text_encoder=folder.text_encoder_2,
        tokenizer=folder.tokenizer_2,
    )
    for theirs in (pair, recipe, folder):
        with torch.no_grad():
            embeds = theirs.encode_prompt(PROMPT, device="cpu", do_classifier_free_guidance=False)
        assert torch.equal(embeds[0], ours[0]) and torch.equal(embeds[2], ours[2])

    images = denoise(prepared, options, [1], lambda event: None)
    assert len(images) == 1 and images[0].size == (32, 32)


@pytest.mark.slow
def test_sdxl_resume_restores_both_encoders_vectors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = save_tiny_sdxl_pipeline(tmp_path / "sdxl-small")
    settings = {"steps": 4, "batch_size": 2, "checkpoint_every": 0, "learning_rate": 5e-3, "seed": 2}
    request = TrainRequest(load_project(make_project(tmp_path, model, train=settings)), "cat-toy")

    monkeypatch.setenv("TINV_HOME", str(tmp_path / "home-straight"))
    straight = Registry().get(train(request).entry).embedding()

    monkeypatch.setenv("TINV_HOME", str(tmp_path / "home-resumed"))
    with pytest.raises(TrainingInterrupted):
        train(request, Recorder(interrupt_at=2))
    resumed = train(request)
    assert resumed.start_step == 2
    # Bitwise: both vector sets, their Adam states and every random stream came back from the checkpoint.
    assert Registry().get(resumed.entry).embedding().equal(straight)
    assert straight.widths == (32, 64)


def test_two_encoders_without_sdxl_conditioning_are_refused() -> None:
    from types import SimpleNamespace

    from tests.tiny import build_tiny_pipeline
    from tinv_cli.training.inversion import load_parts

    sd = build_tiny_pipeline()
    odd = SimpleNamespace(
        tokenizer=sd.tokenizer,
        text_encoder=sd.text_encoder,
        tokenizer_2=sd.tokenizer,
        text_encoder_2=sd.text_encoder,
        unet=sd.unet,
        vae=sd.vae,
        scheduler=sd.scheduler,
    )
    with pytest.raises(
        ModelError, match="two text encoders but its UNet does not take SDXL's added conditioning"
    ):
        load_parts("odd-model", None, torch.float32, odd)
    xl = build_tiny_sdxl_pipeline()
    parts = load_parts("tiny-xl", None, torch.float32, xl)
    assert parts.text_encoders == (xl.text_encoder, xl.text_encoder_2)
    assert parts.tokenizers == (xl.tokenizer, xl.tokenizer_2)


def test_training_from_an_sd1_entry_on_sdxl_is_refused_before_any_weights_load(tmp_path: Path) -> None:
    model = _config_only_model(tmp_path / "sdxl-configs", REAL)
    Registry().add("sd1-toy", Embedding("<sd1-toy>", (torch.randn(1, 768),)), source={"type": "imported"})
    project = load_project(make_project(tmp_path, model))
    with pytest.raises(ModelError) as caught:
        train(TrainRequest(project, "cat-toy", from_entry="sd1-toy"))
    assert caught.value.message == (
        "--from sd1-toy@1: <sd1-toy> was trained for a 768-wide text encoder (SD 1.x); "
        "this model's are 768 + 1280 (SDXL)"
    )
    assert caught.value.hint == "train from an entry made for this model's family, or without --from"


def test_real_shaped_sdxl_file_imports_and_is_refused_on_an_sd1_model(tmp_path: Path) -> None:
    from tinv_cli.cli import app

    vectors = {"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}
    path = tmp_path / "xl-style.safetensors"
    save_file(vectors, str(path))
    runner = CliRunner()
    imported = runner.invoke(app, ["import", str(path), "--json"])
    assert imported.exit_code == 0, imported.output
    entry = Registry().get("xl-style")
    assert (entry.widths, entry.family, entry.token, entry.num_vectors) == (REAL, "sdxl", "xl-style", 2)
    assert entry.info["source"]["format"] == "sdxl"
    assert torch.equal(entry.embedding().vectors[1], vectors["clip_g"])

    # An SD 1.x model of which only the configs exist: the refusal comes before any weights are needed.
    sd1 = _config_only_model(tmp_path / "sd1-configs", (768,))
    refused = runner.invoke(app, ["sample", "a castle in the style of <xl-style>", "--model", str(sd1)])
    assert refused.exit_code == 1
    assert (
        "Error: <xl-style> was trained for 768 + 1280-wide text encoders (SDXL); this model's is 768 (SD 1.x)"
        in refused.output
    )
    assert "Hint: use an SDXL base model (--model) or another concept" in refused.output
    assert not Path(os.environ["TINV_HOME"], "samples").exists()
