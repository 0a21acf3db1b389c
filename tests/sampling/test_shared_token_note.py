"""`tinv sample` says which entry a token resolved to when more than one entry has it."""

from __future__ import annotations

from pathlib import Path

import torch
from typer.testing import CliRunner

from tinv_cli.cli import app
from tinv_cli.embedding import Embedding
from tinv_cli.registry.store import Registry


def test_a_shared_token_is_named_in_a_note(tiny_model_dir: Path, tmp_path: Path) -> None:
    registry = Registry()
    for name in ("cat-toy", "another-cat"):
        registry.add(name, Embedding("<cat-toy>", (torch.zeros(1, 32),)), source={"type": "imported"})
    result = CliRunner().invoke(
        app,
        ["sample", "a <cat-toy>", "--model", str(tiny_model_dir), "--steps", "1", "-o", str(tmp_path / "o")],
    )
    assert result.exit_code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("Note:")]
    assert len(notes) == 1 and "using cat-toy@1" in notes[0] and "another-cat@1" in notes[0]
