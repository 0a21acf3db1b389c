"""Recipes: the defaults of the settings left out, never of those given in the file, a concept or a flag."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from tests.project.test_project import make_images, write_project
from tinv_cli.project.config import TrainConfig
from tinv_cli.project.load import load_project
from tinv_cli.project.recipes import PAPER, RECIPES, TINV
from tinv_cli.training.request import resolve_concept


def _project(tmp_path: Path, train: str = "", concept_train: str = "") -> Path:
    make_images(tmp_path / "imgs")
    text = f'[train]\n{train}\n[concepts.toy]\nimages = "imgs"\ninitializer = "toy"\n'
    if concept_train:
        text += f"[concepts.toy.train]\n{concept_train}\n"
    return write_project(tmp_path, text)


def test_the_dataclass_defaults_are_the_tinv_recipe_and_both_recipes_set_the_same_keys() -> None:
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    assert {k: defaults[k] for k in TINV} == TINV
    assert set(PAPER) == set(TINV) and set(RECIPES) == {"tinv", "paper"}
    assert TrainConfig().recipe == "tinv"


def test_paper_fills_every_setting_left_out_with_the_examples_values(tmp_path: Path) -> None:
    project = load_project(_project(tmp_path, 'recipe = "paper"'))
    train = project.concepts["toy"].train
    assert {k: getattr(train, k) for k in PAPER} == PAPER
    assert train.recipe == "paper"


def test_a_given_setting_wins_over_the_recipe_at_every_level(tmp_path: Path) -> None:
    path = _project(tmp_path, 'recipe = "paper"\nsteps = 50', "learning_rate = 0.01")
    project = load_project(path)
    train = project.concepts["toy"].train
    assert (train.steps, train.learning_rate) == (50, 0.01)
    assert train.gradient_accumulation == PAPER["gradient_accumulation"]
    # On the command line: --recipe tinv switches what was left out, and keeps what was given.
    _, cli = resolve_concept(project, "toy", {"recipe": "tinv", "batch_size": 3})
    assert (cli.steps, cli.learning_rate, cli.batch_size) == (50, 0.01, 3)
    assert cli.gradient_accumulation == TINV["gradient_accumulation"]
    assert cli.lr_scheduler == TINV["lr_scheduler"]


def test_a_concept_can_choose_its_own_recipe(tmp_path: Path) -> None:
    project = load_project(_project(tmp_path, "steps = 77", 'recipe = "paper"'))
    train = project.concepts["toy"].train
    assert train.recipe == "paper" and train.steps == 77
    assert {k: getattr(train, k) for k in PAPER if k != "steps"} == {
        k: v for k, v in PAPER.items() if k != "steps"
    }
    assert project.train.recipe == "tinv"


def test_the_recipe_name_is_not_part_of_a_runs_identity() -> None:
    from tinv_cli.training import resume

    paper = TrainConfig.from_settings({"recipe": "paper"})
    same = TrainConfig.from_settings({"recipe": "tinv", **PAPER})
    assert paper.to_dict() != same.to_dict()  # only the name differs
    hashed = [{k: v for k, v in c.to_dict().items() if k not in resume._NOT_HASHED} for c in (paper, same)]
    assert hashed[0] == hashed[1]


def test_tinv_is_the_paper_with_early_stopping_and_paper_turns_it_off(tmp_path: Path) -> None:
    """The one measured difference (docs/quality.md): switching recipe switches early stopping, nothing else."""
    assert {k for k in TINV if TINV[k] != PAPER[k]} == {"early_stop_every"}
    tinv = load_project(_project(tmp_path / "a")).concepts["toy"].train
    paper = load_project(_project(tmp_path / "b", 'recipe = "paper"')).concepts["toy"].train
    assert (tinv.early_stop_every, paper.early_stop_every) == (50, 0)
    given = load_project(_project(tmp_path / "c", "early_stop_every = 0")).concepts["toy"].train
    assert given.early_stop_every == 0
