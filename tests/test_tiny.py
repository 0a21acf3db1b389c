"""The shipped test tokenizer and the tiny pipelines other tests build on."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

from tests.tiny import IMAGE_SIZE, TOKENIZER_DIR, build_tiny_pipeline, save_tiny_pipeline

MAKE_TOKENIZER = Path(__file__).resolve().parent / "assets" / "make_tokenizer.py"

PROMPTS = [
    "A <cat-toy> backpack on the beach",
    "a photo of a clean cat, close-up!",
    "  Red   SQUARES and 3 blue circles...  ",
    "zxqv quokka's café 1234 — naïve",
    "the painting in the style of <my-style>_1, 4k",
    "<|startoftext|>a dog<|endoftext|>",
]


def _load_make_tokenizer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_tokenizer", MAKE_TOKENIZER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def maker() -> ModuleType:
    return _load_make_tokenizer()


@pytest.fixture
def tokenizer() -> CLIPTokenizer:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR)


def test_tokenizer_loads_with_clip_special_tokens(tokenizer: CLIPTokenizer) -> None:
    vocab = json.loads((TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    assert 512 < len(tokenizer) == len(vocab) <= 2000
    assert tokenizer.model_max_length == 77
    assert tokenizer.bos_token == "<|startoftext|>" and tokenizer.bos_token_id == len(vocab) - 2
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.eos_token_id == len(vocab) - 1
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    ids = tokenizer("a cat", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id


def test_every_listed_word_is_one_token(tokenizer: CLIPTokenizer, maker: ModuleType) -> None:
    words = maker.word_list()
    assert len(words) > 300
    for needed in (
        "photo",
        "rendering",
        "cropped",
        "painting",
        "style",
        "cat",
        "toy",
        "backpack",
        "triangle",
    ):
        assert needed in words
    split = {word: tokenizer.tokenize(word) for word in words if tokenizer.tokenize(word) != [word + "</w>"]}
    assert split == {}


def test_templates_tokenize_word_by_word(tokenizer: CLIPTokenizer, maker: ModuleType) -> None:
    for template in maker.OBJECT_TEMPLATES + maker.STYLE_TEMPLATES:
        prompt = template.format("toy")
        pieces = tokenizer.tokenize(prompt)
        assert all(piece.endswith("</w>") for piece in pieces), (prompt, pieces)


def test_unknown_words_split_into_byte_pieces(tokenizer: CLIPTokenizer, maker: ModuleType) -> None:
    assert tokenizer.tokenize("zxqv") == ["z", "x", "q", "v</w>"]
    byte_symbols = set(maker.bytes_to_unicode().values())
    pieces = tokenizer.tokenize("ü")  # two UTF-8 bytes, each its own symbol
    assert len(pieces) == 2 and pieces[0] in byte_symbols and pieces[1].removesuffix("</w>") in byte_symbols
    assert tokenizer.unk_token_id not in tokenizer("zxqv ü ☃").input_ids[1:-1]


def test_transformers_agrees_with_clips_own_bpe(tokenizer: CLIPTokenizer, maker: ModuleType) -> None:
    reference = maker.ReferenceTokenizer(TOKENIZER_DIR)
    for prompt in PROMPTS[:-1]:
        assert tokenizer(prompt).input_ids == reference.encode(prompt), prompt


def test_fast_tokenizer_gives_the_same_ids(tokenizer: CLIPTokenizer) -> None:
    import transformers

    fast_class = getattr(transformers, "CLIPTokenizerFast", None)
    if fast_class is None:
        pytest.skip("this transformers has no CLIPTokenizerFast")
    fast = fast_class.from_pretrained(TOKENIZER_DIR)
    for prompt in PROMPTS:
        assert fast(prompt).input_ids == tokenizer(prompt).input_ids, prompt


def test_make_tokenizer_is_deterministic_and_matches_the_shipped_files(tmp_path: Path) -> None:
    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run(
            [sys.executable, str(MAKE_TOKENIZER), str(out)], check=True, env=env, capture_output=True
        )
        outputs.append({path.name: path.read_bytes() for path in sorted(out.iterdir())})
    shipped = {path.name: path.read_bytes() for path in sorted(TOKENIZER_DIR.iterdir())}
    assert set(shipped) == {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"}
    assert outputs[0] == outputs[1] == shipped


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def test_build_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = build_tiny_pipeline()
    assert torch.equal(torch.rand(3), expected_draw)

    second = build_tiny_pipeline()
    other = build_tiny_pipeline(seed=1)
    for name in ("text_encoder", "unet", "vae"):
        assert _same_weights(getattr(first, name), getattr(second, name)), name
        assert not _same_weights(getattr(first, name), getattr(other, name)), name


@pytest.mark.parametrize("width", [32, 768, 1024])
def test_widths(width: int) -> None:
    pipe = build_tiny_pipeline(width)
    config = pipe.text_encoder.config
    assert config.hidden_size == width
    assert pipe.text_encoder.get_input_embeddings().weight.shape == (len(pipe.tokenizer), width)
    assert pipe.unet.config.cross_attention_dim == width
    assert config.eos_token_id == pipe.tokenizer.eos_token_id
    assert config.bos_token_id == pipe.tokenizer.bos_token_id
    assert config.max_position_embeddings == pipe.tokenizer.model_max_length == 77
    # Real widths must stay cheap: a handful of millions of weights, not CLIP's 123M.
    assert sum(p.numel() for p in pipe.text_encoder.parameters()) < 12_000_000


def test_pipeline_generates_deterministically(tiny_pipeline: StableDiffusionPipeline) -> None:
    def run() -> object:
        generator = torch.Generator().manual_seed(0)
        return tiny_pipeline(
            "a photo of a cat", num_inference_steps=2, generator=generator, output_type="np"
        ).images

    first, second = run(), run()
    assert first.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert (first == second).all()
    assert tiny_pipeline.safety_checker is None and tiny_pipeline.feature_extractor is None


def test_scheduler_settings_and_prediction_type() -> None:
    config = build_tiny_pipeline(prediction_type="v_prediction").scheduler.config
    assert config.prediction_type == "v_prediction"
    assert (config.beta_schedule, config.beta_start, config.beta_end) == ("scaled_linear", 0.00085, 0.012)
    assert config.num_train_timesteps == 1000


def test_saved_pipeline_loads_offline_with_the_same_weights(tiny_model_dir: Path) -> None:
    from diffusers import StableDiffusionPipeline

    assert (tiny_model_dir / "model_index.json").is_file()
    loaded = StableDiffusionPipeline.from_pretrained(tiny_model_dir, local_files_only=True)
    built = build_tiny_pipeline()
    for name in ("text_encoder", "unet", "vae"):
        assert _same_weights(getattr(loaded, name), getattr(built, name)), name
    assert loaded.tokenizer("a <cat-toy> toy").input_ids == built.tokenizer("a <cat-toy> toy").input_ids
    assert loaded.tokenizer.model_max_length == 77
    assert loaded.scheduler.config.beta_schedule == "scaled_linear"


def test_save_tiny_pipeline_passes_its_arguments(tmp_path: Path) -> None:
    folder = save_tiny_pipeline(tmp_path / "sd2-like", 1024, prediction_type="v_prediction")
    text_config = json.loads((folder / "text_encoder" / "config.json").read_text())
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert text_config["hidden_size"] == 1024
    assert scheduler_config["prediction_type"] == "v_prediction"
