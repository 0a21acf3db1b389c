"""tinv_cli.sampling.loader against diffusers' own load_textual_inversion on tiny real pipelines."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import encode_prompt
from tests.tiny import build_tiny_pipeline
from tinv_cli.embedding import Embedding
from tinv_cli.errors import ModelError
from tinv_cli.sampling.loader import check_fits, expand_prompt, load_concepts, model_widths

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

PROMPT = "a photo of a {} on the beach"


def _vectors(count: int, width: int, seed: int = 7) -> torch.Tensor:
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed))


def _diffusers_file(folder: Path, token: str, vectors: torch.Tensor) -> Path:
    """A file as the diffusers textual inversion example writes it: {token: [n, d]} safetensors."""
    path = folder / f"{token.strip('<>')}.safetensors"
    save_file({token: vectors.contiguous()}, str(path))
    return path


def _input_rows(pipe: Any, encoder: str = "text_encoder") -> torch.Tensor:
    return getattr(pipe, encoder).get_input_embeddings().weight.detach().clone()


def _diffusers_ids(pipe: StableDiffusionPipeline, prompt: str) -> list[int]:
    return pipe.tokenizer(pipe.maybe_convert_prompt(prompt, pipe.tokenizer)).input_ids


@pytest.mark.parametrize("count", [1, 3])
def test_same_ids_and_text_encoder_output_as_diffusers(tmp_path: Path, count: int) -> None:
    token = "<cat-toy>"
    vectors = _vectors(count, 32)
    path = _diffusers_file(tmp_path, token, vectors)
    embedding = Embedding(token, (vectors,))
    prompt = PROMPT.format(token)

    theirs = build_tiny_pipeline(32)
    theirs.load_textual_inversion(str(path))
    ours = build_tiny_pipeline(32)
    load_concepts(ours, [embedding])

    their_ids = _diffusers_ids(theirs, prompt)
    our_ids = ours.tokenizer(expand_prompt(prompt, [embedding])).input_ids
    assert our_ids == their_ids
    new_ids = [i for i in our_ids if i >= len(ours.tokenizer) - count]
    assert len(new_ids) == count

    assert len(ours.tokenizer) == len(theirs.tokenizer)
    assert ours.tokenizer.get_vocab() == theirs.tokenizer.get_vocab()
    assert torch.equal(_input_rows(ours), _input_rows(theirs))
    assert torch.equal(_input_rows(ours)[new_ids], vectors)

    # diffusers' own prompt encoding (which expands with maybe_convert_prompt) against ours.
    their_output = theirs.encode_prompt(prompt, "cpu", 1, False)[0]
    our_output = encode_prompt(ours, prompt)
    assert our_output.shape == (1, 77, 32)
    assert torch.equal(our_output, their_output)


def test_several_concepts_at_once_match_diffusers_list_load(tmp_path: Path) -> None:
    first = Embedding("<cat-toy>", (_vectors(2, 32, seed=1),))
    second = Embedding("<watercolor>", (_vectors(1, 32, seed=2),))
    paths = [_diffusers_file(tmp_path, e.token, e.vectors[0]) for e in (first, second)]
    prompt = "a <cat-toy> toy in the style of <watercolor>, a <cat-toy>"

    theirs = build_tiny_pipeline(32)
    theirs.load_textual_inversion([str(p) for p in paths])
    ours = build_tiny_pipeline(32)
    load_concepts(ours, [first, second])

    assert ours.tokenizer(expand_prompt(prompt, [first, second])).input_ids == _diffusers_ids(theirs, prompt)
    assert torch.equal(_input_rows(ours), _input_rows(theirs))
    assert torch.equal(encode_prompt(ours, prompt), theirs.encode_prompt(prompt, "cpu", 1, False)[0])


def test_rows_of_other_tokens_stay_bit_identical(tiny_pipeline: StableDiffusionPipeline) -> None:
    before = _input_rows(tiny_pipeline)
    load_concepts(tiny_pipeline, [Embedding("<x>", (_vectors(3, 32),))])
    after = _input_rows(tiny_pipeline)
    assert after.shape == (before.shape[0] + 3, 32)
    assert torch.equal(after[: before.shape[0]], before)


def test_half_precision_encoder_gets_rows_in_its_dtype(tmp_path: Path) -> None:
    vectors = _vectors(2, 32)
    theirs = build_tiny_pipeline(32)
    theirs.text_encoder.to(torch.float16)
    theirs.load_textual_inversion(str(_diffusers_file(tmp_path, "<h>", vectors)))
    ours = build_tiny_pipeline(32)
    ours.text_encoder.to(torch.float16)
    load_concepts(ours, [Embedding("<h>", (vectors,))])
    assert _input_rows(ours).dtype == torch.float16
    assert torch.equal(_input_rows(ours), _input_rows(theirs))


def test_two_encoder_pipeline_gets_one_tensor_per_encoder() -> None:
    """SDXL layout: vectors[0] goes to text_encoder + tokenizer, vectors[1] to text_encoder_2 + tokenizer_2."""
    clip_l, clip_g = _vectors(2, 32, seed=3), _vectors(2, 48, seed=4)
    token = "<s0>"

    # diffusers loads SDXL concepts with one call per encoder (its documented recipe).
    theirs_l, theirs_g = build_tiny_pipeline(32), build_tiny_pipeline(48)
    theirs_l.load_textual_inversion({token: clip_l})
    theirs_g.load_textual_inversion({token: clip_g})

    first, second = build_tiny_pipeline(32), build_tiny_pipeline(48)
    ours = SimpleNamespace(
        tokenizer=first.tokenizer,
        text_encoder=first.text_encoder,
        tokenizer_2=second.tokenizer,
        text_encoder_2=second.text_encoder,
    )
    assert model_widths(ours) == (32, 48)
    load_concepts(ours, [Embedding(token, (clip_l, clip_g))])
    assert torch.equal(_input_rows(ours, "text_encoder"), _input_rows(theirs_l))
    assert torch.equal(_input_rows(ours, "text_encoder_2"), _input_rows(theirs_g))
    assert ours.tokenizer_2.get_vocab() == theirs_g.tokenizer.get_vocab()


def test_model_widths(tiny_pipeline: StableDiffusionPipeline) -> None:
    assert model_widths(tiny_pipeline) == (32,)
    assert model_widths(build_tiny_pipeline(768)) == (768,)


def test_width_mismatch_is_refused_and_pipeline_untouched() -> None:
    pipe = build_tiny_pipeline(768)
    size, rows = len(pipe.tokenizer), _input_rows(pipe)
    sd2 = Embedding("<x>", (_vectors(1, 1024),))
    with pytest.raises(ModelError) as caught:
        load_concepts(pipe, [sd2])
    assert (
        caught.value.message
        == "<x> was trained for a 1024-wide text encoder (SD 2.x); this model's is 768 (SD 1.x)"
    )
    assert caught.value.hint == "use an SD 2.x base model (--model) or another concept"
    assert len(pipe.tokenizer) == size
    assert torch.equal(_input_rows(pipe), rows)


def test_a_bad_concept_among_good_ones_loads_none(tiny_pipeline: StableDiffusionPipeline) -> None:
    size = len(tiny_pipeline.tokenizer)
    good = Embedding("<good>", (_vectors(1, 32),))
    bad = Embedding("<bad>", (_vectors(1, 768),))
    with pytest.raises(ModelError, match="<bad> was trained for a 768-wide"):
        load_concepts(tiny_pipeline, [good, bad])
    assert len(tiny_pipeline.tokenizer) == size
    assert tiny_pipeline.text_encoder.get_input_embeddings().weight.shape[0] == size


def test_check_fits_wording() -> None:
    sdxl = Embedding("<xl>", (_vectors(1, 768), _vectors(1, 1280)))
    check_fits(sdxl, (768, 1280))
    with pytest.raises(ModelError) as caught:
        check_fits(sdxl, (768,))
    assert caught.value.message == (
        "<xl> was trained for 768 + 1280-wide text encoders (SDXL); this model's is 768 (SD 1.x)"
    )
    assert caught.value.hint == "use an SDXL base model (--model) or another concept"
    with pytest.raises(ModelError) as caught:
        check_fits(Embedding("<sd1>", (_vectors(1, 768),)), (768, 1280))
    assert caught.value.message.endswith("this model's are 768 + 1280 (SDXL)")
    with pytest.raises(ModelError) as caught:
        check_fits(Embedding("<odd>", (_vectors(1, 32),)), (768,))
    assert caught.value.hint == "use a base model with a 32-wide text encoder (--model) or another concept"


def test_token_already_in_tokenizer_is_refused(tiny_pipeline: StableDiffusionPipeline) -> None:
    load_concepts(tiny_pipeline, [Embedding("<x>", (_vectors(1, 32),))])
    size, rows = len(tiny_pipeline.tokenizer), _input_rows(tiny_pipeline)
    with pytest.raises(ModelError, match="token <x> is already in this model's tokenizer"):
        load_concepts(tiny_pipeline, [Embedding("<x>", (_vectors(1, 32, seed=9),))])
    # The CLIP tokenizer lowercases prompts, so <X> would never be reached either.
    with pytest.raises(ModelError, match=r"token <X> is already in this model's tokenizer \(as <x>\)"):
        load_concepts(tiny_pipeline, [Embedding("<X>", (_vectors(1, 32),))])
    # A multi-vector concept whose extra names are taken.
    load_concepts(tiny_pipeline, [Embedding("<y>_1", (_vectors(1, 32),))])
    with pytest.raises(ModelError, match="token <y>_1 is already"):
        load_concepts(tiny_pipeline, [Embedding("<y>", (_vectors(2, 32),))])
    with pytest.raises(ModelError, match=re.escape("token <|endoftext|> is already")):
        load_concepts(tiny_pipeline, [Embedding("<|endoftext|>", (_vectors(1, 32),))])
    assert len(tiny_pipeline.tokenizer) == size + 1
    assert torch.equal(_input_rows(tiny_pipeline)[:size], rows)


def test_duplicate_tokens_in_one_call_are_refused(tiny_pipeline: StableDiffusionPipeline) -> None:
    size = len(tiny_pipeline.tokenizer)
    twice = [Embedding("<z>", (_vectors(1, 32),)), Embedding("<z>", (_vectors(1, 32, seed=2),))]
    with pytest.raises(ModelError, match="token <z> is used by two of the concepts"):
        load_concepts(tiny_pipeline, twice)
    assert len(tiny_pipeline.tokenizer) == size


def test_expand_prompt() -> None:
    three = Embedding("<x>", (_vectors(3, 4),))
    two = Embedding("<xy>", (_vectors(2, 4),))
    one = Embedding("<one>", (_vectors(1, 4),))
    both = [three, two, one]
    assert expand_prompt("a <x> toy", both) == "a <x> <x>_1 <x>_2 toy"
    assert expand_prompt("<xy>,<x>", both) == "<xy> <xy>_1,<x> <x>_1 <x>_2"
    assert expand_prompt("a <one> and <x>_1", both) == "a <one> and <x>_1"
    assert expand_prompt("A <X> toy", both) == "A <x> <x>_1 <x>_2 toy"
    assert expand_prompt("no concept here", both) == "no concept here"
    assert expand_prompt("a <x> toy", []) == "a <x> toy"


def test_expand_prompt_prefers_the_longest_token() -> None:
    short = Embedding("<a", (_vectors(2, 4),))
    long = Embedding("<ab>", (_vectors(2, 4),))
    assert expand_prompt("x <ab> y <a z", [short, long]) == "x <ab> <ab>_1 y <a <a_1 z"


def test_encode_prompt_expands_loaded_concepts(tiny_pipeline: StableDiffusionPipeline) -> None:
    embedding = Embedding("<x>", (_vectors(3, 32),))
    load_concepts(tiny_pipeline, [embedding])
    tokenizer, encoder = tiny_pipeline.tokenizer, tiny_pipeline.text_encoder
    ids = tokenizer(
        "a <x> <x>_1 <x>_2 toy", padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        expected = encoder(ids)[0]
    assert torch.equal(encode_prompt(tiny_pipeline, "a <x> toy"), expected)
    assert not torch.equal(encode_prompt(tiny_pipeline, "a <x>_1 toy"), expected)


def test_a_pipeline_without_text_encoder_is_refused() -> None:
    concept = Embedding("<x>", (_vectors(1, 32),))
    with pytest.raises(ModelError, match="no text encoder"):
        load_concepts(SimpleNamespace(text_encoder=None, tokenizer=None), [concept])
    with pytest.raises(ModelError, match="no text encoder"):
        encode_prompt(SimpleNamespace(), "a <x>")
