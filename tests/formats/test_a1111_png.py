"""AUTOMATIC1111's PNG (and WebP) embeddings: the text chunk and the data strips in the pixels, both ways."""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

from tinv_cli.embedding import Embedding
from tinv_cli.errors import FormatError
from tinv_cli.formats import a1111_png, detect, writers


def make(n: int = 2, width: int = 768, seed: int = 0, token: str = "birb-style") -> Embedding:
    return Embedding(token, (torch.randn(n, width, generator=torch.Generator().manual_seed(seed)),))


def pixels_only(src: Path, dst: Path) -> Path:
    """What an image site does: the same pixels, re-encoded, every text chunk dropped."""
    with Image.open(src) as image:
        Image.fromarray(np.asarray(image.convert("RGB"))).save(dst, format="PNG")
    assert "sd-ti-embedding" not in Image.open(dst).info
    return dst


def a1111_insert(image: Image.Image, data: dict[str, object]) -> Image.Image:
    """A1111's ``insert_image_data_embed`` (modules/textual_inversion/image_embedding.py), re-typed step by step."""

    def encode(obj: object) -> object:
        if isinstance(obj, torch.Tensor):
            return {"TORCHTENSOR": obj.cpu().detach().numpy().tolist()}
        raise TypeError

    def lcg_block(shape: tuple[int, ...]) -> np.ndarray:
        seed, out = 0, []
        for _ in range(int(np.prod(shape))):
            seed = (1664525 * seed + 1013904223) % 2**32
            out.append(seed % 255)
        return np.array(out).astype(np.uint8).reshape(shape) & 0x0F

    def style(block: np.ndarray, sequence: list[int]) -> np.ndarray:
        im = Image.new("RGB", (block.shape[1], block.shape[0]))
        draw = ImageDraw.Draw(im)
        i = 0
        for x in range(-6, im.size[0], 8):
            for yi, y in enumerate(range(-6, im.size[1], 8)):
                offset = 4 if yi % 2 == 0 else 0
                shade = sequence[i % len(sequence)]
                i += 1
                draw.ellipse((x + offset, y, x + 6 + offset, y + 6), fill=(shade, shade, shade))
        return block ^ (np.array(im).astype(np.uint8) & 0xF0)

    raw = np.frombuffer(zlib.compress(json.dumps(data, default=encode).encode(), level=9), np.uint8).copy()
    h = image.size[1]
    size = raw.shape[0] + (h - raw.shape[0] % h)
    size = size + (h * 3 - size % (h * 3))
    low = np.resize(raw & 0x0F, size).reshape((h, -1, 3))
    high = np.resize(raw >> 4, size).reshape((h, -1, 3))
    edge = next(iter(data["string_to_param"].values())).cpu().detach().numpy().tolist()[0][:1024]  # type: ignore[attr-defined]
    edge = (np.abs(edge) / np.max(np.abs(edge)) * 255).astype(np.uint8)
    low = style(low, list(edge))
    low = np.bitwise_xor(low.astype(np.uint8), lcg_block(low.shape))
    high = style(high, list(edge[::-1]))
    high = np.bitwise_xor(high.astype(np.uint8), lcg_block(high.shape))
    im_low, im_high = Image.fromarray(low, mode="RGB"), Image.fromarray(high, mode="RGB")
    canvas = Image.new("RGB", (image.size[0] + im_low.size[0] + im_high.size[0] + 2, h), (0, 0, 0))
    canvas.paste(im_low, (0, 0))
    canvas.paste(image, (im_low.size[0] + 1, 0))
    canvas.paste(im_high, (im_low.size[0] + 1 + image.size[0] + 1, 0))
    return canvas


