"""Negative embeddings: their training prompts, the registry kind, modelspec on export and import, and a
negative concept written in the prompt moved to the negative prompt."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from tinv_cli.embedding import Embedding
from tinv_cli.registry.store import Registry
from tinv_cli.registry.transfer import export_entry, export_meta, import_file
from tinv_cli.sampling.negatives import move_negatives
from tinv_cli.sampling.prompt import resolve_concepts
from tinv_cli.training.templates import prompts_for

TRAINED = {"type": "trained"}


def _embedding(token: str, seed: int = 0) -> Embedding:
    return Embedding(token, (torch.randn(2, 768, generator=torch.Generator().manual_seed(seed)),))


def test_negative_prompts_are_trained_without_a_subject() -> None:
    prompts = prompts_for("negative", "<bad>", "<bad>")
    assert "<bad>" in prompts and "low quality <bad>" in prompts
    assert all("<bad>" in p for p in prompts)


def test_a_negative_entry_exports_with_modelspec_and_imports_as_negative(tmp_path: Path) -> None:
    registry = Registry()
    entry = registry.add("bad-hands", _embedding("<bad-hands>"), kind="negative", source=TRAINED)
    assert entry.kind == "negative" and export_meta(entry)["negative"] is True
    plain = registry.add("cat-toy", _embedding("<cat-toy>", 1), source=TRAINED)
    assert export_meta(plain)["negative"] is False

    (path,) = export_entry(entry, "a1111", tmp_path / "bad-hands.safetensors")
    with safe_open(str(path), "pt") as opened:
        assert (opened.metadata() or {})["modelspec.is_negative_embedding"] == "true"
    imported = import_file(registry, path, name="bad-hands-again")
    assert imported.entry.kind == "negative"
    # A file without the flag is an object, as before.
    (other,) = export_entry(plain, "a1111", tmp_path / "cat-toy.safetensors")
    assert import_file(registry, other, name="cat-toy-again").entry.kind == "object"


def test_a_negative_concept_in_the_prompt_moves_to_the_negative_prompt() -> None:
    registry = Registry()
    registry.add("bad-hands", _embedding("<bad-hands>"), kind="negative", source=TRAINED)
    registry.add("cat-toy", _embedding("<cat-toy>", 1), source=TRAINED)
    prompt, negative = "<bad-hands>, a <cat-toy> on a beach", "blurry"
    concepts = resolve_concepts([prompt, negative], registry, lambda: None)
    moved_prompt, moved_negative, notes = move_negatives(prompt, negative, concepts)
    assert moved_prompt == "a <cat-toy> on a beach"
    assert moved_negative == "blurry, <bad-hands>"
    assert len(notes) == 1 and notes[0].startswith("<bad-hands> is a negative embedding: moved")

    # Already in the negative prompt: not written twice; nothing of an object concept moves.
    again = move_negatives("a <cat-toy> <bad-hands>", "<bad-hands>", concepts)
    assert again[:2] == ("a <cat-toy>", "<bad-hands>")
    assert move_negatives("a <cat-toy>", "", concepts) == ("a <cat-toy>", "", [])


def test_sample_moves_a_negative_concept_unless_told_to_keep_it(tmp_path: Path, tiny_model_dir: Path) -> None:
    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from tinv_cli.cli import app

    vectors = torch.randn(1, 32, generator=torch.Generator().manual_seed(5))
    Registry().add("bad", Embedding("<bad>", (vectors,)), kind="negative", source=TRAINED)
    common = ["--model", str(tiny_model_dir), "--steps", "2", "--seed", "3", "--scheduler", "euler-a"]
    runner = CliRunner()

    def sample(out: str, *args: str) -> tuple[np.ndarray, str]:
        result = runner.invoke(app, ["sample", *args, *common, "--out", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
        (path,) = (tmp_path / out).glob("*.png")
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB")), result.output

    moved, output = sample("moved", "a photo <bad>")
    assert "<bad>" in output and "negative" in output.lower()
    explicit, _ = sample("explicit", "a photo", "--negative", "<bad>")
    kept, _ = sample("kept", "a photo <bad>", "--keep-negatives")
    assert np.array_equal(moved, explicit)
    assert not np.array_equal(moved, kept)
