"""PNG metadata (AUTOMATIC1111 `parameters` + tinv's JSON), output names and the labelled grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import parse_parameters, read_metadata, read_png_text
from tinv_cli.errors import FormatError
from tinv_cli.sampling import pngmeta
from tinv_cli.sampling.output import _write_new, labelled_grid, slug

# Written by AUTOMATIC1111 1.10 (copied from an image's "parameters" chunk), including its quoting of a value
# that holds commas and colons.
A1111_TEXT = (
    "masterpiece, a <cat-toy> on a beach, (detailed:1.2)\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, "
    'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, TI hashes: "cat-toy: 4c4d3f2a1b0e, style: 0a1b2c3d4e5f", '
    "Version: v1.10.1"
)


def test_parses_what_automatic1111_writes() -> None:
    parsed = parse_parameters(A1111_TEXT)
    assert parsed["Prompt"] == "masterpiece, a <cat-toy> on a beach, (detailed:1.2)"
    assert parsed["Negative prompt"] == "blurry, lowres"
    assert parsed["Steps"] == "20"
    assert parsed["Sampler"] == "DPM++ 2M"
    assert parsed["Schedule type"] == "Karras"
    assert parsed["CFG scale"] == "7"
    assert parsed["Seed"] == "1234"
    assert parsed["Size"] == "512x768"
    assert parsed["Model"] == "v1-5-pruned-emaonly"
    assert parsed["TI hashes"] == "cat-toy: 4c4d3f2a1b0e, style: 0a1b2c3d4e5f"
    assert parsed["Version"] == "v1.10.1"


def test_format_then_parse_gives_back_every_value() -> None:
    settings = {
        "Steps": 30,
        "Sampler": "Euler a",
        "CFG scale": 7.5,
        "Seed": 42,
        "Size": "64x32",
        "Model": "org/model: v2, fp16",  # needs quoting: a comma and a colon
        "TI hashes": "cat-toy: 0123456789ab",
        "Left out": None,
    }
    prompt = "line one, with a comma\nline two: <cat-toy>"
    negative = "blurry\nsecond negative line"
    text = pngmeta.format_parameters(prompt, negative, settings)
    assert "Left out" not in text
    parsed = parse_parameters(text)
    assert parsed["Prompt"] == prompt
    assert parsed["Negative prompt"] == negative
    assert parsed["Model"] == "org/model: v2, fp16"
    assert parsed["TI hashes"] == "cat-toy: 0123456789ab"
    assert {k: parsed[k] for k in ("Steps", "Sampler", "CFG scale", "Seed", "Size")} == {
        "Steps": "30",
        "Sampler": "Euler a",
        "CFG scale": "7.5",
        "Seed": "42",
        "Size": "64x32",
    }


def test_no_negative_prompt_line_when_there_is_none() -> None:
    text = pngmeta.format_parameters("a cat", "", {"Steps": 1, "Seed": 2, "Size": "8x8"})
    assert text == "a cat\nSteps: 1, Seed: 2, Size: 8x8"
    assert parse_parameters(text)["Negative prompt"] == ""


def test_a_prompt_alone_is_all_prompt() -> None:
    parsed = parse_parameters("just a prompt: nothing else")
    assert parsed == {"Prompt": "just a prompt: nothing else", "Negative prompt": ""}


def test_png_chunks_round_trip_through_a_file(tmp_path: Path) -> None:
    parameters = pngmeta.format_parameters(
        "ein Käfer über dem Meer ✓", "", {"Steps": 2, "Seed": 7, "Size": "8x8"}
    )
    tinv = {"seed": 7, "concepts": [{"name": "cat-toy", "sha256": "ab" * 32}]}
    path = tmp_path / "image.png"
    Image.new("RGB", (8, 8), "red").save(path, pnginfo=pngmeta.png_info(parameters, tinv))

    parsed, meta = read_metadata(path)
    assert parsed["Prompt"] == "ein Käfer über dem Meer ✓"
    assert parsed["Seed"] == "7"
    assert meta == {"schema": pngmeta.TINV_SCHEMA, **tinv}
    # Other tools look for the chunk under exactly this key.
    assert json.loads(read_png_text(path)["tinv"])["seed"] == 7
    assert read_png_text(path)["parameters"] == parameters


def test_a_png_without_our_chunks_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(path)
    with pytest.raises(FormatError, match="no generation parameters"):
        read_metadata(path)
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(FormatError, match="not a readable PNG"):
        read_metadata(tmp_path / "junk.png")


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        (
            "A <cat-toy> backpack in the style of <birb-style>",
            "a-cat-toy-backpack-in-the-style-of-birb-style",
        ),
        ("<cat-toy@2>!!", "cat-toy-2"),
        ("   ", "image"),
        ("x" * 100, "x" * 48),
    ],
)
def test_slug(prompt: str, expected: str) -> None:
    assert slug(prompt) == expected


def test_names_are_never_reused(tmp_path: Path) -> None:
    first = _write_new(tmp_path, "a-cat-5", b"one")
    second = _write_new(tmp_path, "a-cat-5", b"two")
    third = _write_new(tmp_path, "a-cat-5", b"three")
    assert [p.name for p in (first, second, third)] == ["a-cat-5.png", "a-cat-5-2.png", "a-cat-5-3.png"]
    assert first.read_bytes() == b"one"


def test_grid_places_every_image_above_its_label() -> None:
    colours = ["red", "green", "blue", "yellow", "purple"]
    images = [Image.new("RGB", (32, 32), colour) for colour in colours]
    grid = labelled_grid(images, [f"seed {i}" for i in range(5)])
    # Five images make a 3 x 2 grid; each cell is the image plus a 16-pixel label strip.
    assert grid.size == (3 * 32, 2 * (32 + 16))
    for index, colour in enumerate(colours):
        x, y = (index % 3) * 32, (index // 3) * 48
        assert grid.getpixel((x + 16, y + 16)) == Image.new("RGB", (1, 1), colour).getpixel((0, 0))
        label = grid.crop((x, y + 32, x + 32, y + 48))
        assert label.getextrema() != ((255, 255), (255, 255), (255, 255)), "the label strip has text"
    # The sixth cell is empty.
    assert grid.crop((64, 48, 96, 96)).getextrema() == ((255, 255), (255, 255), (255, 255))
