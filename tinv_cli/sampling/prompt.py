"""Finding the concepts a prompt names.

A concept is written in angle brackets: ``<cat-toy>``. Each ``<word>`` is looked up, in this order:

1. a registry entry whose token is exactly ``<word>`` (the token a concept was trained or pulled with); when
   several entries have that token, the one named after it (``cat-toy`` for ``<cat-toy>``), else the first by
   name, and the concept records the others (``shared_with``) so the choice is said, never silent;
2. a registry entry named ``word`` (how imported files such as AUTOMATIC1111's ``birb-style.pt`` are reached);
3. a concept in the project file whose token is ``<word>``, through its registry entry (the concept's name).

ComfyUI's ``embedding:NAME`` (also ``embedding:NAME.safetensors`` and ``embedding:folder/NAME``) is read as
``<NAME>``: ``canonical_prompt`` rewrites it before anything else looks at the prompt, so a prompt copied from a
ComfyUI workflow works unchanged.

``<word@N>`` pins version N (``<cat-toy@2>``): of the entry named ``word`` if there is one, else of the concept
found as above; without a pin the current version is used. Words
outside angle brackets are never looked up, so a plain ``cat`` stays the word cat.

Each concept is loaded under the word exactly as the prompt writes it, so the prompt is used verbatim, and two
versions of one concept (``<cat-toy@1>`` and ``<cat-toy@2>``) can share a prompt.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tinv_cli.errors import NotFoundError
from tinv_cli.names import NAME_RE, name_from_token

if TYPE_CHECKING:
    from tinv_cli.embedding import Embedding
    from tinv_cli.project.config import Project
    from tinv_cli.registry.entry import Entry
    from tinv_cli.registry.store import Registry

# An angle-bracketed word with no spaces or nested brackets: "<cat-toy>", "<cat-toy@2>", "<Birb_Style>".
WORD_RE = re.compile(r"<[^<>\s]+>")
_PIN_RE = re.compile(r"\A(?P<body>.+)@(?P<version>[1-9][0-9]*)\Z")
# ComfyUI's spelling of an embedding: "embedding:" and a file name up to a space, comma or bracket, as ComfyUI's
# tokenizer reads it (a trailing comma is punctuation, not part of the name).
COMFY_RE = re.compile(r"\bembedding:(?P<name>[^\s,()<>\[\]]+)")
_EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
_HINT = "see `tinv list` for the registry; write a concept as <name> or <name@VERSION>"


@dataclass(frozen=True)
class PromptConcept:
    """A ``<word>`` of the prompt and the registry entry it names. ``via``: token, name or project.
    ``shared_with``: the other entries whose token is the word, when it was resolved by token."""

    word: str
    entry: Entry
    via: str
    shared_with: tuple[Entry, ...] = ()

    @property
    def note(self) -> str | None:
        """A line saying which entry the word resolved to, when other entries share its token; else None."""
        if not self.shared_with:
            return None
        others = ", ".join(entry.ref for entry in self.shared_with)
        names = " or ".join(f"<{entry.name}>" for entry in self.shared_with)
        return (
            f"{self.word} is the token of {len(self.shared_with) + 1} entries: using {self.entry.ref}, "
            f"not {others} (write {names} for that)"
        )

    def embedding(self) -> Embedding:
        """The entry's vectors under the prompt's word, which is the token the tokenizer will know."""
        return self.entry.embedding().with_token(self.word)

    def to_dict(self) -> dict[str, object]:
        return {
            "word": self.word,
            "name": self.entry.name,
            "version": self.entry.version,
            "token": self.entry.token,
            "sha256": self.entry.sha256,
            "vectors": self.entry.num_vectors,
            "widths": list(self.entry.widths),
            "via": self.via,
            "shared_with": [entry.ref for entry in self.shared_with],
        }


def canonical_prompt(text: str) -> str:
    """``text`` with each ComfyUI ``embedding:NAME`` written ``<NAME>``, tinv's own spelling; the rest verbatim."""

    def bracketed(match: re.Match[str]) -> str:
        name = match["name"].replace("\\", "/").rsplit("/", 1)[-1]
        for suffix in _EMBEDDING_SUFFIXES:
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        # A weight written without brackets (embedding:name:1.2) keeps its colon part outside the word.
        name, colon, weight = name.partition(":")
        return f"<{name}>" + (colon + weight if colon else "")

    return COMFY_RE.sub(bracketed, text)


