"""The public Python API: docs/api.md's examples run as written, every public name is the object its module
defines, `import tinv_cli` stays light, and `load_registry_concepts` checks everything before it changes a
pipeline and restores it on unloading."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import tinv_cli
from tinv_cli.errors import ModelError, NotFoundError

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

    from tinv_cli.registry.store import Registry

REPO = Path(__file__).resolve().parent.parent
API_DOC = REPO / "docs" / "api.md"
HEAVY = ("torch", "diffusers", "transformers", "accelerate", "safetensors")


def _examples() -> list[tuple[int, str]]:
    """Each ```python block of the page with the line its code starts on."""
    text = API_DOC.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, match.start(1)), match[1])
        for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    ]


@pytest.mark.slow
def test_the_documented_examples_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(REPO / "concepts.toml", tmp_path)
    shutil.copytree(REPO / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    examples = _examples()
    assert len(examples) == 8  # train, generate, registry, files, own pipeline, lower level, evaluate, errors
    namespace: dict[str, Any] = {"__name__": "api_examples"}
    for line, code in examples:
        # Padded so that a failure's traceback gives the line of docs/api.md.
        exec(compile("\n" * line + code, str(API_DOC), "exec"), namespace)

    # What the examples left behind, checked from outside them.
    registry = tinv_cli.Registry()
    (entry,) = registry.list()  # kite-copy was imported and removed again
    assert entry.ref == "violet-kite@1" and entry.source_type == "trained"
    assert entry.base_model == "builtin:shapes" and entry.info["training"]["steps"] == 20

    from PIL import Image

    pngs = sorted((tmp_path / "samples").glob("*.png"))
    assert len(pngs) == 5  # four images and the grid
    for path in pngs:
        with Image.open(path) as image:
            if "grid" not in path.name:
                assert image.size == (32, 32), path
    assert (tmp_path / "violet-kite.pt").is_file() and (tmp_path / "violet-kite-eval.png").is_file()

    # The errors the last example caught.
    misspelt, refused, unknown = namespace["misspelt"], namespace["refused"], namespace["unknown"]
    assert isinstance(misspelt, NotFoundError) and "did you mean violet-kite" in misspelt.message
    assert refused.message == "steps must be at least 1, not 0"
    assert isinstance(unknown, NotFoundError) and "ember-cross, violet-kite" in (unknown.hint or "")
    assert isinstance(namespace["taken"], ModelError)

    # The pipeline the examples built is back to its own vocabulary and embedding table.
    import torch

    pipe = namespace["pipe"]
    assert len(pipe.tokenizer) == namespace["vocabulary"]
    weight = pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(weight, namespace["table"])
    assert pipe.text_encoder.config.vocab_size == namespace["vocabulary"]


def test_import_tinv_cli_imports_no_ml_library() -> None:
    code = f"import sys, tinv_cli; dir(tinv_cli); print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_reading_the_registry_and_a_project_imports_no_ml_library() -> None:
    code = (
        "import sys, tinv_cli; from pathlib import Path; tinv_cli.Registry().list(); "
        f"tinv_cli.load_project(Path({str(REPO / 'concepts.toml')!r})); "
        "tinv_cli.TrainRequest, tinv_cli.TrainCallbacks, tinv_cli.Entry; "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_public_name_is_the_object_its_module_defines() -> None:
    lazy = tinv_cli._LAZY
    errors = importlib.import_module("tinv_cli.errors")
    for name in tinv_cli.__all__:
        if name == "__version__":
            continue
        module = lazy.get(name, "tinv_cli.errors")
        value = getattr(tinv_cli, name)
        assert value is getattr(importlib.import_module(module), name), name
        assert value.__module__ == module, f"{name} is defined in {value.__module__}, not {module}"
        if module == "tinv_cli.errors":
            assert issubclass(value, errors.TinvError), name
    assert set(lazy) <= set(tinv_cli.__all__)
    assert set(tinv_cli.__all__) <= set(dir(tinv_cli))
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = tinv_cli.no_such_name


def _add(registry: Registry, name: str, width: int, seed: int) -> None:
    import torch

    from tinv_cli.embedding import Embedding

    vectors = torch.randn(1, width, generator=torch.Generator().manual_seed(seed))
    registry.add(name, Embedding(f"<{name}>", (vectors,)), source={"type": "imported"})


def test_load_registry_concepts_checks_first_and_unloads_exactly(
    tiny_pipeline: StableDiffusionPipeline,
) -> None:
    import torch

    from tinv_cli import Registry, load_registry_concepts

    registry = Registry()
    _add(registry, "kite", 32, seed=1)
    _add(registry, "wide", 64, seed=2)  # another model family's width
    pipe: Any = tiny_pipeline
    vocabulary = len(pipe.tokenizer)
    table = pipe.text_encoder.get_input_embeddings().weight.detach().clone()

    def unchanged() -> bool:
        weight = pipe.text_encoder.get_input_embeddings().weight
        return len(pipe.tokenizer) == vocabulary and torch.equal(weight, table)

    with pytest.raises(NotFoundError, match="no-such"):
        load_registry_concepts(pipe, ["kite", "no-such"])
    assert unchanged()
    with pytest.raises(ModelError, match="<wide>"):
        load_registry_concepts(pipe, ["kite", "wide"])
    assert unchanged()

    loaded = load_registry_concepts(pipe, "kite")  # one ref as a plain string
    assert loaded.tokens == ("<kite>",) and [e.ref for e in loaded.entries] == ["kite@1"]
    token_id = pipe.tokenizer.convert_tokens_to_ids("<kite>")
    row = pipe.text_encoder.get_input_embeddings().weight[token_id]
    assert torch.equal(row, registry.get("kite").embedding().vectors[0][0])
    with pytest.raises(ModelError, match="already in this model's tokenizer"):
        load_registry_concepts(pipe, {"<KITE>": "kite"})  # the tokenizer lowercases: the same token
    loaded.unload()
    assert unchanged()
    with pytest.raises(ModelError, match="not loaded"):
        loaded.unload()

    with load_registry_concepts(pipe, {"<a>": "kite@1", "<b>": "<kite>"}) as both:
        assert both.tokens == ("<a>", "<b>") and len(pipe.tokenizer) == vocabulary + 2
    assert unchanged()
