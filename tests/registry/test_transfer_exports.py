"""Exports: kohya's modelspec metadata in every safetensors file, the same bytes every time, and the hash A1111
records of the file it loads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tinv_cli.embedding import Embedding
from tinv_cli.formats import detect
from tinv_cli.registry.store import Registry
from tinv_cli.registry.transfer import a1111_hash, export_entry, import_file


def add(tmp_path: Path, widths: tuple[int, ...], name: str = "cat-toy") -> tuple[Registry, object]:
    registry = Registry(tmp_path / "home")
    generator = torch.Generator().manual_seed(0)
    embedding = Embedding("<cat-toy>", tuple(torch.randn(2, w, generator=generator) for w in widths))
    return registry, registry.add(name, embedding, source={"type": "imported"})


def spec_of(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


@pytest.mark.parametrize(
    ("widths", "architecture"),
    [
        ((768,), "stable-diffusion-v1/textual-inversion"),
        ((1024,), "stable-diffusion-v2-768-v/textual-inversion"),
        ((768, 1280), "stable-diffusion-xl-v1-base/textual-inversion"),
    ],
)
def test_safetensors_exports_carry_modelspec(
    tmp_path: Path, widths: tuple[int, ...], architecture: str
) -> None:
    _, entry = add(tmp_path, widths)
    out = export_entry(entry, "kohya", tmp_path / "cat-toy.safetensors")[0]  # type: ignore[arg-type]
    spec = spec_of(out)
    assert spec["modelspec.sai_model_spec"] == "1.0.1"
    assert spec["modelspec.architecture"] == architecture
    assert spec["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert spec["modelspec.title"] == "cat-toy"
    assert spec["modelspec.trigger_phrase"] == "<cat-toy>"
    assert spec["modelspec.date"] == entry.created  # type: ignore[attr-defined]
    assert "modelspec.is_negative_embedding" not in spec


@pytest.mark.parametrize("fmt", ["a1111", "kohya", "diffusers", "a1111-png"])
def test_two_exports_of_one_entry_are_the_same_bytes(tmp_path: Path, fmt: str) -> None:
    _, entry = add(tmp_path, (768,))
    suffix = {"a1111-png": ".png"}.get(fmt, ".safetensors")
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
    # The same file name: an A1111 .pt stores its file's stem as the embedding's name.
    first, second = (
        export_entry(entry, fmt, tmp_path / run / f"cat-toy{suffix}")[0]  # type: ignore[arg-type]
        for run in ("a", "b")
    )
    assert first.read_bytes() == second.read_bytes()


def test_sdxl_a1111_export_is_deterministic_and_a1111_hash_is_its_sha256(tmp_path: Path) -> None:
    _, entry = add(tmp_path, (768, 1280))
    first = export_entry(entry, "a1111", tmp_path / "one" / "cat-toy.safetensors")[0]  # type: ignore[arg-type]
    second = export_entry(entry, "a1111", tmp_path / "two" / "cat-toy.safetensors")[0]  # type: ignore[arg-type]
    assert first.read_bytes() == second.read_bytes()
    assert a1111_hash(entry) == hashlib.sha256(first.read_bytes()).hexdigest()[:12]  # type: ignore[arg-type]


def test_a1111_hash_of_an_sd1_entry_is_the_sha256_of_the_file_every_ui_export_writes(tmp_path: Path) -> None:
    from tinv_cli.registry.transfer import default_export_path

    _, entry = add(tmp_path, (768,))
    assert default_export_path(entry, "a1111").name == "cat-toy.safetensors"  # type: ignore[arg-type]
    a1111 = export_entry(entry, "a1111", tmp_path / "a" / "cat-toy.safetensors")[0]  # type: ignore[arg-type]
    kohya = export_entry(entry, "kohya", tmp_path / "k" / "cat-toy.safetensors")[0]  # type: ignore[arg-type]
    assert a1111.read_bytes() == kohya.read_bytes()
    assert a1111_hash(entry) == hashlib.sha256(a1111.read_bytes()).hexdigest()[:12]  # type: ignore[arg-type]
    # A1111's own pickle is still there for -o NAME.pt; it is another file with another hash.
    pt = export_entry(entry, "a1111", tmp_path / "cat-toy.pt")[0]  # type: ignore[arg-type]
    assert a1111_hash(entry) != hashlib.sha256(pt.read_bytes()).hexdigest()[:12]  # type: ignore[arg-type]


def test_negative_flag_is_written(tmp_path: Path) -> None:
    registry, entry = add(tmp_path, (768,))
    entry = registry.update_info(entry, negative=True)  # type: ignore[arg-type]
    out = export_entry(entry, "kohya", tmp_path / "neg.safetensors")[0]
    assert spec_of(out)["modelspec.is_negative_embedding"] == "true"


def test_reimported_export_keeps_its_token(tmp_path: Path) -> None:
    registry, entry = add(tmp_path, (768,))
    out = export_entry(entry, "kohya", tmp_path / "renamed-file.safetensors")[0]  # type: ignore[arg-type]
    assert detect.read(out).embedding.token == "<cat-toy>"  # from modelspec.trigger_phrase
    result = import_file(registry, out, name="again")
    assert result.architecture == "stable-diffusion-v1/textual-inversion"


def test_lora_import_makes_one_entry_per_bundled_embedding(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    registry = Registry(tmp_path / "home")
    lora = tmp_path / "lora.safetensors"
    save_file(
        {
            "lora_unet_x.lora_down.weight": torch.zeros(4, 320, 1, 1),
            "bundle_emb.alpha.string_to_param.*": torch.randn(1, 768),
            "bundle_emb.beta.string_to_param.*": torch.randn(2, 768),
        },
        str(lora),
    )
    result = import_file(registry, lora)
    names = [result.entry.name, *(other.entry.name for other in result.also)]
    assert sorted(names) == ["alpha", "beta"]
    assert sorted(e.name for e in registry.list()) == ["alpha", "beta"]


def test_flux_entry_records_its_layout(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    registry = Registry(tmp_path / "home")
    path = tmp_path / "fluxy_emb.safetensors"
    clip, t5 = torch.randn(1, 768), torch.randn(1, 4096)
    save_file({"clip_l": clip, "t5": t5}, str(path))
    entry = import_file(registry, path).entry
    assert entry.family == "flux" and entry.info["layout"] == "Flux (clip_l + t5)"
    out = export_entry(entry, "kohya", tmp_path / "back.safetensors")[0]
    back = load_file(str(out))
    assert torch.equal(back["clip_l"], clip) and torch.equal(back["t5"], t5)
    assert spec_of(out)["modelspec.architecture"] == "flux-1/textual-inversion"
