"""Single-file checkpoints as base models: what a file is found to be from its header alone, the one-line
refusals (unknown families, truncated files, pickles that would run code), the prediction type, the shipped
configuration folders and CLIP's vocabulary derived from the merges, and the cached file hash."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.ldm_layout import save_config_folder, write_checkpoint
from tests.tiny import build_tiny_pipeline, build_tiny_sdxl_pipeline
from tinv_cli.errors import ModelError, NotFoundError
from tinv_cli.models import configs, loading, model_hash, refs, shipped_configs
from tinv_cli.models.single_file import open_single_file


@pytest.fixture(scope="module")
def sd1(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny SD 1.x checkpoint and its config folder."""
    root = tmp_path_factory.mktemp("sd1")
    pipe = build_tiny_pipeline()
    return write_checkpoint(pipe, root / "my-sd15.safetensors"), save_config_folder(pipe, root / "config")


def test_clip_vocab_derived_from_the_merges_is_clips() -> None:
    vocab = shipped_configs.clip_vocab()
    assert len(vocab) == 49408
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    # The well-known ids of openai/clip-vit-large-patch14.
    assert [vocab[w + "</w>"] for w in ("a", "photo", "of", "cat")] == [320, 1125, 539, 2368]


def test_every_shipped_folder_materialises_complete_with_its_tokenizers() -> None:
    from transformers import CLIPTokenizer

    pads = {}
    for name in shipped_configs.SHIPPED:
        folder = shipped_configs.config_folder(name)
        assert folder.parent == Path(os.environ["TINV_HOME"]) / "configs"
        index = json.loads((folder / "model_index.json").read_text())
        for component, value in index.items():
            if isinstance(value, list) and value[0] is not None:
                assert (folder / component).is_dir(), (name, component)
        for tokenizer in ("tokenizer", "tokenizer_2"):
            if tokenizer not in index:
                continue
            loaded = CLIPTokenizer.from_pretrained(str(folder / tokenizer), local_files_only=True)
            assert loaded("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
            pads[(name, tokenizer)] = loaded.pad_token
        assert shipped_configs.config_folder(name) == folder  # the second use finds it
    assert pads[("stable-diffusion-v1-5", "tokenizer")] == "<|endoftext|>"
    assert pads[("stable-diffusion-2-1", "tokenizer")] == "!"
    assert pads[("stable-diffusion-xl-base-1.0", "tokenizer")] == "<|endoftext|>"
    assert pads[("stable-diffusion-xl-base-1.0", "tokenizer_2")] == "!"


def test_shipped_configs_state_the_public_facts() -> None:
    def read(name: str, part: str) -> dict:
        return json.loads((shipped_configs.DATA / name / part).read_text())

    assert read("stable-diffusion-xl-base-1.0", "vae/config.json")["scaling_factor"] == 0.13025
    assert read("stable-diffusion-v1-5", "vae/config.json")["scaling_factor"] == 0.18215
    for name in ("stable-diffusion-2-1", "stable-diffusion-2-1-base"):
        assert read(name, "text_encoder/config.json")["num_hidden_layers"] == 23
    assert (
        read("stable-diffusion-2-1", "scheduler/scheduler_config.json")["prediction_type"] == "v_prediction"
    )
    assert read("stable-diffusion-2-1", "unet/config.json")["sample_size"] == 96
    assert (
        read("stable-diffusion-2-1-base", "scheduler/scheduler_config.json")["prediction_type"] == "epsilon"
    )
    assert read("stable-diffusion-2-1-base", "unet/config.json")["sample_size"] == 64


@pytest.mark.slow
def test_shipped_configs_build_models_of_the_real_sizes() -> None:
    """On the meta device (no memory): the well-known parameter counts of SD 1.5's, SD 2.1's and SDXL's parts."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def count(model: torch.nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())

    data = shipped_configs.DATA
    with torch.device("meta"):
        sizes = {
            "sd15 unet": count(
                UNet2DConditionModel.from_config(
                    UNet2DConditionModel.load_config(data / "stable-diffusion-v1-5/unet")
                )
            ),
            "sd15 vae": count(
                AutoencoderKL.from_config(AutoencoderKL.load_config(data / "stable-diffusion-v1-5/vae"))
            ),
            "clip-l": count(
                CLIPTextModel(CLIPTextConfig.from_pretrained(data / "stable-diffusion-v1-5/text_encoder"))
            ),
            "sdxl unet": count(
                UNet2DConditionModel.from_config(
                    UNet2DConditionModel.load_config(data / "stable-diffusion-xl-base-1.0/unet")
                )
            ),
            "clip-g": count(
                CLIPTextModelWithProjection(
                    CLIPTextConfig.from_pretrained(data / "stable-diffusion-xl-base-1.0/text_encoder_2")
                )
            ),
        }
    assert sizes == {
        "sd15 unet": 859_520_964,
        "sd15 vae": 83_653_863,
        "clip-l": 123_060_480,
        "sdxl unet": 2_567_463_684,
        "clip-g": 694_659_840,
    }


def test_a_checkpoint_is_named_from_its_header(sd1: tuple[Path, Path]) -> None:
    checkpoint, _ = sd1
    found = open_single_file(checkpoint)
    assert found.label == "my-sd15.safetensors: SD 1.x single-file checkpoint"
    assert found.prediction == "epsilon" and found.prediction_from == "default"
    assert found.config.name.startswith("stable-diffusion-v1-5-")
    assert refs.check_model_ref(str(checkpoint)) == found.config
    assert configs.model_widths_from_config(str(checkpoint)) == (768,)  # the shipped SD 1.5 configs


def test_an_sdxl_checkpoint_is_named_from_its_header(tmp_path: Path) -> None:
    checkpoint = write_checkpoint(build_tiny_sdxl_pipeline(), tmp_path / "xl.safetensors")
    found = open_single_file(checkpoint)
    assert found.label == "xl.safetensors: SDXL single-file checkpoint"
    assert configs.model_widths_from_config(str(checkpoint)) == (768, 1280)


def test_a_config_folder_describes_a_checkpoint_of_another_size(sd1: tuple[Path, Path]) -> None:
    checkpoint, config = sd1
    assert configs.model_widths_from_config(str(checkpoint), config=str(config)) == (32,)
    pipe = loading.load_pipeline(str(checkpoint), config=str(config))
    reference = build_tiny_pipeline()
    for name in ("unet", "vae", "text_encoder"):
        mine, theirs = getattr(pipe, name).state_dict(), getattr(reference, name).state_dict()
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = error.value.message
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("tensors", "words"),
    [
        ({"lora_unet_down_blocks_0.lora_down.weight": (4, 8), "lora_unet_x.alpha": ()}, "a LoRA"),
        ({"emb_params": (2, 768)}, "embedding"),
        ({f"model.diffusion_model.joint_blocks.{i}.x.weight": (8, 8) for i in range(10)}, "SD 3.x"),
        ({f"model.diffusion_model.double_blocks.{i}.x.weight": (8, 8) for i in range(10)}, "Flux"),
        (
            {
                **{f"conditioner.embedders.0.model.transformer.resblocks.{i}.w": (8, 8) for i in range(9)},
                "model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
            },
            "SDXL refiner",
        ),
        (
            {f"encoder.down.{i}.block.0.conv1.weight": (8, 8, 3, 3) for i in range(5)}
            | {f"decoder.up.{i}.w": (8, 8, 3, 3) for i in range(5)},
            "a VAE on its own",
        ),
    ],
)
def test_files_of_unknown_families_are_one_line_errors(tmp_path: Path, tensors: dict, words: str) -> None:
    path = tmp_path / "thing.safetensors"
    save_file({key: torch.zeros(shape) for key, shape in tensors.items()}, str(path))
    with pytest.raises(ModelError) as error:
        refs.check_model_ref(str(path))
    assert "thing.safetensors is not a base model tinv can use" in _one_line(error)
    assert words in error.value.message


def test_a_truncated_safetensors_file_is_named(sd1: tuple[Path, Path], tmp_path: Path) -> None:
    cut = tmp_path / "cut.safetensors"
    data = sd1[0].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError) as error:
        open_single_file(cut)
    assert "cut.safetensors is truncated" in _one_line(error)


def test_a_cut_ckpt_is_named(tmp_path: Path) -> None:
    whole = write_checkpoint(build_tiny_pipeline(), tmp_path / "whole.ckpt")
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ModelError) as error:
        open_single_file(cut)
    assert "cut.ckpt is a truncated or corrupt PyTorch checkpoint" in _one_line(error)


def test_a_missing_checkpoint_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"checkpoint file .*gone\.safetensors does not exist"):
        refs.check_model_ref(str(tmp_path / "gone.safetensors"))


class _Payload:
    """What a malicious pickle does: unpickling it calls ``Path.touch`` on a file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.target,))


