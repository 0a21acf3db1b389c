"""The training set: which files are read, how each kind of image becomes RGB, captions, and the sample stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tinv_cli.errors import DataError
from tinv_cli.training.data import (
    SampleStream,
    derive_seed,
    fingerprint,
    load_training_set,
    open_image,
    prepare_image,
    read_caption,
    to_pixels,
)
from tinv_cli.training.templates import OBJECT_TEMPLATES, STYLE_TEMPLATES, prompts_for


def _save(path: Path, color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 64)) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


# --- templates and captions -----------------------------------------------------------------------------------


def test_templates_are_the_reference_scripts() -> None:
    # Spot checks against examples/textual_inversion/textual_inversion.py: first, last, and the counts.
    assert len(OBJECT_TEMPLATES) == 27 and len(STYLE_TEMPLATES) == 19
    assert OBJECT_TEMPLATES[0] == "a photo of a {}" and OBJECT_TEMPLATES[-1] == "a photo of a small {}"
    assert STYLE_TEMPLATES[0] == "a painting in the style of {}"
    assert STYLE_TEMPLATES[-1] == "a large painting in the style of {}"


def test_prompts_without_caption_fill_every_template() -> None:
    prompts = prompts_for("style", "<s> <s>_1", "<s>")
    assert prompts == [t.format("<s> <s>_1") for t in STYLE_TEMPLATES]


def test_a_plain_caption_is_appended_to_every_template() -> None:
    prompts = prompts_for("object", "<t>", "<t>", "on a red chair")
    assert prompts[0] == "a photo of a <t>, on a red chair"
    assert len(prompts) == len(OBJECT_TEMPLATES)


@pytest.mark.parametrize("caption", ["a {} on a red chair", "a <t> on a red chair"])
def test_a_caption_naming_the_concept_is_the_prompt(caption: str) -> None:
    # With three vectors the token expands once, never twice (the placeholder contains the token).
    assert prompts_for("object", "<t> <t>_1 <t>_2", "<t>", caption) == ["a <t> <t>_1 <t>_2 on a red chair"]


def test_read_caption(tmp_path: Path) -> None:
    image = _save(tmp_path / "a.png")
    assert read_caption(image) is None
    (tmp_path / "a.txt").write_text("\n  on a beach  \nsecond line\n", encoding="utf-8")
    assert read_caption(image) == "on a beach"
    (tmp_path / "a.txt").write_text("  \n", encoding="utf-8")
    assert read_caption(image) is None


# --- files and pixels -----------------------------------------------------------------------------------------


def test_training_set_filters_and_sorts(tmp_path: Path) -> None:
    for name in ("b.png", "a.jpg", "c.JPEG", ".hidden.png"):
        _save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    _save(tmp_path / "sub" / "0.png")
    (tmp_path / "b.txt").write_text("on grass", encoding="utf-8")
    data = load_training_set(tmp_path, resolution=32, center_crop=False)
    assert [p.name for p in data.paths] == ["a.jpg", "b.png", "c.JPEG"]
    assert data.captions == (None, "on grass", None)
    assert data.pixels.shape == (3, 3, 32, 32) and data.pixels.dtype == torch.float32


def test_empty_folder_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("no images here", encoding="utf-8")
    with pytest.raises(DataError, match="holds no images") as caught:
        load_training_set(tmp_path, resolution=32, center_crop=False)
    assert str(tmp_path) in caught.value.message


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_corrupt_file_is_named(tmp_path: Path, content: bytes) -> None:
    _save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(content)
    with pytest.raises(DataError) as caught:
        load_training_set(tmp_path, resolution=32, center_crop=False)
    assert str(tmp_path / "b.png") in caught.value.message
    assert caught.value.hint


def test_truncated_jpeg_is_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "x.jpg", quality=95)
    data = (tmp_path / "x.jpg").read_bytes()
    (tmp_path / "x.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"x\.jpg"):
        open_image(tmp_path / "x.jpg")


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # A 40x20 landscape image whose EXIF says "rotate 90 degrees": people see it as 20x40 portrait.
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=100)
    upright = open_image(tmp_path / "r.jpg")
    assert upright.size == (20, 40)
    # Orientation 6 turns the left (blue) half to the top.
    assert upright.getpixel((10, 5))[2] > 200 and upright.getpixel((10, 35))[0] > 200


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    rgba.save(tmp_path / "a.png")
    image = open_image(tmp_path / "a.png")
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((4, 4)) == (255, 0, 0)


def test_palette_with_transparency_and_grayscale_alpha(tmp_path: Path) -> None:
    la = Image.new("LA", (4, 4), (0, 0))
    la.save(tmp_path / "la.png")
    assert open_image(tmp_path / "la.png").getpixel((1, 1)) == (255, 255, 255)
    palette = Image.new("RGBA", (4, 4), (0, 0, 0, 0)).convert("P")
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png", transparency=0)
    assert open_image(tmp_path / "p.png").getpixel((1, 1)) == (255, 255, 255)


def test_grayscale_and_cmyk_become_rgb(tmp_path: Path) -> None:
    Image.new("L", (4, 4), 77).save(tmp_path / "g.png")
    assert open_image(tmp_path / "g.png").getpixel((0, 0)) == (77, 77, 77)
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    red = open_image(tmp_path / "c.jpg").getpixel((0, 0))
    assert red[0] > 230 and red[1] < 30 and red[2] < 30


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 32896], [65535, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as raw:
        assert raw.mode.startswith("I")  # the file really is 16-bit
    image = open_image(tmp_path / "deep.png")
    assert image.getpixel((0, 0)) == (0, 0, 0)
    assert image.getpixel((1, 0)) == (128, 128, 128)
    assert image.getpixel((0, 1)) == (255, 255, 255)


def test_small_images_are_reported(tmp_path: Path) -> None:
    _save(tmp_path / "big.png", size=(64, 64))
    _save(tmp_path / "tiny.png", size=(16, 24))
    notes: list[str] = []
    load_training_set(tmp_path, resolution=32, center_crop=False, warn=notes.append)
    assert len(notes) == 1 and "tiny.png is 16x24" in notes[0]


def test_center_crop_and_resize() -> None:
    image = Image.new("RGB", (60, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))  # the blue central square
    cropped = prepare_image(image, 8, center_crop=True)
    assert cropped.size == (8, 8)
    assert all(cropped.getpixel((x, y)) == (0, 0, 255) for x in range(8) for y in range(8))
    squashed = prepare_image(image, 8, center_crop=False)
    assert squashed.size == (8, 8) and squashed.getpixel((0, 4))[0] > 200  # red edges kept


def test_to_pixels_range_and_layout() -> None:
    image = Image.new("RGB", (2, 1), (0, 0, 0))
    image.putpixel((1, 0), (255, 128, 0))
    pixels = to_pixels(image)
    assert pixels.shape == (3, 1, 2)
    assert pixels[:, 0, 0].tolist() == [-1.0, -1.0, -1.0]
    assert pixels[0, 0, 1] == 1.0 and pixels[1, 0, 1] == pytest.approx(128 / 127.5 - 1, abs=1e-6)


def test_fingerprint_follows_pixels_names_and_captions(tmp_path: Path) -> None:
    a = _save(tmp_path / "a.png")
    first = fingerprint([a])
    assert fingerprint([a]) == first
    (tmp_path / "a.txt").write_text("on grass", encoding="utf-8")
    with_caption = fingerprint([a])
    assert with_caption != first
    _save(a, color=(1, 2, 3))
    assert fingerprint([a]) != with_caption


# --- the sample stream ----------------------------------------------------------------------------------------


def _draw(stream: SampleStream, batches: int) -> list[tuple[list[int], list[int], list[int]]]:
    return [tuple(t.tolist() for t in stream.next_batch()) for _ in range(batches)]  # type: ignore[misc]


def test_each_epoch_shows_every_image_once() -> None:
    stream = SampleStream([27] * 5, batch_size=1, flip_p=0.5, seed=3)
    images = [b[0][0] for b in _draw(stream, 15)]
    for epoch in range(3):
        assert sorted(images[epoch * 5 : epoch * 5 + 5]) == [0, 1, 2, 3, 4]
    assert images[:5] != images[5:10] or images[5:10] != images[10:15]  # reshuffled


def test_stream_is_seeded_and_resumable() -> None:
    counts = [27, 1, 27]
    whole = _draw(SampleStream(counts, batch_size=2, flip_p=0.5, seed=7), 12)
    assert whole == _draw(SampleStream(counts, batch_size=2, flip_p=0.5, seed=7), 12)
    assert whole != _draw(SampleStream(counts, batch_size=2, flip_p=0.5, seed=8), 12)
    first = SampleStream(counts, batch_size=2, flip_p=0.5, seed=7)
    head = _draw(first, 5)
    saved = first.state_dict()
    second = SampleStream(counts, batch_size=2, flip_p=0.5, seed=7)
    second.load_state_dict(saved)
    assert head + _draw(second, 7) == whole
    for images, _, prompts in whole:
        assert all(p < counts[i] for i, p in zip(images, prompts, strict=True))
        assert all(p == 0 for i, p in zip(images, prompts, strict=True) if counts[i] == 1)


def test_processes_split_each_global_batch() -> None:
    ranks = [SampleStream([27] * 4, batch_size=1, flip_p=0.5, seed=0, rank=r, world_size=2) for r in range(2)]
    draws = [_draw(stream, 6) for stream in ranks]
    for step in range(6):
        assert draws[0][step][0] != draws[1][step][0]  # different images in the same step
    seen = [draws[r][s][0][0] for s in range(2) for r in range(2)]
    assert sorted(seen) == [0, 1, 2, 3]  # one epoch over both processes
    assert [d[1] + d[2] for d in draws[0]] != [d[1] + d[2] for d in draws[1]]  # own flips and prompts


@pytest.mark.parametrize(("flip_p", "expected"), [(0.0, 0), (1.0, 1)])
def test_flip_probability(flip_p: float, expected: int) -> None:
    stream = SampleStream([27] * 3, batch_size=4, flip_p=flip_p, seed=0)
    assert all(flip == expected for batch in _draw(stream, 5) for flip in batch[1])


def test_derived_seeds_differ_by_stream_and_rank() -> None:
    seeds = {derive_seed(0, s, r) for s in ("noise", "order", "picks") for r in (0, 1)}
    assert len(seeds) == 6
    assert derive_seed(0, "noise") == derive_seed(0, "noise", 0)