def test_tinv_png_decodes_from_the_chunk_and_from_the_pixels(tmp_path: Path) -> None:
    emb = make(3)
    out = writers.write(emb, "a1111-png", tmp_path / "birb-style.png", meta={"step": 500})[0]

    from_chunk = detect.read(out)
    assert from_chunk.format == "a1111-png" and from_chunk.meta["carrier"] == "text chunk"
    assert from_chunk.meta["step"] == 500
    assert from_chunk.embedding.token == "birb-style"
    assert torch.equal(from_chunk.embedding.vectors[0], emb.vectors[0])

    stripped = pixels_only(out, tmp_path / "downloaded.png")
    from_pixels = detect.read(stripped)
    assert from_pixels.meta["carrier"] == "pixels"
    assert from_pixels.embedding.token == "birb-style"  # A1111 names it by the data's name, not the file's
    assert torch.equal(from_pixels.embedding.vectors[0], emb.vectors[0])


def test_preview_is_the_concept_image_resized(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (800, 600), (200, 120, 40)).save(photo)
    emb = make(1)
    out = writers.write(emb, "a1111-png", tmp_path / "x.png", images=[photo])[0]
    with Image.open(out) as image:
        assert image.height == 384  # 800x600 -> 512x384, strips beside it
        middle = np.asarray(image.convert("RGB"))[192, image.width // 2]
    assert abs(int(middle[0]) - 200) < 3
    assert torch.equal(detect.read(pixels_only(out, tmp_path / "y.png")).embedding.vectors[0], emb.vectors[0])


def test_real_world_shaped_a1111_png_imports_exactly(tmp_path: Path) -> None:
    vectors = torch.randn(2, 768, generator=torch.Generator().manual_seed(3))
    data = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": vectors},
        "name": "birb-style",
        "step": 3000,
        "sd_checkpoint": "a9263745",
        "sd_checkpoint_name": "v1-5-pruned",
    }
    # A1111's preview: a captioned RGBA picture, with the data in its strips and the chunk beside them.
    preview = Image.new("RGBA", (512, 512), (255, 255, 200, 255))
    info = PngInfo()
    info.add_text(
        "sd-ti-embedding",
        base64.b64encode(json.dumps(data, default=lambda t: {"TORCHTENSOR": t.tolist()}).encode()).decode(),
    )
    full = tmp_path / "birb-style-3000.png"
    a1111_insert(preview, data).save(full, "PNG", pnginfo=info)

    for path in (full, pixels_only(full, tmp_path / "civitai-download.png")):
        imported = detect.read(path)
        assert imported.embedding.token == "birb-style"
        assert imported.meta["step"] == 3000 and imported.meta["sd_checkpoint_name"] == "v1-5-pruned"
        assert torch.equal(imported.embedding.vectors[0], vectors)


def test_lossless_webp_reads_from_its_pixels(tmp_path: Path) -> None:
    emb = make(2)
    png = writers.write(emb, "a1111-png", tmp_path / "birb-style.png")[0]
    webp = tmp_path / "birb-style.webp"
    Image.open(png).convert("RGB").save(webp, format="WEBP", lossless=True)
    assert torch.equal(detect.read(webp).embedding.vectors[0], emb.vectors[0])

    lossy = tmp_path / "lossy.webp"
    Image.open(png).convert("RGB").save(lossy, format="WEBP", quality=90)
    with pytest.raises(FormatError, match="lossy WebP"):
        detect.read(lossy)


def test_picture_without_an_embedding_is_one_line(tmp_path: Path) -> None:
    plain = tmp_path / "holiday.png"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(plain)
    with pytest.raises(FormatError) as caught:
        detect.read(plain)
    assert "holds no A1111 embedding" in caught.value.message
    assert "\n" not in caught.value.message


def test_sdxl_png_export_is_refused(tmp_path: Path) -> None:
    emb = Embedding("x", (torch.randn(1, 768), torch.randn(1, 1280)))
    with pytest.raises(FormatError, match="never wrote them for SDXL"):
        writers.write(emb, "a1111-png", tmp_path / "x.png")


def test_extract_reads_what_embed_hides() -> None:
    payload = zlib.compress(b'{"string_to_param": {}}' * 40, level=9)
    image = a1111_png.embed(Image.new("RGB", (96, 64), (90, 90, 90)), payload, [0.5, -1.0, 0.25])
    assert zlib.decompress(a1111_png.extract(image) or b"") == b'{"string_to_param": {}}' * 40
