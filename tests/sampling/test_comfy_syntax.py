"""ComfyUI's ``embedding:NAME`` in a prompt samples exactly what ``<NAME>`` does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tinv_cli import generate
from tinv_cli.embedding import Embedding
from tinv_cli.registry.store import Registry


def test_embedding_colon_name_gives_the_same_pixels_as_the_bracketed_word(tiny_model_dir: Path) -> None:
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(3))
    Registry().add("cat-toy", Embedding("<cat-toy>", (vectors,)), source={"type": "imported"})
    options = {"model": str(tiny_model_dir), "steps": 2, "seed": 4, "scheduler": "euler-a"}
    comfy = generate(
        "a embedding:cat-toy.safetensors, backpack", negative_prompt="embedding:cat-toy", **options
    )
    ours = generate("a <cat-toy>, backpack", negative_prompt="<cat-toy>", **options)
    plain = generate("a cat-toy, backpack", **options)
    assert [c.entry.ref for c in comfy.concepts] == ["cat-toy@1"]
    assert comfy.prompt == "a <cat-toy>, backpack"
    assert np.array_equal(np.asarray(comfy.images[0]), np.asarray(ours.images[0]))
    assert not np.array_equal(np.asarray(comfy.images[0]), np.asarray(plain.images[0]))
