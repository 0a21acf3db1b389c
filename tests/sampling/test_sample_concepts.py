"""Which concepts a prompt names: tokens, names, project concepts, pinned versions, and the errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tinv_cli.embedding import Embedding
from tinv_cli.errors import NotFoundError
from tinv_cli.project.config import Project
from tinv_cli.project.load import load_project
from tinv_cli.registry.store import Registry
from tinv_cli.sampling.prompt import canonical_prompt, concept_words, pinned_prompt, resolve_concepts


def add(registry: Registry, name: str, token: str, vectors: int = 1, *, seed: int = 0):
    tensor = torch.randn(vectors, 8, generator=torch.Generator().manual_seed(seed))
    return registry.add(name, Embedding(token, (tensor,)), source={"type": "imported"})


def no_project() -> Project | None:
    return None


def resolve(registry: Registry, *texts: str, project=no_project) -> list[tuple[str, str]]:
    return [(c.word, c.entry.ref) for c in resolve_concepts(texts, registry, project)]


@pytest.fixture
def registry() -> Registry:
    registry = Registry()
    add(registry, "cat-toy", "<cat-toy>", 2)
    add(registry, "cat-toy", "<cat-toy>", 2, seed=1)  # version 2
    add(registry, "birb-style", "birb-style")  # an A1111 import: the token is the file's stem
    add(registry, "robot-v1", "<robo>")  # a name and a token that differ
    return registry


def test_words_are_angle_bracketed_and_counted_once() -> None:
    words = concept_words("A <cat-toy>, <Cat-Toy> and <x@2> in a <b>-ish <b> style", "no <cat-toy> <neg>")
    assert words == ["<cat-toy>", "<x@2>", "<b>", "<neg>"]
    assert concept_words("a < b > c, 1<2, <no space> <>") == []


def test_token_then_name(registry: Registry) -> None:
    assert resolve(registry, "A <cat-toy> in the style of <birb-style>, by <robo>") == [
        ("<cat-toy>", "cat-toy@2"),
        ("<birb-style>", "birb-style@1"),
        ("<robo>", "robot-v1@1"),
    ]
    assert resolve(registry, "a <robot-v1>") == [("<robot-v1>", "robot-v1@1")]


def test_negative_prompt_concepts_are_found_too(registry: Registry) -> None:
    assert resolve(registry, "a photo", "<birb-style>") == [("<birb-style>", "birb-style@1")]


def test_version_pin(registry: Registry) -> None:
    assert resolve(registry, "<cat-toy@1> next to <cat-toy@2> and <cat-toy>") == [
        ("<cat-toy@1>", "cat-toy@1"),
        ("<cat-toy@2>", "cat-toy@2"),
        ("<cat-toy>", "cat-toy@2"),
    ]
    assert resolve(registry, "<robo@1>") == [("<robo@1>", "robot-v1@1")]
    with pytest.raises(NotFoundError, match=r"cat-toy has no version 3 \(versions: 1, 2\)"):
        resolve(registry, "<cat-toy@3>")


def test_pin_prefers_the_name_so_pinned_prompts_are_exact(registry: Registry) -> None:
    # An entry named "robo" whose token is not <robo>: <robo@1> must mean the entry *named* robo.
    add(registry, "robo", "<other>")
    concepts = resolve_concepts(["<robo> and <robo@1>"], registry, no_project)
    assert [(c.word, c.entry.ref) for c in concepts] == [("<robo>", "robot-v1@1"), ("<robo@1>", "robo@1")]
    pinned = pinned_prompt("a <robo>, a <ROBO@1>, a <cat-toy@1>, a plain robo", concepts)
    assert pinned == "a <robot-v1@1>, a <robo@1>, a <cat-toy@1>, a plain robo"
    assert resolve(registry, pinned) == [
        ("<robot-v1@1>", "robot-v1@1"),
        ("<robo@1>", "robo@1"),
        ("<cat-toy@1>", "cat-toy@1"),
    ]


def test_plain_words_never_match(registry: Registry) -> None:
    assert resolve(registry, "a cat-toy in birb-style, robo, robot-v1, cat-toy@2") == []


def test_unknown_word_names_the_closest(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as caught:
        resolve(registry, "a <cat-tyo> backpack")
    message = caught.value.message
    assert "\n" not in message
    assert message.startswith("no concept <cat-tyo> in the registry or the project; closest: <cat-toy>")
    assert "tinv list" in (caught.value.hint or "")

    with pytest.raises(NotFoundError, match=r"closest: <birb-style>"):
        resolve(registry, "<bird-style>")
    with pytest.raises(NotFoundError, match=r"the registry is empty"):
        resolve(Registry(tmp_path / "empty-home"), "<anything>")


def project_file(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    path = tmp_path / "concepts.toml"
    path.write_text(
        '[model]\nbase = "org/base"\n\n'
        '[concepts.robot-v1]\ntoken = "<robbie>"\ninitializer = "robot"\nimages = "data"\n\n'
        '[concepts.untrained]\ntoken = "<fresh>"\ninitializer = "toy"\nimages = "data"\n',
        encoding="utf-8",
    )
    return path


def test_project_concepts_by_their_token(registry: Registry, tmp_path: Path) -> None:
    project = load_project(project_file(tmp_path), check_images=False)
    calls = []

    def lazily() -> Project:
        calls.append(1)
        return project

    # Found in the registry: the project file is not read at all.
    assert resolve(registry, "<cat-toy>", project=lazily) == [("<cat-toy>", "cat-toy@2")]
    assert calls == []
    # <robbie> is the project's token for concept robot-v1, which the registry has under that name.
    assert resolve(registry, "<robbie> and <robbie@1>", project=lazily) == [
        ("<robbie>", "robot-v1@1"),
        ("<robbie@1>", "robot-v1@1"),
    ]
    with pytest.raises(
        NotFoundError, match=r"<fresh>: concept untrained in .* has not been trained"
    ) as caught:
        resolve(registry, "<fresh>", project=lazily)
    assert caught.value.hint == "train it with `tinv train untrained`"
    # The project's tokens are candidates for the did-you-mean too.
    with pytest.raises(NotFoundError, match=r"closest: <robbie>"):
        resolve(registry, "<robby>", project=lazily)


def test_embedding_is_loaded_under_the_prompt_word(registry: Registry) -> None:
    (concept,) = resolve_concepts(["<birb-style@1>"], registry, no_project)
    embedding = concept.embedding()
    assert embedding.token == "<birb-style@1>"
    assert embedding.equal(concept.entry.embedding().with_token("<birb-style@1>"))
    assert concept.to_dict()["sha256"] == concept.entry.sha256


def test_comfyui_embedding_syntax_is_read_as_the_bracketed_word(registry: Registry) -> None:
    assert canonical_prompt("a embedding:cat-toy, by embedding:birb-style.safetensors") == (
        "a <cat-toy>, by <birb-style>"
    )
    assert (
        canonical_prompt("embedding:styles/birb-style.pt (embedding:robo:1.2)") == "<birb-style> (<robo>:1.2)"
    )
    # Only the word ComfyUI reads: no prefix glued to another word, and plain text stays as written.
    assert canonical_prompt("myembedding:x, an embedding of words") == "myembedding:x, an embedding of words"
    text = canonical_prompt("A embedding:cat-toy@1 by embedding:robot-v1")
    assert resolve(registry, text) == [("<cat-toy@1>", "cat-toy@1"), ("<robot-v1>", "robot-v1@1")]
