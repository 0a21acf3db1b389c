"""`tinv sample`'s core on the tiny pipeline: concepts in the prompt, images, metadata, seeds, widths."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import read_metadata
from tinv_cli import generate
from tinv_cli.embedding import Embedding, token_names
from tinv_cli.errors import ModelError
from tinv_cli.models.loading import load_pipeline
from tinv_cli.registry.entry import Entry
from tinv_cli.registry.store import Registry
from tinv_cli.registry.transfer import a1111_hash, import_file
from tinv_cli.sampling.prompt import resolve_concepts
from tinv_cli.sampling.sample import SCHEDULERS, SampleOptions, choose_model, prepare, set_scheduler

PROMPT = "A <cat-toy> backpack in the style of <birb-style>"
WIDTH = 32  # tests/tiny.py's text encoder


def a1111_file(folder: Path, vectors: int = 2, seed: int = 1) -> Path:
    """An AUTOMATIC1111 embedding as its trainer saves it; the token is the file's stem."""
    path = folder / "birb-style.pt"
    tensor = torch.randn(vectors, WIDTH, generator=torch.Generator().manual_seed(seed))
    torch.save({"string_to_param": {"*": tensor}, "name": "birb-style", "step": 500}, path)
    return path


@pytest.fixture
def concepts(tmp_path: Path) -> dict[str, Entry]:
    """<cat-toy>: 3 vectors trained (registered) here; birb-style: an imported A1111 file with 2 vectors."""
    registry = Registry()
    cat = torch.randn(3, WIDTH, generator=torch.Generator().manual_seed(0))
    cat_toy = registry.add("cat-toy", Embedding("<cat-toy>", (cat,)), source={"type": "imported"})
    birb = import_file(registry, a1111_file(tmp_path)).entry
    assert (birb.name, birb.token, birb.num_vectors) == ("birb-style", "birb-style", 2)
    return {"cat-toy": cat_toy, "birb-style": birb}


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


@pytest.mark.slow
def test_two_concepts_images_written_and_metadata_parses_back(
    concepts: dict[str, Entry], tiny_model_dir: Path, tmp_path: Path
) -> None:
    result = generate(
        PROMPT,
        negative_prompt="blurry, <birb-style>",
        model=str(tiny_model_dir),
        num_images=2,
        seed=11,
        steps=2,
        guidance=6.0,
        scheduler="euler-a",
    )
    assert len(result.images) == 2 and result.images[0].size == (32, 32)
    assert [c.entry.ref for c in result.concepts] == ["cat-toy@1", "birb-style@1"]
    paths = result.save(tmp_path / "out")
    assert [p.name for p in paths] == [
        "a-cat-toy-backpack-in-the-style-of-birb-style-11.png",
        "a-cat-toy-backpack-in-the-style-of-birb-style-12.png",
    ]

    for index, path in enumerate(paths):
        parameters, meta = read_metadata(path)
        assert parameters["Prompt"] == PROMPT
        assert parameters["Negative prompt"] == "blurry, <birb-style>"
        assert parameters["Steps"] == "2"
        assert parameters["Sampler"] == "Euler a"
        assert parameters["CFG scale"] == "6.0"
        assert parameters["Seed"] == str(11 + index)
        assert parameters["Size"] == "32x32"
        assert parameters["Model"] == tiny_model_dir.name
        cat, birb = concepts["cat-toy"], concepts["birb-style"]
        # A1111's hash of the file it would load: tinv's a1111 export of each entry.
        assert parameters["TI hashes"] == f"cat-toy: {a1111_hash(cat)}, birb-style: {a1111_hash(birb)}"
        assert (meta["seed"], meta["steps"], meta["guidance"], meta["scheduler"]) == (
            11 + index,
            2,
            6.0,
            "euler-a",
        )
        assert (meta["width"], meta["height"], meta["model"]) == (32, 32, str(tiny_model_dir))
        assert [(c["name"], c["version"], c["sha256"], c["vectors"]) for c in meta["concepts"]] == [
            ("cat-toy", 1, cat.sha256, 3),
            ("birb-style", 1, birb.sha256, 2),
        ]
        assert "'A <cat-toy@1> backpack in the style of <birb-style@1>'" in meta["command"]

    # The metadata is enough to make the second image again, bit for bit.
    _, meta = read_metadata(paths[1])
    again = generate(
        meta["prompt"],
        negative_prompt=meta["negative_prompt"],
        model=meta["model"],
        seed=meta["seed"],
        steps=meta["steps"],
        guidance=meta["guidance"],
        scheduler=meta["scheduler"],
        size=(meta["width"], meta["height"]),
    )
    from PIL import Image

    with Image.open(paths[1]) as saved:
        assert np.array_equal(pixels(again.images[0]), pixels(saved))


