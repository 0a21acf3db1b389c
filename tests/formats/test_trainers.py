"""Files other trainers write: LoRAs with bundled embeddings, OneTrainer, diffusers' advanced scripts (SDXL and
Flux), kohya's modelspec metadata, and diffusers' SDXL pair under any name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tinv_cli.errors import FormatError
from tinv_cli.formats import detect, writers


def vec(n: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


def lora_weights() -> dict[str, torch.Tensor]:
    """A few tensors in kohya's LoRA layout, 4-D and all: none of them is read."""
    return {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320, 1, 1),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4, 1, 1),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 768),
    }


def test_lora_bundles_are_read_each_as_an_embedding(tmp_path: Path) -> None:
    a, b = vec(2, 768, 1), vec(1, 768, 2)
    l1, g1 = vec(3, 768, 3), vec(3, 1280, 4)
    path = tmp_path / "character.safetensors"
    save_file(
        {
            **lora_weights(),
            "bundle_emb.charname.string_to_param.*": a,  # A1111's layout (SD 1.x)
            "bundle_emb.<outfit>.clip_l": b,  # OneTrainer's SD 1.x bundle: the CLIP-L key alone
            "bundle_emb.xl-thing.clip_l": l1,  # SDXL
            "bundle_emb.xl-thing.clip_g": g1,
        },
        str(path),
    )
    found = {item.embedding.token: item for item in detect.read_all(path)}
    assert set(found) == {"charname", "<outfit>", "xl-thing"}
    assert torch.equal(found["charname"].embedding.vectors[0], a)
    assert torch.equal(found["<outfit>"].embedding.vectors[0], b)
    assert [
        torch.equal(x, y) for x, y in zip(found["xl-thing"].embedding.vectors, (l1, g1), strict=True)
    ] == [
        True,
        True,
    ]
    assert found["charname"].format == "lora-bundle (a1111)"
    with pytest.raises(FormatError, match="bundles 3 embeddings"):
        detect.read(path)


def test_lora_without_bundles_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "style-lora.safetensors"
    save_file(lora_weights(), str(path))
    with pytest.raises(FormatError) as caught:
        detect.read_all(path)
    assert "a LoRA without bundled embeddings; tinv imports embeddings" in caught.value.message


def test_onetrainer_files(tmp_path: Path) -> None:
    sd = tmp_path / "onetrainer-sd.safetensors"
    inputs, outputs = vec(2, 768, 1), vec(2, 768, 2)
    save_file({"emp_params": inputs, "emp_params_out": outputs}, str(sd))
    imported = detect.read(sd)
    assert imported.format == "onetrainer" and imported.embedding.token == "onetrainer-sd"
    assert torch.equal(imported.embedding.vectors[0], inputs)
    assert imported.meta["ignored_keys"] == ["emp_params_out"]

    xl = tmp_path / "onetrainer-xl.safetensors"
    save_file({"clip_l": vec(1, 768), "clip_g": vec(1, 1280), "clip_l_out": vec(1, 768)}, str(xl))
    assert detect.read(xl).embedding.widths == (768, 1280)


def test_diffusers_advanced_sdxl_emb_file(tmp_path: Path) -> None:
    path = tmp_path / "my-concept_emb.safetensors"
    l1, g1 = vec(2, 768), vec(2, 1280)
    save_file({"clip_l": l1, "clip_g": g1}, str(path))
    imported = detect.read(path)
    assert imported.embedding.token == "my-concept_emb"
    assert torch.equal(imported.embedding.vectors[1], g1)


