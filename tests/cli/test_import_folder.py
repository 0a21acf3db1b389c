"""``tinv import DIR`` as a user meets it: a line per failure, a summary, exit 1 if anything failed, --json."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from tests.registry.test_folder_import import ui_folder
from tinv_cli.cli import app
from tinv_cli.registry.store import Registry

runner = CliRunner()


def test_a_ui_folder_is_imported_with_one_line_per_bad_file(tmp_path: Path) -> None:
    folder = tmp_path / "embeddings"
    expected = ui_folder(folder)

    result = runner.invoke(app, ["import", str(folder)])

    assert result.exit_code == 1
    assert sorted(result.stdout.split()) == sorted(f"{name}@1" for name in expected["good"])
    failed = [line for line in result.stderr.splitlines() if line.startswith("Failed ")]
    assert [line.split(":")[0] for line in failed] == [f"Failed {rel}" for rel in expected["broken"]]
    assert all(str(folder) not in line for line in failed)  # the path once, relative, then the reason
    assert "Imported 50, failed 3, skipped 7 (not embeddings)" in result.stderr
    assert len(Registry().list()) == 50
    tmp = Registry().tmp
    assert not tmp.exists() or all(p.name.endswith(".lock") for p in tmp.iterdir())

    again = runner.invoke(app, ["import", str(folder), "--json"])

    assert again.exit_code == 1  # the same three files still fail
    data = json.loads(again.stdout)
    assert (data["imported"], data["unchanged"], data["failed"], data["skipped"]) == (0, 50, 3, 7)
    by_path = {r["path"]: r for r in data["results"]}
    assert by_path["a1111-0.pt"]["entry"] == "a1111-0@1" and by_path["a1111-0.pt"]["status"] == "unchanged"
    assert by_path["broken/empty.safetensors"]["reason"].startswith("holds an empty dict")
    assert by_path["pair/learned_embeds.safetensors"]["files"] == [
        "pair/learned_embeds.safetensors",
        "pair/learned_embeds_2.safetensors",
    ]
    assert "Imported 0, unchanged 50 (already in the registry), failed 3" in again.stderr


def test_a_clean_folder_succeeds_and_a_concepts_folder_is_still_one_concept(tmp_path: Path) -> None:
    folder = tmp_path / "embeddings"
    folder.mkdir()
    save_file({"emb_params": torch.randn(2, 768)}, str(folder / "easy-negative.safetensors"))
    (folder / "notes.txt").write_text("x")

    result = runner.invoke(app, ["import", str(folder), "--kind", "style"])

    assert result.exit_code == 0, result.output
    assert result.stdout.split() == ["easy-negative@1"]
    assert "Imported 1, failed 0, skipped 1 (not embeddings)" in result.stderr
    assert Registry().get("easy-negative").kind == "style"

    refused = runner.invoke(app, ["import", str(folder), "--name", "x"])
    assert refused.exit_code == 1 and "one entry" in refused.stderr

    concept = tmp_path / "cat-toy"
    concept.mkdir()
    torch.save({"<cat-toy>": torch.randn(768)}, concept / "learned_embeds.bin")
    (concept / "token_identifier.txt").write_text("<cat-toy>")
    single = runner.invoke(app, ["import", str(concept), "--name", "my-cat"])
    assert single.exit_code == 0, single.output
    assert single.stdout.strip() == "my-cat@1"
