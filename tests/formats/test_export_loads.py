"""Files that `tinv export` writes load in the tools they are for: here, diffusers' own loader, which reads the
diffusers, concepts library, AUTOMATIC1111 and kohya layouts. The vectors it installs must be exactly the entry's."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny import build_tiny_pipeline
from tinv_cli.embedding import Embedding, token_names
from tinv_cli.formats.layout import BIN_NAME, KIND_FILE, README_FILE, SAFE_NAME, TOKEN_FILE
from tinv_cli.registry.store import Registry
from tinv_cli.registry.transfer import export_entry


@pytest.mark.parametrize("vectors", [1, 3])
@pytest.mark.parametrize(
    ("fmt", "filename", "needs_token"),
    [
        ("diffusers", "concept.safetensors", False),
        ("diffusers", "concept.bin", False),
        ("concepts-library", "concept", False),
        ("a1111", "concept.pt", True),
        ("kohya", "concept.safetensors", True),
    ],
)
def test_export_loads_with_diffusers(
    tmp_path: Path, fmt: str, filename: str, needs_token: bool, vectors: int
) -> None:
    import torch

    width = 32
    embedding = Embedding("<cat-toy>", (torch.randn(vectors, width),))
    entry = Registry().add("cat-toy", embedding, source={"type": "imported"})

    written = export_entry(entry, fmt, tmp_path / filename)
    target = tmp_path / filename
    if fmt == "concepts-library":
        # A folder: export_entry returns the files written inside it, in order; diffusers loads the .bin.
        folder, target = target, target / BIN_NAME
        files = (SAFE_NAME, BIN_NAME, TOKEN_FILE, KIND_FILE, README_FILE)  # README: the entry's model card
        assert written == [folder / name for name in files]
    else:
        assert written == [target]  # one file, the one diffusers loads
    assert target in written  # the file diffusers loads is one export_entry says it wrote
    assert all(path.is_file() for path in written)

    pipe = build_tiny_pipeline(width)
    if (
        needs_token
    ):  # A1111 and kohya files carry no token: the caller names it, as A1111 does with the file name
        pipe.load_textual_inversion(str(target), token="<cat-toy>")
    else:
        pipe.load_textual_inversion(str(target))

    names = token_names("<cat-toy>", vectors)
    ids = pipe.tokenizer.convert_tokens_to_ids(names)
    rows = pipe.text_encoder.get_input_embeddings().weight[ids]
    assert torch.equal(rows, embedding.vectors[0])