@pytest.mark.slow
def test_seed_not_batch_size_decides_the_image(concepts: dict[str, Entry], tiny_model_dir: Path) -> None:
    options = {"model": str(tiny_model_dir), "steps": 2, "seed": 5, "num_images": 3, "scheduler": "euler-a"}
    one_at_a_time = generate(PROMPT, batch_size=1, **options)
    all_at_once = generate(PROMPT, batch_size=3, **options)
    twos = generate(PROMPT, batch_size=2, **options)
    assert one_at_a_time.seeds == all_at_once.seeds == (5, 6, 7)
    for single, batched, paired in zip(one_at_a_time.images, all_at_once.images, twos.images, strict=True):
        for other in (batched, paired):
            # Same starting noise and same sampler noise; only float rounding in batched matrix products may
            # differ, which can move a rare pixel by one level.
            difference = np.abs(pixels(single) - pixels(other))
            assert difference.max() <= 1
            assert (difference > 0).mean() < 0.001
    # The images of one batch are not copies of each other, and another seed gives other images.
    assert np.abs(pixels(one_at_a_time.images[0]) - pixels(one_at_a_time.images[1])).mean() > 5
    other_seed = generate(PROMPT, batch_size=3, **{**options, "seed": 6})
    assert np.abs(pixels(other_seed.images[0]) - pixels(one_at_a_time.images[0])).mean() > 5
    # Seed 6 as the first image of one run is the second image of the other: the same picture.
    assert np.abs(pixels(other_seed.images[0]) - pixels(one_at_a_time.images[1])).max() <= 1