def test_flux_file_keeps_its_keys_and_exports_back(tmp_path: Path) -> None:
    path = tmp_path / "flux-thing_emb.safetensors"
    clip, t5 = vec(2, 768, 1), vec(2, 4096, 2)
    save_file({"t5": t5, "clip_l": clip}, str(path))
    imported = detect.read(path)
    assert imported.format == "flux"
    assert imported.meta["layout"] == "Flux (clip_l + t5)"
    assert imported.embedding.widths == (768, 4096)
    for fmt in ("a1111", "kohya"):
        out = writers.write(imported.embedding, fmt, tmp_path / f"{fmt}.safetensors")[0]
        back = load_file(str(out))
        assert set(back) == {"clip_l", "t5"}
        assert torch.equal(back["clip_l"], clip) and torch.equal(back["t5"], t5)


def test_kohya_modelspec_names_a_file_without_a_token(tmp_path: Path) -> None:
    path = tmp_path / "last.safetensors"
    meta = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "stable-diffusion-xl-v1-base/textual-inversion",
        "modelspec.title": "My Character",
        "modelspec.trigger_phrase": "mychar",
    }
    save_file({"clip_l": vec(1, 768), "clip_g": vec(1, 1280)}, str(path), metadata=meta)
    imported = detect.read(path)
    assert imported.embedding.token == "mychar"
    assert imported.architecture == "stable-diffusion-xl-v1-base/textual-inversion"
    assert imported.meta["modelspec"]["title"] == "My Character"

    # A trigger phrase of several words is no token: the title is not one either, so the file name is used.
    save_file(
        {"emb_params": vec(1, 768)}, str(path), metadata={**meta, "modelspec.trigger_phrase": "my char"}
    )
    assert detect.read(path).embedding.token == "last"
    # A file with a token of its own keeps it.
    save_file({"<own>": vec(1, 768)}, str(path), metadata=meta)
    assert detect.read(path).embedding.token == "<own>"


@pytest.mark.parametrize("names", [("learned_embeds", "learned_embeds_2"), ("cat-toy", "cat-toy_2")])
def test_sdxl_pair_is_one_concept_from_either_file(tmp_path: Path, names: tuple[str, str]) -> None:
    first, second = (tmp_path / f"{name}.safetensors" for name in names)
    l1, g1 = vec(2, 768, 1), vec(2, 1280, 2)
    save_file({"<cat-toy>": l1}, str(first))
    save_file({"<cat-toy>": g1}, str(second))
    for path in (first, second):
        imported = detect.read(path)
        assert imported.embedding.token == "<cat-toy>"
        assert imported.embedding.widths == (768, 1280)
        assert torch.equal(imported.embedding.vectors[1], g1)
        assert detect.consumed_files(path) == (first, second)


def test_files_named_like_a_pair_of_other_tokens_stay_apart(tmp_path: Path) -> None:
    save_file({"<one>": vec(1, 768)}, str(tmp_path / "x.safetensors"))
    save_file({"<two>": vec(1, 768)}, str(tmp_path / "x_2.safetensors"))
    assert detect.read(tmp_path / "x.safetensors").embedding.widths == (768,)
    assert detect.read(tmp_path / "x_2.safetensors").embedding.token == "<two>"
    assert detect.consumed_files(tmp_path / "x_2.safetensors") == (tmp_path / "x_2.safetensors",)


def test_a_flux_import_records_its_layout_with_the_entry_and_refuses_sampling(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    import json

    from tinv_cli import generate
    from tinv_cli.errors import ModelError
    from tinv_cli.registry.store import Registry
    from tinv_cli.registry.transfer import import_file

    path = tmp_path / "flux-thing_emb.safetensors"
    save_file({"clip_l": vec(1, 768, 1), "t5": vec(1, 4096, 2)}, str(path))
    entry = import_file(Registry(), path).entry
    info = json.loads((entry.path / "tinv.json").read_text())  # written with the entry, not patched in after
    assert (info["family"], info["layout"]) == ("flux", "Flux (clip_l + t5)")
    assert entry.family_label == "Flux (clip_l + t5)"
    with pytest.raises(ModelError, match=r"Flux .* embedding; tinv cannot sample or train with it"):
        generate(f"a <{entry.name}>", model=str(tiny_model_dir), steps=1)
