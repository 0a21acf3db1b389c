"""A single-file checkpoint wherever tinv takes a model, through the CLI, offline with an empty Hugging Face
cache: `tinv check`, `tinv train`, `tinv sample` and `tinv eval` name the checkpoint's family before any weights
load, and the same weights as a diffusers folder and as one file train the same vectors and sample the same
pixels."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.helpers import make_project
from tests.ldm_layout import save_config_folder, write_checkpoint
from tests.tiny import build_tiny_pipeline, build_tiny_sdxl_pipeline
from tinv_cli.cli import app
from tinv_cli.registry.store import Registry

runner = CliRunner()


def _models(root: Path, kind: str) -> tuple[Path, Path, Path]:
    """(diffusers folder, single-file checkpoint, config folder) of one tiny pipeline's weights."""
    pipe = build_tiny_sdxl_pipeline() if kind == "sdxl" else build_tiny_pipeline()
    folder = root / "folder"
    pipe.save_pretrained(folder)
    checkpoint = write_checkpoint(pipe, root / f"my-{kind}.safetensors")
    return folder, checkpoint, save_config_folder(pipe, root / "config")


def _project(root: Path, base: Path, config: Path | None) -> Path:
    path = make_project(root, base, train={"steps": 2})
    if config is not None:
        text = path.read_text().replace("[train]", f"config = {json.dumps(str(config))}\n\n[train]", 1)
        path.write_text(text)
    return path


def _ok(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return str(result.stderr)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "label"), [("sd1", "SD 1.x"), ("sdxl", "SDXL")])
def test_check_train_sample_eval_on_a_checkpoint_match_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, label: str
) -> None:
    from tests.evaluation.test_eval import _save_tiny_clip

    assert not any((Path(os.environ["HF_HOME"])).glob("**/*.json"))  # the Hugging Face cache is empty
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    folder, checkpoint, config = _models(tmp_path / "models", kind)
    found = f"my-{kind}.safetensors: {label} single-file checkpoint".lower()
    results = {}
    for name, base, cfg in (("file", checkpoint, config), ("folder", folder, None)):
        monkeypatch.setenv("TINV_HOME", str(tmp_path / name / "home"))
        project = _project(tmp_path / name, base, cfg)
        check = _ok(runner.invoke(app, ["check", "--project", str(project)]))
        train = _ok(runner.invoke(app, ["train", "cat-toy", "--project", str(project)]))
        out = tmp_path / name / "samples"
        args = [
            "sample",
            "a <cat-toy>",
            "--seed",
            "1",
            "--steps",
            "2",
            "-o",
            str(out),
            "--project",
            str(project),
        ]
        sample = _ok(runner.invoke(app, args))
        if name == "file":
            # (sample's and eval's displays capitalise a progress line's first letter)
            for stderr in (check, train, sample):
                assert found in stderr.lower()
            # Named first: before the training set-up's other messages, and as sample's first line.
            assert train.strip().splitlines()[0].lower().startswith(found)
            assert sample.strip().splitlines()[0].lower().startswith(found)
        entry = Registry().get("cat-toy")
        results[name] = (
            entry.embedding().vectors,
            [np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))],
            entry,
        )
    (file_vectors, file_pixels, file_entry), (folder_vectors, folder_pixels, _) = (
        results["file"],
        results["folder"],
    )
    assert all((a == b).all() for a, b in zip(file_vectors, folder_vectors, strict=True))
    assert file_pixels and all(np.array_equal(a, b) for a, b in zip(file_pixels, folder_pixels, strict=True))

    sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert file_entry.base_model == str(checkpoint)
    assert file_entry.base_model_sha256 == sha and file_entry.base_model_hash == sha[:10]
    assert file_entry.base_model_file["config"] == str(config)

    # eval samples on the checkpoint the entry records, read with the config it was trained with.
    monkeypatch.setenv("TINV_HOME", str(tmp_path / "file" / "home"))
    clip = _save_tiny_clip(tmp_path / "clip")
    args = [
        "eval",
        "cat-toy",
        "-n",
        "1",
        "--steps",
        "1",
        "--clip-model",
        str(clip),
        "--out",
        str(tmp_path / "e.png"),
    ]
    evaluated = _ok(runner.invoke(app, args))
    assert evaluated.strip().splitlines()[0].lower().startswith(found)


def test_sample_with_model_config_and_prediction_flags(tmp_path: Path) -> None:
    _, checkpoint, config = _models(tmp_path, "sd1")
    args = ["sample", "a cat", "--model", str(checkpoint), "--model-config", str(config), "--steps", "1"]
    stderr = _ok(
        runner.invoke(app, [*args, "--prediction", "v_prediction", "--seed", "0", "-o", str(tmp_path / "o")])
    )
    assert "my-sd1.safetensors: sd 1.x single-file checkpoint (v_prediction, from setting)" in stderr.lower()


def test_check_names_an_unknown_checkpoint_in_one_line(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    lora = tmp_path / "style-lora.safetensors"
    save_file({"lora_unet_down.lora_down.weight": torch.zeros(4, 8)}, str(lora))
    project = make_project(tmp_path, lora)
    result = runner.invoke(app, ["check", "--project", str(project)])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "[model] base: style-lora.safetensors is not a base model" in errors[0]
    assert "a LoRA" in errors[0] and ":2:" in errors[0]


def test_a_relative_checkpoint_path_in_the_project_is_the_file(tmp_path: Path) -> None:
    _, checkpoint, _ = _models(tmp_path / "models", "sd1")
    project = make_project(tmp_path, checkpoint)
    project.write_text(
        project.read_text().replace(json.dumps(str(checkpoint)), '"models/my-sd1.safetensors"')
    )
    stderr = _ok(runner.invoke(app, ["check", "--project", str(project)]))
    assert "my-sd1.safetensors: SD 1.x single-file checkpoint" in stderr
