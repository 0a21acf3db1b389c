"""The dict AUTOMATIC1111 saves for an embedding of one text encoder: its ``.pt`` files and the JSON inside its
PNG embeddings."""

from __future__ import annotations

from typing import Any

from tinv_cli.embedding import Embedding

# What A1111 has always written for string_to_token; nothing reads the number, but loaders expect the key.
A1111_TOKEN_ID = 265


def a1111_data(embedding: Embedding, name: str, meta: dict[str, Any]) -> dict[str, Any]:
    """A1111's dict for ``embedding`` saved as ``name`` (A1111 names an embedding after its file)."""
    return {
        "string_to_token": {"*": A1111_TOKEN_ID},
        "string_to_param": {"*": embedding.vectors[0]},
        "name": name,
        "step": meta.get("step"),
        "sd_checkpoint": None,
        "sd_checkpoint_name": meta.get("sd_checkpoint_name"),
    }
