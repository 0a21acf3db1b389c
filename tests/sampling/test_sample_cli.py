"""`tinv sample` as a user runs it: stdout carries paths (or JSON), stderr progress and errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.helpers import read_metadata
from tinv_cli.cli import app
from tinv_cli.cli.sample_cmd import SCHEDULER_NAMES
from tinv_cli.embedding import Embedding
from tinv_cli.registry.store import Registry
from tinv_cli.sampling.sample import SCHEDULERS

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["sample", *args])


@pytest.fixture
def cat_toy() -> None:
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    Registry().add("cat-toy", Embedding("<cat-toy>", (vectors,)), source={"type": "imported"})


def test_help_documents_concepts_and_version_pins() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "<cat-toy@2>" in text
    for option in ("--num-images", "--seed", "--steps", "--guidance", "--negative", "--scheduler", "--size"):
        assert option in text
    for option in (
        "--model",
        "--out",
        "--grid",
        "--device",
        "--dtype",
        "--batch-size",
        "--low-vram",
        "--json",
    ):
        assert option in text
    assert SCHEDULER_NAMES.split(", ") == list(SCHEDULERS)


def test_unknown_concept_exits_1_naming_the_closest(cat_toy: None, tmp_path: Path) -> None:
    result = invoke("A <cat-tyo> backpack", "--model", "org/never-loaded", "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "Error: no concept <cat-tyo> in the registry or the project; closest: <cat-toy>"
    assert lines[1].startswith("Hint: see `tinv list`")
    assert len(lines) == 2
    assert not (tmp_path / "out").exists()


def test_writes_images_and_grid_and_prints_their_paths(
    cat_toy: None, tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["A <cat-toy> backpack", "--model", str(tiny_model_dir), "-n", "3", "--seed", "7", "--steps", "2"]
    result = invoke(*args, "--batch-size", "2", "--scheduler", "ddim", "--out", str(out), "--grid")
    assert result.exit_code == 0, result.stderr
    paths = [Path(line) for line in result.stdout.splitlines()]
    assert [p.name for p in paths] == [
        "a-cat-toy-backpack-7.png",
        "a-cat-toy-backpack-8.png",
        "a-cat-toy-backpack-9.png",
        "a-cat-toy-backpack-7-grid.png",
    ]
    assert all(p.parent == out and p.is_file() for p in paths)
    assert "Loading" in result.stderr
    # tinv reports its own progress; the libraries' loading bars and notices stay off the terminal.
    assert "Loading pipeline components" not in result.stderr and "torchvision" not in result.stderr
    parameters, meta = read_metadata(paths[-1])
    assert parameters["Sampler"] == "DDIM"
    assert meta["grid"] == {"seeds": [7, 8, 9], "files": [p.name for p in paths[:3]]}

    # The same command again writes new files beside the old ones.
    again = invoke(*args, "--out", str(out))
    assert again.exit_code == 0, again.stderr
    assert [Path(line).name for line in again.stdout.splitlines()] == [
        "a-cat-toy-backpack-7-2.png",
        "a-cat-toy-backpack-8-2.png",
        "a-cat-toy-backpack-9-2.png",
    ]


def test_json_and_the_project_model(cat_toy: None, tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    # No --model: the project file's base model is used.
    (tmp_path / "concepts.toml").write_text(
        f'[model]\nbase = "{tiny_model_dir.as_posix()}"\n', encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    result = invoke("<cat-toy>", "--steps", "1", "--seed", "3", "--size", "48x32", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["model"] == str(tiny_model_dir)
    assert data["model_source"] == "project"
    assert data["size"] == [48, 32]
    assert data["grid"] is None
    (image,) = data["images"]
    assert image["seed"] == 3
    assert Path(image["path"]).parent == tmp_path / "samples"
    assert [c["name"] for c in data["concepts"]] == ["cat-toy"]
    _, meta = read_metadata(Path(image["path"]))
    assert (meta["width"], meta["height"]) == (48, 32)


def test_width_mismatch_and_bad_size_exit_1(tiny_model_dir: Path) -> None:
    Registry().add("big", Embedding("<big>", (torch.zeros(1, 1024),)), source={"type": "imported"})
    result = invoke("a <big> dog", "--model", str(tiny_model_dir))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        "Error: <big> was trained for a 1024-wide text encoder (SD 2.x); this model's is 32"
    )
    result = invoke("a dog", "--size", "512by512")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: size '512by512' is not WIDTHxHEIGHT")


def test_python_api_is_importable_without_torch() -> None:
    code = (
        "import sys, tinv_cli\n"
        "generate = tinv_cli.generate\n"
        "assert callable(generate) and generate.__module__ == 'tinv_cli.sampling.sample'\n"
        "print(','.join(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules) or 'none')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "none"
