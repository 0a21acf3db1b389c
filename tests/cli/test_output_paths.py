"""Places a command cannot write to are refused in one line before the work starts (issue: tracebacks after
the images were made)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tinv_cli.cli import app
from tinv_cli.embedding import Embedding
from tinv_cli.registry.store import Registry

runner = CliRunner()


def _one_error(result: object) -> str:
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, lines  # type: ignore[attr-defined]
    return errors[0]


@pytest.fixture
def cat_toy() -> None:
    Registry().add("cat-toy", Embedding("<cat-toy>", (torch.zeros(1, 32),)), source={"type": "imported"})


def test_sample_refuses_an_output_folder_it_cannot_make_before_loading_the_model(
    cat_toy: None, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out, expected in [
        (blocker, f"Error: Invalid value for '--out' / '-o': dir '{blocker}' is a file."),
        (blocker / "below", f"Error: cannot create output folder {blocker / 'below'}: {blocker} is a file"),
    ]:
        # The model would fail to load (no such Hub id, offline): the output folder is checked first.
        result = runner.invoke(app, ["sample", "a <cat-toy>", "--model", "org/never-loaded", "-o", str(out)])
        assert result.exit_code == 1
        assert _one_error(result) == expected


def test_eval_refuses_a_picture_path_it_cannot_write_before_sampling(cat_toy: None, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    info = Registry().get("cat-toy")
    Registry().update_info(info, base_model="org/never-loaded")
    result = runner.invoke(app, ["eval", "cat-toy", "--out", str(blocker / "eval.png")])
    assert result.exit_code == 1
    assert _one_error(result) == f"Error: folder for the picture {blocker} is a file, not a folder"
    assert not (tmp_path / "cat-toy-eval.png").exists()
    folder = tmp_path / "folder.png"
    folder.mkdir()
    result = runner.invoke(app, ["eval", "cat-toy", "--out", str(folder)])
    assert result.exit_code == 1 and _one_error(result) == f"Error: {folder} is a folder"


def test_tinv_home_that_is_a_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home-file"
    home.write_text("x")
    monkeypatch.setenv("TINV_HOME", str(home))
    for command in (["list"], ["home"], ["import", str(tmp_path / "missing.pt")]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1
        assert _one_error(result) == f"Error: TINV_HOME={home} is a file, not a folder"


def test_export_refuses_places_it_cannot_write(cat_toy: None, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    folder = tmp_path / "existing"
    folder.mkdir()
    (folder / "something").write_text("x")
    cases = [
        (
            ["-o", str(blocker / "x.pt"), "--format", "a1111"],
            f"Error: folder for the export {blocker} is a file",
        ),
        (["-o", str(folder), "--format", "a1111", "--force"], f"Error: {folder} is a folder; a a1111 export"),
        (
            ["-o", str(blocker / "lib"), "--format", "concepts-library"],
            f"Error: cannot create export folder {blocker / 'lib'}: {blocker} is a file",
        ),
    ]
    for args, expected in cases:
        result = runner.invoke(app, ["export", "cat-toy", *args])
        assert result.exit_code == 1
        assert _one_error(result).startswith(expected)
    assert blocker.read_text() == "x" and sorted(p.name for p in folder.iterdir()) == ["something"]
