"""One version of a registry concept: its folder and its ``tinv.json``, read without torch.

The embedding itself is read on demand (``Entry.embedding``), so listing hundreds of entries stays fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli.formats.layout import INFO_FILE, SAFE_NAME

if TYPE_CHECKING:
    from tinv_cli.embedding import Embedding


def read_info(folder: Path) -> dict[str, Any] | None:
    """The parsed ``tinv.json`` of a version folder, or None when it is missing or not one of ours."""
    try:
        with open(folder / INFO_FILE, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    widths = info.get("widths")
    if not (
        isinstance(info.get("token"), str)
        and isinstance(info.get("vectors"), int)
        and isinstance(widths, list)
        and widths
        and all(isinstance(w, int) for w in widths)
    ):
        return None
    return info


@dataclass(frozen=True)
class Entry:
    """One version of a registry concept. ``info`` is its parsed ``tinv.json``."""

    name: str
    version: int
    path: Path
    info: dict[str, Any] = field(compare=False, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def token(self) -> str:
        return str(self.info["token"])

    @property
    def kind(self) -> str:
        return str(self.info.get("kind") or "object")

    @property
    def num_vectors(self) -> int:
        return int(self.info["vectors"])

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(int(w) for w in self.info["widths"])

    @property
    def family(self) -> str | None:
        return self.info.get("family")

    @property
    def family_label(self) -> str | None:
        """What the model family is called in ``tinv list`` and ``show``: the recorded variant's label (SD 1.x),
        else the recorded layout's (a Flux file's), else, for a concept of a model of no known size (the shipped
        builtin:shapes, a test model), the family its encoders imply and the base model it was made on:
        ``SD 1.x/2.x (builtin:shapes)``. None when nothing says."""
        from tinv_cli import families
        from tinv_cli.errors import ModelError

        known = families.variant_by_id(self.family) or families.variant(self.widths)
        if known is not None:
            return known.label
        layout = self.info.get("layout")
        if isinstance(layout, str) and layout:
            return layout
        if not self.base_model:
            return None
        try:
            family = families.for_widths(self.widths)
        except ModelError:
            return self.base_model
        return f"{family.label} ({self.base_model})"

    @property
    def source_type(self) -> str:
        source = self.info.get("source")
        return str(source.get("type", "unknown")) if isinstance(source, dict) else "unknown"

    @property
    def created(self) -> str | None:
        return self.info.get("created")

    @property
    def sha256(self) -> str | None:
        return self.info.get("sha256")

    @property
    def base_model(self) -> str | None:
        return self.info.get("base_model")

    @property
    def base_model_file(self) -> dict[str, Any]:
        """For an entry trained on a single-file checkpoint: the file's ``sha256``, A1111's short ``hash``, the
        ``config`` folder and ``prediction`` type it was read with; empty otherwise."""
        training = self.info.get("training")
        found = training.get("base_model_file") if isinstance(training, dict) else None
        return found if isinstance(found, dict) else {}

    @property
    def base_model_sha256(self) -> str | None:
        return self.base_model_file.get("sha256")

    @property
    def base_model_hash(self) -> str | None:
        """AUTOMATIC1111's "Model hash" (10 hex digits) of the checkpoint the entry was trained on."""
        return self.base_model_file.get("hash")

    def embedding_file(self) -> Path:
        return self.path / SAFE_NAME

    def embedding(self) -> Embedding:
        from tinv_cli.formats import detect

        return detect.read_entry_embedding(self.path)
