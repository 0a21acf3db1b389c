"""One schema of the project file: a setting declared once in ``config.py`` is a key the loader accepts and
checks, a line of the template ``tinv init`` writes, and an option of ``tinv train`` checked with the same rule."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tinv_cli.project.config import Concept, HubConfig, ModelConfig, TrainConfig
from tinv_cli.project.schema import Setting, at_least, between, check_value, setting, table_settings
from tinv_cli.project.template import toml_value

# Runs in a fresh interpreter: the new setting must be in place before any module reads TrainConfig.
_WITH_A_NEW_SETTING = textwrap.dedent(
    """
    import dataclasses, json, sys
    from pathlib import Path

    from tinv_cli.project import config, schema

    @dataclasses.dataclass(frozen=True)
    class TrainConfig(config.TrainConfig):
        warmup_ratio: float = schema.setting(0.25, "share of the steps spent warming up", schema.between(0, 1))

    config.TrainConfig = TrainConfig  # the one declaration; nothing else is told about the setting

    import typer.main
    from typer.testing import CliRunner

    import tinv_cli.training.recipe
    from tinv_cli.cli import app
    from tinv_cli.errors import ProjectError, TinvError
    from tinv_cli.project.load import parse_project_text
    from tinv_cli.project.template import TEMPLATE
    from tinv_cli.training.request import resolve_concept

    root = Path(sys.argv[1])
    out = {"template": [line for line in TEMPLATE.splitlines() if "warmup_ratio" in line]}
    out["template_value"] = parse_project_text(TEMPLATE, root / "concepts.toml").train.warmup_ratio
    out["file_value"] = parse_project_text("[train]\\nwarmup_ratio = 1\\n", root / "x.toml").train.warmup_ratio
    try:
        parse_project_text("[train]\\nwarmup_ratio = 2\\n", root / "x.toml")
    except ProjectError as error:
        out["file_problem"] = error.message

    option = next(p for p in typer.main.get_command(app).commands["train"].params if p.name == "warmup_ratio")
    out["option"] = [option.opts, option.help]
    seen = []

    def train(request, callbacks, registry=None):
        seen.append(resolve_concept(request.project, request.concept, request.overrides)[1].warmup_ratio)
        raise TinvError("stopped before training")

    tinv_cli.training.recipe.train = train
    runner = CliRunner()
    for value in ("0.5", "2"):
        args = ["train", "cat-toy", "--project", str(root / "concepts.toml"), "--warmup-ratio", value]
        out[f"flag {value}"] = runner.invoke(app, args).stderr.splitlines()[0]
    out["seen"] = seen
    print(json.dumps(out))
    """
)


def test_a_setting_declared_once_reaches_the_validator_the_template_and_the_flags(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "images" / "0.png")
    (tmp_path / "concepts.toml").write_text(
        '[model]\nbase = "org/model"\n\n[concepts.cat-toy]\nimages = "images"\ninitializer = "toy"\n'
    )
    env = {**os.environ, "TINV_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [sys.executable, "-c", _WITH_A_NEW_SETTING, str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)

    assert out["template"] == [f"{'warmup_ratio = 0.25':<30} # share of the steps spent warming up"]
    assert out["template_value"] == 0.25 and out["file_value"] == 1.0
    assert "[train] warmup_ratio: must be between 0 and 1, found 2" in out["file_problem"]
    assert out["option"] == [["--warmup-ratio"], "Share of the steps spent warming up.  [between 0 and 1]"]
    assert out["flag 0.5"] == "Error: stopped before training" and out["seen"] == [0.5]
    assert out["flag 2"] == "Error: --warmup-ratio 2.0: must be between 0 and 1"


# --- the schema's parts -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", [TrainConfig, ModelConfig, HubConfig, Concept])
def test_every_setting_has_help_and_a_default_the_rule_accepts(table: type) -> None:
    for name, found in table_settings(table).items():
        # One text for the template's comment and, made a sentence, the option's help.
        assert found.help and not found.help.endswith("."), name
        assert found.shown is not None, f"{name} has neither a default nor an example"
        assert check_value(found, found.shown) == (None, found.shown), name


def test_types_and_choices_come_from_the_annotations() -> None:
    train, concept = table_settings(TrainConfig), table_settings(Concept)
    assert (train["steps"].kind, train["learning_rate"].kind, train["scale_lr"].kind) == (int, float, bool)
    assert train["mixed_precision"].choices == ("no", "fp16", "bf16")
    assert concept["images"].kind is str  # a Path in the dataclass, a string in the file
    assert concept["initializer"].kind is str and concept["initializer"].default is None
    assert "name" not in concept and "train" not in concept  # the table's name and sub-table are not keys
    assert concept["token"].default is dataclasses.MISSING and not concept["token"].writes_default


def test_a_dataclass_of_settings_is_a_schema() -> None:
    @dataclasses.dataclass(frozen=True)
    class Table:
        size: int = setting(8, "how many", at_least(1))
        share: float = setting(0.5, "how much", between(0, 1))

    size, share = table_settings(Table).values()
    assert size == Setting("size", int, 8, "how many", rule=size.rule)
    assert check_value(size, 0) == ("must be at least 1, found 0", 0)
    assert check_value(size, 0, on_command_line=True) == ("must be at least 1", 0)
    assert check_value(share, 1) == (None, 1.0)  # an integer where a number is expected
    assert check_value(size, True) == ("expected an integer, found true", True)
    assert share.help_text == "How much.  [between 0 and 1]" and share.comment == "how much"


def test_choices_are_worded_for_where_the_value_was_written() -> None:
    scheduler = table_settings(TrainConfig)["lr_scheduler"]
    assert 'not one of "constant", ' in str(check_value(scheduler, "cosin")[0])
    problem = check_value(scheduler, "cosin", on_command_line=True)[0]
    assert problem == (
        "choose one of constant, constant_with_warmup, linear, cosine, cosine_with_restarts, polynomial"
        '; did you mean "cosine"?'
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (5.0e-4, "5.0e-4"),
        (1.0e-2, "1.0e-2"),
        (1.0e-8, "1.0e-8"),
        (1.2345e-5, "1.2345e-5"),
        (0.0, "0.0"),
        (0.5, "0.5"),
        (0.999, "0.999"),
        (3000, "3000"),
        (True, "true"),
        ('a "b"', '"a \\"b\\""'),
    ],
)
def test_template_values(value: object, text: str) -> None:
    assert toml_value(value) == text
