"""Registry concepts in a diffusers pipeline the caller built: load them by name, and take them out again.

``generate`` loads the concepts a prompt names into a pipeline it loads itself. A program that already holds a
pipeline (its own model, scheduler, device or extra components) wants the registry's concepts in that one:

    from tinv_cli import load_registry_concepts
    with load_registry_concepts(pipe, ["cat-toy", "birb-style@2"]):
        image = pipe("a <cat-toy> in the style of <birb-style>").images[0]

Loading goes through ``loader.load_concepts``, so the checks are the ones ``tinv sample`` makes (text-encoder
widths, tokens already taken) and a refused concept leaves the pipeline as it was. The pipeline keeps its own
prompt handling: diffusers spells out a multi-vector token itself when the prompt writes it in the token's case.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from tinv_cli.sampling.loader import load_concepts, unload_concepts

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from tinv_cli.embedding import Embedding
    from tinv_cli.registry.entry import Entry
    from tinv_cli.registry.store import Registry


@dataclass(frozen=True)
class LoadedConcepts:
    """Concepts that ``load_registry_concepts`` put into ``pipe``; ``unload()`` takes exactly these out again.

    ``entries[i]`` is the registry entry behind ``embeddings[i]``, whose ``token`` is the word prompts use.
    As a context manager it unloads on leaving the ``with`` block, error or not.
    """

    pipe: DiffusionPipeline
    entries: tuple[Entry, ...]
    embeddings: tuple[Embedding, ...]

    @property
    def tokens(self) -> tuple[str, ...]:
        """The words the loaded concepts answer to in prompts, in loading order."""
        return tuple(embedding.token for embedding in self.embeddings)

    def unload(self) -> None:
        """Remove these concepts' tokens and embedding rows from the pipeline; other concepts stay.

        Raises ``ModelError`` (and changes nothing) when one of them is no longer loaded.
        """
        unload_concepts(self.pipe, self.embeddings)

    def __enter__(self) -> LoadedConcepts:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.unload()


def load_registry_concepts(
    pipe: DiffusionPipeline,
    refs: str | Iterable[str] | Mapping[str, str],
    *,
    registry: Registry | None = None,
) -> LoadedConcepts:
    """Load registry concepts into ``pipe``, each under its own token, and return what ``unload()`` needs.

    ``refs`` names the concepts as ``Registry.get`` does (``"cat-toy"``, ``"cat-toy@2"`` or ``"<cat-toy>"``),
    one or several. A mapping ``{token: ref}`` loads each under the token given instead, which lets two versions
    of one concept share a pipeline: ``{"<cat-v1>": "cat-toy@1", "<cat-v2>": "cat-toy@2"}``.

    Every entry is found and every check made before the pipeline changes: a missing entry raises
    ``NotFoundError``, a concept of another model family or a token the tokenizer already has ``ModelError``.
    """
    from tinv_cli.registry.store import Registry

    source = registry if registry is not None else Registry()
    if isinstance(refs, str):
        wanted: list[tuple[str | None, str]] = [(None, refs)]
    elif isinstance(refs, Mapping):
        wanted = list(refs.items())
    else:
        wanted = [(None, ref) for ref in refs]
    entries = [source.get(ref) for _, ref in wanted]
    embeddings = [
        entry.embedding() if token is None else entry.embedding().with_token(token)
        for (token, _), entry in zip(wanted, entries, strict=True)
    ]
    load_concepts(pipe, embeddings)
    return LoadedConcepts(pipe, tuple(entries), tuple(embeddings))
