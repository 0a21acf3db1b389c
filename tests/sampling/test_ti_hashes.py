"""The ``TI hashes`` of a sampled image's parameters: A1111's hash of the file it would load for each concept."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from tinv_cli.embedding import Embedding
from tinv_cli.registry.store import Registry
from tinv_cli.registry.transfer import export_entry
from tinv_cli.sampling import pngmeta
from tinv_cli.sampling.prompt import PromptConcept


def test_ti_hashes_name_each_entry_by_the_sha256_of_its_a1111_export(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "home")
    cat = registry.add("cat-toy", Embedding("<cat-toy>", (torch.randn(3, 768),)), source={"type": "imported"})
    xl = registry.add(
        "xl-thing",
        Embedding("<xl>", (torch.randn(1, 768), torch.randn(1, 1280))),
        source={"type": "imported"},
    )
    exported = {
        entry.name: hashlib.sha256(
            export_entry(entry, "a1111", tmp_path / f"{entry.name}{suffix}")[0].read_bytes()
        )
        for entry, suffix in ((cat, ".safetensors"), (xl, ".safetensors"))
    }
    concepts = [PromptConcept("<cat-toy>", cat, "token"), PromptConcept("<xl>", xl, "token")]

    value = pngmeta.ti_hashes(concepts)

    assert (
        value
        == f"cat-toy: {exported['cat-toy'].hexdigest()[:12]}, xl-thing: {exported['xl-thing'].hexdigest()[:12]}"
    )
    # A1111 quotes a value holding ':' or ',' as a JSON string, and so do tinv's parameters.
    text = pngmeta.format_parameters("a <cat-toy>", "", {"Steps": 20, "TI hashes": value})
    assert text.endswith(f'TI hashes: "{value}"')
    assert pngmeta.ti_hashes([]) is None
