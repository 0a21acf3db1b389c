"""Importing a file whose token another entry already has: said at import, and in the prompt's resolution the
entry named after the token keeps it, with the others reported (sampling/prompt.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from tinv_cli.cli.app import app
from tinv_cli.embedding import Embedding
from tinv_cli.registry.store import Registry
from tinv_cli.registry.transfer import import_file
from tinv_cli.sampling.prompt import resolve_concepts


def _file(tmp_path: Path, name: str, token: str) -> Path:
    path = tmp_path / f"{name}.safetensors"
    save_file({token: torch.randn(1, 32)}, str(path))
    return path


def test_import_reports_a_token_another_entry_has(tmp_path: Path) -> None:
    registry = Registry()
    first = import_file(registry, _file(tmp_path, "one", "<cat-toy>"))
    assert first.shared_with == () and first.resolves_to is None

    # "aaa" sorts before "cat-toy": by name order alone it would silently take <cat-toy> over.
    second = import_file(registry, _file(tmp_path, "two", "<cat-toy>"), name="aaa")
    assert [e.ref for e in second.shared_with] == ["cat-toy@1"]
    assert second.resolves_to is not None and second.resolves_to.ref == "cat-toy@1"

    # A new version of the same name is no clash.
    assert import_file(registry, _file(tmp_path, "three", "<cat-toy>")).shared_with == (second.entry,)


def test_import_command_prints_a_one_line_note(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["import", str(_file(tmp_path, "a", "<violet-kite>"))]).exit_code == 0
    result = runner.invoke(app, ["import", str(_file(tmp_path, "b", "<violet-kite>")), "--name", "kite2"])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("Note:")]
    assert len(notes) == 1
    assert "violet-kite@1" in notes[0] and "<kite2>" in notes[0]
    assert "now means violet-kite@1, not this one" in notes[0]

    as_json = runner.invoke(
        app, ["import", str(_file(tmp_path, "c", "<violet-kite>")), "--name", "k3", "--json"]
    )
    assert as_json.exit_code == 0
    payload = json.loads(as_json.stdout)
    assert sorted(payload["shared_with"]) == ["kite2@1", "violet-kite@1"]


def test_sample_resolution_says_which_entry_a_shared_token_names(tmp_path: Path) -> None:
    registry = Registry()
    for name in ("zz-copy", "cat-toy", "aa-copy"):
        registry.add(name, Embedding("<cat-toy>", (torch.randn(1, 32),)), source={"type": "imported"})
    registry.add("solo", Embedding("<solo>", (torch.randn(1, 32),)), source={"type": "imported"})

    shared, solo = resolve_concepts(["a <cat-toy> and a <solo>"], registry, lambda: None)

    assert shared.entry.name == "cat-toy" and shared.via == "token"
    assert [e.name for e in shared.shared_with] == ["aa-copy", "zz-copy"]
    assert (
        shared.note is not None
        and "using cat-toy@1" in shared.note
        and "<aa-copy> or <zz-copy>" in shared.note
    )
    assert shared.to_dict()["shared_with"] == ["aa-copy@1", "zz-copy@1"]
    assert solo.shared_with == () and solo.note is None
    # The other holders are reached by name.
    (other,) = resolve_concepts(["<aa-copy>"], registry, lambda: None)
    assert other.entry.name == "aa-copy" and other.via == "name"
