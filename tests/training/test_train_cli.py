"""`tinv train` as a user meets it: options, one-line errors that leave the registry untouched, resuming and
restarting, versions, --from, and the summary."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.helpers import Recorder, make_project
from tinv_cli.cli import app
from tinv_cli.project.config import Concept, TrainConfig
from tinv_cli.project.load import load_project
from tinv_cli.project.schema import table_settings
from tinv_cli.registry.store import Registry
from tinv_cli.training.recipe import train
from tinv_cli.training.request import TrainingInterrupted, TrainRequest

runner = CliRunner()


def invoke(project: Path, *args: str):
    return runner.invoke(app, ["train", *args, "--project", str(project)])


def _untouched() -> bool:
    home = Path(os.environ["TINV_HOME"])
    return not (home / "registry").exists() and not (home / "runs").exists()


def _vectors(ref: str) -> torch.Tensor:
    return Registry().get(ref).embedding().vectors[0]


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    assert result.stdout == ""
    return errors[0]


def test_every_train_setting_has_an_option() -> None:
    import typer.main

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    params = {p.name for p in command.params if p.param_type_name == "option"}
    missing = set(TrainConfig.field_names()) - params
    assert not missing, f"TrainConfig fields without a --option: {sorted(missing)}"
    for concept_field in ("vectors", "initializer", "init", "validation_prompt"):
        assert concept_field in params
    help_text = runner.invoke(app, ["train", "--help"]).output
    for flag in (
        "--steps",
        "--lr",
        "--batch-size",
        "--resolution",
        "--mixed-precision",
        "--vectors",
        "--seed",
    ):
        assert flag in help_text


def test_each_option_is_its_setting_with_the_help_of_the_file() -> None:
    import typer.main

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    options = {p.name: p for p in command.params if p.param_type_name == "option"}
    concept = table_settings(Concept)
    overrides = ("vectors", "initializer", "init", "validation_prompt")
    expected = {**table_settings(TrainConfig), **{key: concept[key] for key in overrides}}
    for name, setting in expected.items():
        option = options[name]
        flag = "--" + name.replace("_", "-")
        assert flag in option.opts and option.help == setting.help_text and option.default is None
        assert option.secondary_opts == (["--no-" + flag[2:]] if setting.kind is bool else [])
        assert option.rich_help_panel.startswith("Concept" if name in concept else "Training")  # type: ignore[attr-defined]
    assert options["learning_rate"].opts == ["--lr", "--learning-rate"]


def test_misspelled_concept(tmp_path: Path, tiny_model_dir: Path) -> None:
    project = make_project(tmp_path, tiny_model_dir)
    line = _one_line_error(invoke(project, "cat-tyo"))
    assert "no concept 'cat-tyo'" in line and "did you mean 'cat-toy'?" in line
    assert _untouched()


def test_empty_image_folder(tmp_path: Path, tiny_model_dir: Path) -> None:
    project = make_project(tmp_path, tiny_model_dir, images=0)
    line = _one_line_error(invoke(project, "cat-toy"))
    assert "holds no images" in line and str(tmp_path / "images") in line
    assert _untouched()


def test_corrupt_image(tmp_path: Path, tiny_model_dir: Path) -> None:
    project = make_project(tmp_path, tiny_model_dir)
    (tmp_path / "images" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    line = _one_line_error(invoke(project, "cat-toy"))
    assert str(tmp_path / "images" / "1.png") in line
    assert _untouched()


def test_token_already_in_the_tokenizer(tmp_path: Path, tiny_model_dir: Path) -> None:
    project = make_project(tmp_path, tiny_model_dir, concept={"token": "<|endoftext|>"})
    line = _one_line_error(invoke(project, "cat-toy"))
    assert "<|endoftext|> is already a word of the base model's tokenizer" in line
    assert _untouched()


def test_initializer_not_in_the_vocabulary(tmp_path: Path, tiny_model_dir: Path) -> None:
    project = make_project(tmp_path, tiny_model_dir)
    line = _one_line_error(invoke(project, "cat-toy", "--initializer", "toy qwzxv"))
    assert "initializer word 'qwzxv' is not in the base model's vocabulary" in line
    assert _untouched()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--lr-scheduler", "sideways"], "choose one of constant"),
        (["--mixed-precision", "fp8"], "choose one of no, fp16, bf16"),
        (["--init", "lucky"], "choose one of initializer, random, zero"),
        (["--resolution", "33"], "multiple of 8"),
        (["--report-to", "wandb"], "choose one of tensorboard"),
        (["--init", "initializer", "--from", "nothing-here"], "nothing-here"),
        # The file's rules, with tinv's one-line error rather than a usage screen.
        (["--steps", "0"], "--steps 0: must be at least 1"),
        (["--lr", "0"], "--learning-rate 0.0: must be greater than 0"),
        (["--flip-p", "1.5"], "between 0 and 1"),
        (["--seed", "4294967296"], "between 0 and 4294967295"),
        (["--vectors", "76"], "--vectors 76: must be between 1 and 75"),
        (["--initializer", " "], "must be a non-empty string"),
        (["--lr-scheduler", "cosin"], 'did you mean "cosine"?'),
    ],
)
def test_bad_settings_are_refused_before_any_work(
    tmp_path: Path, tiny_model_dir: Path, args: list[str], words: str
) -> None:
    project = make_project(tmp_path, tiny_model_dir)
    assert words in _one_line_error(invoke(project, "cat-toy", *args))
    assert _untouched()


def test_a_name_the_registry_would_refuse_fails_before_anything_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    import tinv_cli.training.recipe

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(tinv_cli.training.recipe, "train", no_training)
    (tmp_path / "images").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "images" / "0.png")
    name = "a" * 97  # Registry.add refuses it: the registry's and the Hub's limit is 96 characters
    project = tmp_path / "concepts.toml"
    project.write_text(
        f'[model]\nbase = "org/model"\n\n[concepts.{name}]\nimages = "images"\ninitializer = "toy"\n'
    )
    line = _one_line_error(invoke(project, name))
    assert line.startswith(f"Error: {project}:4: concept name") and "at most 96 characters" in line
    assert _untouched()


def test_tensorboard_needs_its_package(tmp_path: Path, tiny_model_dir: Path) -> None:
    from accelerate.utils import is_tensorboard_available

    if is_tensorboard_available():
        pytest.skip("tensorboard is installed here")
    project = make_project(tmp_path, tiny_model_dir)
    result = invoke(project, "cat-toy", "--report-to", "tensorboard")
    assert "needs the tensorboard package" in _one_line_error(result)
    assert "Hint: pip install tensorboard" in result.stderr


@pytest.mark.slow
def test_versions_from_and_summary(tmp_path: Path, tiny_model_dir: Path) -> None:
    project = make_project(tmp_path, tiny_model_dir, train={"steps": 2, "mixed_precision": "fp16"})
    first = invoke(project, "cat-toy")
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == "cat-toy@1"
    # Defaults assume a GPU: on the CPU fp16 falls back to full precision, and says so.
    assert "fp16 mixed precision needs a GPU" in first.stderr
    assert "Trained cat-toy@1 (<cat-toy>)" in first.stderr and "final loss" in first.stderr
    assert "peak memory" in first.stderr and str(Registry().get("cat-toy@1").path) in first.stderr

    # A finished run is not resumed: the same command trains afresh and adds the next version.
    second = invoke(project, "cat-toy", "--json")
    assert second.exit_code == 0, second.output
    data = json.loads(second.stdout)
    assert data["entry"] == "cat-toy@2" and data["start_step"] == 0 and data["mixed_precision"] == "no"
    # Same seed, same settings: the fresh run repeats the first one exactly.
    assert torch.equal(_vectors("cat-toy@1"), _vectors("cat-toy@2"))

    # --from starts from an entry's vectors: with a negligible learning rate they barely move.
    third = invoke(project, "cat-toy", "--from", "cat-toy@1", "--lr", "1e-12", "--steps", "1", "--json")
    assert third.exit_code == 0, third.output
    entry = Registry().get(json.loads(third.stdout)["entry"])
    assert entry.version == 3 and entry.info["training"]["init"] == "entry"
    assert entry.info["training"]["from_entry"] == "cat-toy@1"
    torch.testing.assert_close(entry.embedding().vectors[0], _vectors("cat-toy@1"))


@pytest.mark.slow
def test_changed_settings_refuse_to_resume_until_restart(tmp_path: Path, tiny_model_dir: Path) -> None:
    project = make_project(tmp_path, tiny_model_dir, train={"steps": 4})
    with pytest.raises(TrainingInterrupted):
        train(TrainRequest(load_project(project), "cat-toy"), Recorder(interrupt_at=1, sig=signal.SIGINT))

    refused = invoke(project, "cat-toy", "--lr", "1e-3")
    line = _one_line_error(refused)
    assert "checkpoint at step 1/4" in line and "train.learning_rate 0.0005 -> 0.001" in line
    assert "Hint: run `tinv train cat-toy --restart`" in refused.stderr
    assert Registry().list() == []

    restarted = invoke(project, "cat-toy", "--lr", "1e-3", "--restart", "--json")
    assert restarted.exit_code == 0, restarted.output
    data = json.loads(restarted.stdout)
    assert data["entry"] == "cat-toy@1" and data["start_step"] == 0

    # The same settings as the interrupted run would have resumed it instead.
    with pytest.raises(TrainingInterrupted):
        train(TrainRequest(load_project(project), "cat-toy"), Recorder(interrupt_at=2, sig=signal.SIGINT))
    resumed = invoke(project, "cat-toy", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["start_step"] == 2
    assert "Resuming cat-toy from its checkpoint at step 2/4" in resumed.stderr


def test_the_hint_for_a_missing_concept_names_it(tmp_path: Path, tiny_model_dir: Path) -> None:
    result = invoke(make_project(tmp_path, tiny_model_dir), "dog")
    assert "Hint: concepts in this project: cat-toy; add dog with `tinv init --concept dog --images DIR`" in (
        result.stderr
    )
