"""The in-memory form of a concept's learned vectors, shared by every format, the registry and the loaders.

An ``Embedding`` holds one float32 tensor of shape ``[n, d]`` per text encoder, in the order of its model
family's encoders (``families``). The widths tell the model family the concept was trained for
(``families.variant``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tinv_cli.errors import FormatError

if TYPE_CHECKING:
    import torch

# CLIP's context is 77 positions, two of them taken by the start and end tokens.
MAX_VECTORS = 75
# The widest text encoder a diffusion model uses is T5-XXL's 4096 (SD1: 768, SD2: 1024, SDXL: 768 + 1280); twice
# that leaves room for a wider one while refusing the absurd widths of a file built to exhaust memory. A range,
# not the list of known widths, because test models and research encoders are narrow (32, 64).
MAX_WIDTH = 8192

_TOKEN_RE = re.compile(r"^\S+$")
# Unicode categories of characters a token must not hold: controls, formatting marks (bidi overrides, BOM,
# zero-width joiners), surrogates, private use and unassigned code points.
_INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn"}


def token_names(token: str, count: int) -> list[str]:
    """The tokenizer entries a multi-vector concept occupies: ``token, token_1, ..., token_{n-1}``.

    This is the naming diffusers' ``load_textual_inversion`` uses, so prompts expand the same way.
    """
    return [token] + [f"{token}_{i}" for i in range(1, count)]


def check_token(token: str) -> str | None:
    """Why ``token`` cannot name a concept in a registry or a file, or None if it can."""
    if not token:
        return "the token is empty"
    if not _TOKEN_RE.match(token):
        return f"token {token!r} contains whitespace"
    invisible = next((c for c in token if unicodedata.category(c) in _INVISIBLE), None)
    if invisible is not None:
        # Control characters (ESC, NUL), bidirectional overrides (U+202E) and byte-order marks print as nothing
        # or rearrange the terminal: a token holding one looks like another token.
        return f"token {token!r} contains the invisible or control character U+{ord(invisible):04X}"
    if len(token) > 100:
        return f"token {token[:20]!r}... is longer than 100 characters"
    return None


@dataclass(frozen=True)
class Embedding:
    """A concept's vectors: ``vectors[i]`` is a float32 ``[n, d_i]`` tensor for text encoder ``i``."""

    token: str
    vectors: tuple[torch.Tensor, ...]

    def __post_init__(self) -> None:
        import torch

        problem = check_token(self.token)
        if problem:
            raise FormatError(problem, "pass --token with a word such as <my-concept>")
        if not self.vectors:
            raise FormatError(f"{self.token}: no tensors")
        fixed = []
        for tensor in self.vectors:
            if not isinstance(tensor, torch.Tensor):
                raise FormatError(f"{self.token}: expected a tensor, found {type(tensor).__name__}")
            if not tensor.is_floating_point():
                raise FormatError(
                    f"{self.token}: tensor has dtype {tensor.dtype}; embeddings are floating point"
                )
            if tensor.ndim == 1:
                tensor = tensor.unsqueeze(0)
            if tensor.ndim != 2 or 0 in tensor.shape:
                raise FormatError(
                    f"{self.token}: tensor has shape {list(tensor.shape)}; expected [vectors, width]"
                )
            if tensor.shape[0] > MAX_VECTORS:
                raise FormatError(
                    f"{self.token}: {tensor.shape[0]} vectors; a prompt holds at most {MAX_VECTORS}"
                )
            if tensor.shape[1] > MAX_WIDTH:
                raise FormatError(
                    f"{self.token}: width {tensor.shape[1]}; no text encoder is wider than {MAX_WIDTH}"
                )
            tensor = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous()
            if not torch.isfinite(tensor).all():
                raise FormatError(
                    f"{self.token}: tensor holds NaN or infinite values", "retrain or re-download it"
                )
            fixed.append(tensor)
        counts = {t.shape[0] for t in fixed}
        if len(counts) != 1:
            raise FormatError(
                f"{self.token}: the text encoders' tensors have different vector counts {sorted(counts)}"
            )
        object.__setattr__(self, "vectors", tuple(fixed))

    @property
    def num_vectors(self) -> int:
        return int(self.vectors[0].shape[0])

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(int(t.shape[1]) for t in self.vectors)

    @property
    def family(self) -> str | None:
        """The id of the known model these widths belong to (``"sd1"``), or None."""
        from tinv_cli import families

        known = families.variant(self.widths)
        return known.id if known else None

    def with_token(self, token: str) -> Embedding:
        return Embedding(token, self.vectors)

    def equal(self, other: Embedding) -> bool:
        """Same token and bit-identical vectors."""
        return (
            self.token == other.token
            and len(self.vectors) == len(other.vectors)
            and all(
                a.shape == b.shape and bool((a == b).all())
                for a, b in zip(self.vectors, other.vectors, strict=True)
            )
        )
