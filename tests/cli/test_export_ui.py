"""``tinv export --all --to DIR --for UI`` as a user meets it, beside the one-entry ``tinv export NAME``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tinv_cli.cli import app
from tinv_cli.embedding import Embedding
from tinv_cli.registry.store import Registry

runner = CliRunner()


def _add(name: str, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    Registry().add(
        name, Embedding(f"<{name}>", (torch.randn(1, 768, generator=gen),)), source={"type": "imported"}
    )


def test_export_all_writes_then_says_up_to_date(tmp_path: Path) -> None:
    for i in range(3):
        _add(f"concept-{i}", i)
    folder = tmp_path / "ComfyUI" / "models" / "embeddings"

    first = runner.invoke(app, ["export", "--all", "--to", str(folder), "--for", "comfyui"])

    assert first.exit_code == 0, first.output
    assert first.stdout.split() == [str(folder / f"concept-{i}.safetensors") for i in range(3)]
    assert "3 written, 0 up to date" in first.stderr
    assert "In ComfyUI prompts, write embedding:concept-0" in first.stderr

    second = runner.invoke(app, ["export", "--all", "--to", str(folder), "--for", "comfyui"])
    assert second.exit_code == 0
    assert second.stdout == ""
    assert "Nothing written: 3 up to date" in second.stderr

    Registry().remove("concept-2")
    (folder / "mine.pt").write_bytes(b"user")
    _add("MINE")
    third = runner.invoke(app, ["export", "--all", "--to", str(folder), "--for", "comfyui", "--json"])
    assert third.exit_code == 1
    files = {f["file"]: f for f in json.loads(third.stdout)["files"]}
    assert files["concept-2.safetensors"]["action"] == "removed"
    kept = folder / "concept-0.safetensors"
    assert files["concept-0.safetensors"]["short_hash"] == hashlib.sha256(kept.read_bytes()).hexdigest()[:12]
    assert files["MINE.safetensors"]["action"] == "user file"
    assert "Skipped MINE.safetensors (MINE@1): mine.pt is not tinv's" in third.stderr
    assert (folder / "mine.pt").read_bytes() == b"user"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "--all"], "--all needs --to"),
        (["export", "cat", "--all", "--to", "x", "--for", "a1111"], "--to and --for go with --all"),
        (["export", "--to", "x", "--for", "a1111"], "--to and --for go with --all"),
        (["export", "--all", "--to", "x", "--for", "photoshop"], "unknown UI 'photoshop'"),
        (["export"], "name the entry to export, or pass --all"),
    ],
)
def test_flag_combinations_are_one_line_errors(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and message in result.stderr


def test_export_one_entry_works_as_before(tmp_path: Path) -> None:
    _add("cat-toy")
    result = runner.invoke(app, ["export", "cat-toy", "-f", "kohya", "-o", str(tmp_path / "c.safetensors")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "c.safetensors")


def test_help_lists_what_import_and_export_accept() -> None:
    imported = runner.invoke(app, ["import", "--help"]).stdout
    for word in ("folder", "a1111-png", "LoRA", "OneTrainer", "modelspec", "Flux", "preview"):
        assert word in imported
    exported = runner.invoke(app, ["export", "--help"]).stdout
    for word in ("--all", "--to", "--for", "comfyui", "invokeai", ".tinv-export.json"):
        assert word in exported