def test_a_ckpt_that_would_run_code_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}, "payload": _Payload(marker)}, path)
    assert zipfile.is_zipfile(path)
    with pytest.raises(ModelError) as error:
        refs.check_model_ref(str(path))
    assert "evil.ckpt was refused" in _one_line(error) and "would run code" in error.value.message
    assert not marker.exists()
    # The legacy (non-zip) format too.
    legacy = tmp_path / "evil-legacy.ckpt"
    with legacy.open("wb") as f:
        pickle.dump({"state_dict": {}, "payload": _Payload(marker)}, f, protocol=2)
    with pytest.raises(ModelError, match="refused"):
        open_single_file(legacy)
    assert not marker.exists()


def test_a_weights_only_ckpt_loads(tmp_path: Path) -> None:
    pipe = build_tiny_pipeline()
    checkpoint = write_checkpoint(pipe, tmp_path / "plain.ckpt")
    config = save_config_folder(pipe, tmp_path / "config")
    assert open_single_file(checkpoint).label == "plain.ckpt: SD 1.x single-file checkpoint"
    loaded = loading.load_pipeline(str(checkpoint), config=str(config))
    assert torch.equal(loaded.unet.conv_in.weight, pipe.unet.conv_in.weight)


def test_sd2_prediction_type_setting_then_yaml_then_v_pred_key_then_default(tmp_path: Path) -> None:
    pipe = build_tiny_pipeline(1024)
    plain = write_checkpoint(pipe, tmp_path / "sd2.safetensors", open_clip=True)
    found = open_single_file(plain)
    assert found.label == "sd2.safetensors: SD 2.x single-file checkpoint"
    # diffusers' own single-file default for SD 2.x: the 768 px v-prediction model.
    assert (found.prediction, found.prediction_from) == ("v_prediction", "default")
    assert found.config.name.startswith("stable-diffusion-2-1-") and "base" not in found.config.name
    base = open_single_file(plain, prediction="epsilon")
    assert (base.prediction, base.prediction_from) == ("epsilon", "setting")
    assert base.config.name.startswith("stable-diffusion-2-1-base-")

    (tmp_path / "sd2.yaml").write_text('model:\n  params:\n    parameterization: "eps"\n')
    assert open_single_file(plain).prediction_from == "sd2.yaml"
    assert open_single_file(plain).prediction == "epsilon"
    (tmp_path / "sd2.yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert open_single_file(plain).prediction == "v_prediction"
    assert open_single_file(plain, prediction="epsilon").prediction == "epsilon"  # the setting wins

    marked = write_checkpoint(
        pipe, tmp_path / "marked.safetensors", open_clip=True, extra={"v_pred": torch.zeros(0)}
    )
    assert (open_single_file(marked).prediction, open_single_file(marked).prediction_from) == (
        "v_prediction",
        "v_pred key",
    )


def test_sd2_open_clip_checkpoint_loads_with_its_prediction_type(tmp_path: Path) -> None:
    pipe = build_tiny_pipeline(64)
    checkpoint = write_checkpoint(pipe, tmp_path / "sd2.safetensors", open_clip=True)
    config = save_config_folder(pipe, tmp_path / "config")
    # The tiny config's scheduler says epsilon; the setting decides over it, and the scheduler follows.
    loaded = loading.load_pipeline(str(checkpoint), config=str(config), prediction="v_prediction")
    assert loaded.scheduler.config.prediction_type == "v_prediction"
    assert open_single_file(checkpoint, config=str(config)).prediction == "epsilon"  # the folder's own
    mine, theirs = loaded.text_encoder.state_dict(), pipe.text_encoder.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_model_hash_is_a1111s_short_hash_and_is_cached(sd1: tuple[Path, Path], tmp_path: Path) -> None:
    import hashlib

    checkpoint, config = sd1
    expected = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert model_hash.model_hash(str(checkpoint)) == expected[:10]
    assert model_hash.model_hash(str(config)) is None and model_hash.model_hash("org/name") is None
    cache = json.loads((Path(os.environ["TINV_HOME"]) / "cache" / "model-hashes.json").read_text())
    assert list(cache.values()) == [expected]
    # A cached digest is used while the file is unchanged (same path, size and mtime) ...
    key = next(iter(cache))
    (Path(os.environ["TINV_HOME"]) / "cache" / "model-hashes.json").write_text(json.dumps({key: "f" * 64}))
    assert model_hash.model_hash(str(checkpoint)) == "f" * 10
    # ... and a rewritten file is hashed again.
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(checkpoint.read_bytes())
    assert model_hash.model_hash(str(copy)) == expected[:10]