@pytest.mark.slow
def test_input_embeddings_differ_from_the_plain_prompt_only_at_concept_positions(
    concepts: dict[str, Entry], tiny_model_dir: Path
) -> None:
    prepared = prepare(PROMPT, SampleOptions(model=str(tiny_model_dir)))
    assert prepared.text == (
        "A <cat-toy> <cat-toy>_1 <cat-toy>_2 backpack in the style of <birb-style> <birb-style>_1"
    )
    plain_prompt = "A toy toy toy backpack in the style of toy toy"  # one plain token per concept vector
    plain = load_pipeline(str(tiny_model_dir), device="cpu")

    def input_embeddings(pipe, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """What the pipeline's own prompt encoding feeds the text encoder: token ids and their embeddings."""
        captured = []
        table = pipe.text_encoder.get_input_embeddings()
        handle = table.register_forward_hook(lambda module, args, output: captured.append((args[0], output)))
        with torch.no_grad():
            pipe.encode_prompt(text, "cpu", 1, False)
        handle.remove()
        (ids, embeddings), *_ = captured
        return ids[0], embeddings[0]

    ids, with_concepts = input_embeddings(prepared.pipe, prepared.text)
    plain_ids, without = input_embeddings(plain, plain_prompt)
    tokenizer = prepared.pipe.tokenizer
    expected_rows = {}
    for name, entry in concepts.items():
        word = f"<{name}>"
        vectors = entry.embedding().vectors[0]
        for token, row in zip(token_names(word, entry.num_vectors), vectors, strict=True):
            expected_rows[tokenizer.convert_tokens_to_ids(token)] = row
    positions = [i for i, token_id in enumerate(ids.tolist()) if token_id in expected_rows]
    assert positions == [2, 3, 4, 10, 11]  # after <|startoftext|> and "a"

    differs = (with_concepts != without).any(dim=1).nonzero().flatten().tolist()
    assert differs == positions
    same = [i for i in range(len(ids)) if i not in positions]
    assert torch.equal(ids[same], plain_ids[same])
    for position in positions:
        assert torch.equal(with_concepts[position], expected_rows[int(ids[position])])


def test_width_mismatch_is_an_error_before_any_weights_are_loaded(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    Registry().add("big", Embedding("<big>", (torch.zeros(1, 768),)), source={"type": "imported"})
    configs_only = tmp_path / "configs-only"
    shutil.copytree(tiny_model_dir, configs_only)
    for weights in configs_only.rglob("*.safetensors"):
        weights.unlink()  # loading this model would fail: the error must come first
    with pytest.raises(ModelError) as caught:
        generate("a <big> dog", model=str(configs_only))
    assert (
        caught.value.message == "<big> was trained for a 768-wide text encoder (SD 1.x); this model's is 32"
    )


def test_base_model_order(concepts: dict[str, Entry], tmp_path: Path) -> None:
    from tinv_cli.project.load import load_project

    registry = Registry()
    trained = registry.add(
        "sd2-thing",
        Embedding("<sd2-thing>", (torch.zeros(1, WIDTH),)),
        source={"type": "trained"},
        base_model="org/recorded-model",
        base_model_revision="abc",
    )
    (tmp_path / "concepts.toml").write_text('[model]\nbase = "org/project-model"\n', encoding="utf-8")
    project = load_project(tmp_path / "concepts.toml", check_images=False)
    resolved = resolve_concepts(["<cat-toy> <sd2-thing>"], registry, lambda: None)
    assert resolved[1].entry == trained

    def choice(options: SampleOptions, found_project=None):
        chosen = choose_model(options, resolved, lambda: found_project)
        return chosen.base, chosen.revision, chosen.source

    assert choice(SampleOptions(model="org/given"), project) == ("org/given", None, "option")
    assert choice(SampleOptions(), project) == ("org/project-model", None, "project")
    assert choice(SampleOptions()) == ("org/recorded-model", "abc", "concepts")
    nothing_recorded = choose_model(SampleOptions(), resolved[:1], lambda: None)
    assert nothing_recorded.source == "default"


@pytest.mark.slow
def test_every_scheduler_runs(tiny_model_dir: Path) -> None:
    prepared = prepare("a toy", SampleOptions(model=str(tiny_model_dir)))
    pipe = prepared.pipe
    for name, (class_name, _, _) in SCHEDULERS.items():
        set_scheduler(pipe, name)
        assert type(pipe.scheduler).__name__ == class_name
        image = pipe("a toy", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
        assert image.size == (32, 32), name
    set_scheduler(pipe, "dpm++2m-karras")
    assert pipe.scheduler.config.use_karras_sigmas is True
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"  # from the model's own config


def test_bad_options_fail_before_anything_loads() -> None:
    from tinv_cli.errors import TinvError
    from tinv_cli.sampling.sample import parse_size

    for options, message in [
        ({"scheduler": "euler_a"}, "unknown scheduler 'euler_a'"),
        ({"size": (500, 512)}, "multiples of 8"),
        ({"num_images": 0}, "num images must be at least 1"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"dtype": "half"}, "unknown dtype 'half'"),
    ]:
        with pytest.raises(TinvError, match=message):
            generate("a <not-even-looked-up>", model="org/not-loaded", **options)
    assert parse_size("512x768") == (512, 768)
    with pytest.raises(TinvError, match="not WIDTHxHEIGHT"):
        parse_size("512")


@pytest.mark.slow
def test_low_vram_on_cpu_slices_attention_and_keeps_the_image(
    concepts: dict[str, Entry], tiny_model_dir: Path
) -> None:
    options = SampleOptions(model=str(tiny_model_dir), steps=2, seed=3, low_vram=True)
    prepared = prepare(PROMPT, options)
    processors = {type(p).__name__ for p in prepared.pipe.unet.attn_processors.values()}
    assert processors == {"SlicedAttnProcessor"}
    sliced = generate(PROMPT, model=str(tiny_model_dir), steps=2, seed=3, low_vram=True)
    plain = generate(PROMPT, model=str(tiny_model_dir), steps=2, seed=3)
    assert np.abs(pixels(sliced.images[0]) - pixels(plain.images[0])).max() <= 1
