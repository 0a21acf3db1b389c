"""`tinv eval`: the judge on builtin:shapes, CLIP metrics elsewhere, and a clear error without a CLIP model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tinv_cli.cli import app
from tinv_cli.embedding import Embedding
from tinv_cli.registry.store import Registry
from tinv_cli.shapes import world

runner = CliRunner()


def _images(folder: Path, count: int, **fixed: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(world.images(99, count, **fixed)):
        paths.append(folder / f"{i}.png")
        image.save(paths[-1])
    return paths


def _register(name: str, vector: object, images: list[Path], base: str, initializer: str | None) -> None:
    Registry().add(
        name,
        Embedding(f"<{name}>", (vector,)),  # type: ignore[arg-type]
        source={"type": "trained"},
        images=images,
        base_model=base,
        training={"initializer": initializer} if initializer else None,
    )


@pytest.mark.slow
def test_eval_on_builtin_shapes_judges_samples_against_the_initializer(tmp_path: Path) -> None:
    from tinv_cli.models.loading import load_pipeline

    pipe = load_pipeline("builtin:shapes")
    table = pipe.text_encoder.get_input_embeddings().weight
    diamond = table[pipe.tokenizer.convert_tokens_to_ids("diamond</w>")].detach().clone()[None]
    _register(
        "kite",
        diamond,
        _images(tmp_path / "img", 3, colour="purple", shape="diamond"),
        "builtin:shapes",
        "diamond",
    )

    out = tmp_path / "kite.png"
    result = runner.invoke(app, ["eval", "kite", "--json", "-n", "4", "--steps", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["method"] == "judge" and report["model"] == "builtin:shapes"
    assert report["target"] == "purple diamond"  # read by the judge from the training images
    assert report["prompt"] == "a photo of a <kite>" and report["baseline_prompt"] == "a photo of a diamond"
    assert report["samples"] == 4 and sum(report["verdicts"].values()) == 4
    assert set(report["scores"]) == {"concept_accuracy", "baseline_accuracy"}
    assert all(0.0 <= value <= 1.0 for value in report["scores"].values())
    from PIL import Image

    with Image.open(out) as picture:  # three panels of 64 px cells: training images, concept, baseline
        assert picture.width >= 3 * 2 * 64

    result = runner.invoke(app, ["eval", "kite", "-n", "2", "--steps", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "concept accuracy" in result.output and "purple diamond" in result.output


def test_eval_elsewhere_needs_a_local_clip_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    import torch

    _register("thing", torch.zeros(1, 32), _images(tmp_path / "img", 2), str(tiny_model_dir), "toy")
    result = runner.invoke(
        app, ["eval", "thing", "-n", "1", "--steps", "1", "--clip-model", "nobody/no-clip"]
    )
    assert result.exit_code == 1
    assert "no CLIP model 'nobody/no-clip' on this machine" in result.output
    assert "hf download nobody/no-clip" in result.output


def _save_tiny_clip(folder: Path) -> Path:
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTextConfig,
        CLIPTokenizer,
        CLIPVisionConfig,
    )

    from tests.tiny import TOKENIZER_DIR

    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR)
    torch_config = CLIPConfig(
        text_config=CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=4,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ).to_dict(),
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        ).to_dict(),
        projection_dim=16,
    )
    CLIPModel(torch_config).save_pretrained(folder)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    processor.save_pretrained(folder)
    return folder


@pytest.mark.filterwarnings("ignore")
def test_eval_elsewhere_reports_the_papers_clip_metrics(tmp_path: Path, tiny_model_dir: Path) -> None:
    import torch

    clip = _save_tiny_clip(tmp_path / "clip")
    _register("thing", torch.zeros(1, 32), _images(tmp_path / "img", 2), str(tiny_model_dir), "toy")
    result = runner.invoke(
        app,
        [
            "eval",
            "thing",
            "--json",
            "-n",
            "2",
            "--steps",
            "2",
            "--clip-model",
            str(clip),
            "--out",
            str(tmp_path / "thing.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["method"] == "clip" and report["target"] is None
    assert set(report["scores"]) == {"image_similarity", "text_similarity"}
    assert all(-1.0 <= value <= 1.0 for value in report["scores"].values())
    assert (tmp_path / "thing.png").is_file()


def test_eval_of_an_entry_without_a_base_model_asks_for_one(tmp_path: Path) -> None:
    import torch

    Registry().add("stray", Embedding("<stray>", (torch.zeros(1, 32),)), source={"type": "imported"})
    result = runner.invoke(app, ["eval", "stray", "-n", "1", "--steps", "1"])
    assert result.exit_code == 1
    assert "does not record the model it was trained on" in result.output
    assert "--model" in result.output

    result = runner.invoke(app, ["eval", "stray", "--model", "builtin:shapes", "-n", "1", "--steps", "1"])
    assert result.exit_code == 1
    assert "no training images in its registry entry" in result.output and "--images" in result.output


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_eval_with_model_and_images_scores_an_imported_entry(tmp_path: Path, tiny_model_dir: Path) -> None:
    import torch

    clip = _save_tiny_clip(tmp_path / "clip")
    Registry().add("stray", Embedding("<stray>", (torch.zeros(1, 32),)), source={"type": "imported"})
    _images(tmp_path / "refs", 2)
    args = ["eval", "stray", "--json", "-n", "2", "--steps", "2", "--clip-model", str(clip)]
    args += ["--model", str(tiny_model_dir), "--images", str(tmp_path / "refs")]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "stray.png")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["model"] == str(tiny_model_dir) and report["method"] == "clip"
    assert set(report["scores"]) == {"image_similarity", "text_similarity"}
