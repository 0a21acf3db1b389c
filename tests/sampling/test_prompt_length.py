"""A prompt longer than the text encoder reads: a note says what is cut off, and a concept that would fall past
the limit is refused rather than silently dropped (issue: the image's metadata would claim it was used)."""

from __future__ import annotations

from pathlib import Path

import torch
from typer.testing import CliRunner

from tinv_cli.cli import app
from tinv_cli.embedding import Embedding
from tinv_cli.registry.store import Registry

runner = CliRunner()
# Every word is one token of the tests' tokenizer; 100 of them are more than CLIP's 75.
FILLER = " ".join(["a photo"] * 50)


def _cat_toy() -> None:
    vectors = torch.randn(1, 32, generator=torch.Generator().manual_seed(0))
    Registry().add("cat-toy", Embedding("<cat-toy>", (vectors,)), source={"type": "imported"})


def _sample(prompt: str, model: Path, out: Path) -> object:
    return runner.invoke(
        app, ["sample", prompt, "--model", str(model), "--steps", "1", "--seed", "0", "--out", str(out)]
    )


def test_a_concept_past_the_limit_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    _cat_toy()
    result = _sample(f"{FILLER} <cat-toy>", tiny_model_dir, tmp_path / "out")
    assert result.exit_code == 1  # type: ignore[attr-defined]
    error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]  # type: ignore[attr-defined]
    assert len(error) == 1 and "<cat-toy> falls past the text encoder's 75 tokens" in error[0]
    assert not (tmp_path / "out").exists()  # refused before any image was written


def test_a_long_prompt_is_sampled_with_a_note_of_what_is_cut(tiny_model_dir: Path, tmp_path: Path) -> None:
    _cat_toy()
    result = _sample(f"<cat-toy> {FILLER}", tiny_model_dir, tmp_path / "out")
    assert result.exit_code == 0, result.stderr  # type: ignore[attr-defined]
    notes = [line for line in result.stderr.splitlines() if line.startswith("Note:")]  # type: ignore[attr-defined]
    assert len(notes) == 1
    # <cat-toy> and 74 words are read; the last 26 (13 "a photo") are not.
    cut = " ".join(["a photo"] * 13)
    assert notes[0] == f"Note: the prompt is 101 tokens and the text encoder reads 75; cut off: {cut!r}"


def test_a_prompt_that_fits_gives_no_note(tiny_model_dir: Path, tmp_path: Path) -> None:
    _cat_toy()
    result = _sample("a <cat-toy> photo", tiny_model_dir, tmp_path / "out")
    assert result.exit_code == 0, result.stderr  # type: ignore[attr-defined]
    assert "Note:" not in result.stderr  # type: ignore[attr-defined]