def concept_words(*texts: str) -> list[str]:
    """The distinct ``<word>``s of the texts, in order of first appearance.

    Words that differ only in case count once (the first spelling wins): CLIP's tokenizer lowercases a prompt
    before it matches tokens, so ``<Cat-Toy>`` and ``<cat-toy>`` reach the same token.
    """
    seen: dict[str, str] = {}
    for text in texts:
        for word in WORD_RE.findall(text):
            seen.setdefault(word.lower(), word)
    return list(seen.values())


class _Index:
    """The registry's current entries by token and by name, read once per prompt."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.entries = registry.list()
        self.holders: dict[str, list[Entry]] = {}
        for entry in self.entries:  # sorted by name
            self.holders.setdefault(entry.token, []).append(entry)
        for token, holders in self.holders.items():
            # The entry named after the token keeps it: a later import of another file with that token must
            # not take <cat-toy> away from the entry cat-toy. The sort is stable: the rest stay by name.
            own = name_from_token(token)
            holders.sort(key=lambda entry: entry.name != own)
        self.by_token = {token: holders[0] for token, holders in self.holders.items()}
        self.by_name = {entry.name: entry for entry in self.entries}

    def named(self, name: str, version: int | None) -> Entry | None:
        if name not in self.by_name:
            return None
        # A missing version raises NotFoundError listing the versions there are.
        return self.by_name[name] if version is None else self.registry.get(f"{name}@{version}")


def _split_pin(word: str) -> tuple[str, int | None]:
    """``"<cat-toy@2>"`` -> ``("cat-toy", 2)``; ``"<cat-toy>"`` -> ``("cat-toy", None)``."""
    body = word[1:-1]
    match = _PIN_RE.match(body)
    return (match["body"], int(match["version"])) if match else (body, None)


def _resolve_word(word: str, index: _Index, project: Callable[[], Project | None]) -> PromptConcept:
    exact = index.by_token.get(word)
    if exact is not None:
        return PromptConcept(word, exact, "token", tuple(index.holders[word][1:]))
    body, version = _split_pin(word)
    by_token = index.by_token.get(f"<{body}>")
    named = index.named(body, version) if NAME_RE.match(body) else None
    # A pin names a version of a registry name, so the name decides first; `pinned_prompt` relies on that.
    if named is not None and (version is not None or by_token is None):
        return PromptConcept(word, named, "name")
    if by_token is not None:
        return PromptConcept(word, index.named(by_token.name, version) or by_token, "token")
    loaded = project()
    if loaded is not None:
        for concept in loaded.concepts.values():
            if concept.token == f"<{body}>":
                entry = index.named(concept.name, version)
                if entry is None:
                    raise NotFoundError(
                        f"{word}: concept {concept.name} in {loaded.path} has not been trained yet",
                        f"train it with `tinv train {concept.name}`",
                    )
                return PromptConcept(word, entry, "project")
    raise NotFoundError(
        f"no concept {word} in the registry or the project{_closest(word, index, loaded)}", _HINT
    )


def _closest(word: str, index: _Index, project: Project | None) -> str:
    """``"; closest: <cat-toy>, <birb-style>"``: the known concept words nearest to ``word``, or ``""``."""
    known: list[str] = []
    for entry in index.entries:
        known.append(entry.token if WORD_RE.fullmatch(entry.token) else f"<{entry.name}>")
        known.append(f"<{entry.name}>")
    if project is not None:
        known.extend(concept.token for concept in project.concepts.values())
    body, _ = _split_pin(word)
    close = difflib.get_close_matches(f"<{body}>", list(dict.fromkeys(known)), n=3, cutoff=0.5)
    if close:
        return f"; closest: {', '.join(close)}"
    return "; the registry is empty" if not index.entries else ""


def resolve_concepts(
    texts: Iterable[str], registry: Registry, project: Callable[[], Project | None]
) -> list[PromptConcept]:
    """The concept behind every ``<word>`` of ``texts`` (prompt and negative prompt), in order.

    ``project`` is called only when a word is not in the registry, so a project file is read only if needed.
    A word with no concept raises NotFoundError naming the closest known concepts.
    """
    words = concept_words(*texts)
    if not words:
        return []
    index = _Index(registry)
    return [_resolve_word(word, index, project) for word in words]


def token_holders(registry: Registry, token: str) -> list[Entry]:
    """The current entries whose token is ``token``, the one a prompt's ``token`` resolves to first."""
    return list(_Index(registry).holders.get(token, []))


def pinned_prompt(text: str, concepts: Iterable[PromptConcept]) -> str:
    """``text`` with every concept word replaced by ``<name@version>``, which names exactly the vectors used."""
    pins = {concept.word.lower(): f"<{concept.entry.name}@{concept.entry.version}>" for concept in concepts}
    return WORD_RE.sub(lambda m: pins.get(m.group(0).lower(), m.group(0)), text)
