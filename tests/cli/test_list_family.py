"""``tinv list`` and ``show`` name the family of every concept, builtin:shapes ones included."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from tinv_cli.cli import app
from tinv_cli.embedding import Embedding
from tinv_cli.models.configs import model_widths_from_config
from tinv_cli.registry.store import Registry

runner = CliRunner()


def test_a_shapes_concept_lists_its_family_and_model() -> None:
    # What training on builtin:shapes registers: vectors as wide as the shapes model's encoder, and the base.
    widths = model_widths_from_config("builtin:shapes")
    assert widths is not None
    registry = Registry()
    registry.add(
        "red-square",
        Embedding("<red-square>", tuple(torch.zeros(1, w) for w in widths)),
        source={"type": "trained"},
        base_model="builtin:shapes",
    )
    registry.add("sd-concept", Embedding("<sd>", (torch.zeros(1, 768),)), source={"type": "imported"})
    registry.add("odd-width", Embedding("<odd>", (torch.zeros(1, 48),)), source={"type": "imported"})

    listed = runner.invoke(app, ["list"])

    assert listed.exit_code == 0, listed.output
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "SD 1.x/2.x (builtin:shapes)" in rows["red-square"]
    assert "SD 1.x" in rows["sd-concept"]
    assert " ? " in rows["odd-width"]  # nothing recorded says which model: an honest "?"
    data = {e["name"]: e for e in json.loads(runner.invoke(app, ["list", "--json"]).stdout)}
    assert data["red-square"]["family"] is None  # the variant id stays what it was: no known variant
    assert data["red-square"]["family_label"] == "SD 1.x/2.x (builtin:shapes)"

    shown = runner.invoke(app, ["show", "red-square"])
    assert "SD 1.x/2.x (builtin:shapes)" in shown.stdout
