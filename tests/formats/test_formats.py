"""Reading and writing every embedding format, with real-shaped tensors and real files on disk."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tinv_cli.embedding import Embedding
from tinv_cli.errors import FormatError
from tinv_cli.formats import detect, writers

TOKEN = "<cat-toy>"
WIDTHS = [(768,), (1024,), (768, 1280)]


def make(widths: tuple[int, ...], n: int, token: str = TOKEN, seed: int = 0) -> Embedding:
    generator = torch.Generator().manual_seed(seed)
    return Embedding(token, tuple(torch.randn(n, w, generator=generator) for w in widths))


def out_path(tmp_path: Path, fmt: str, emb: Embedding, token: str = TOKEN) -> Path:
    """Where each format's export goes: formats that name the token after the file get ``<token>.ext``."""
    if fmt == "concepts-library" or (fmt == "diffusers" and len(emb.widths) == 2):
        return tmp_path / "export"
    if fmt == "a1111" and len(emb.widths) == 1:
        return tmp_path / f"{token}.pt"
    if fmt == "a1111-png":
        return tmp_path / f"{token}.png"
    return tmp_path / f"{token}.safetensors"


def a1111_load_from_file(path: Path) -> dict[str, object]:
    """The key access of A1111's ``EmbeddingDatabase.load_from_file`` (modules/textual_inversion), re-typed."""
    name, ext = os.path.splitext(path.name)
    if ext.upper() == ".SAFETENSORS":
        data = load_file(str(path), device="cpu")
    else:
        data = torch.load(path, map_location="cpu", weights_only=True)
    if "string_to_param" in data:
        param_dict = data["string_to_param"]
        param_dict = getattr(param_dict, "_parameters", param_dict)
        assert len(param_dict) == 1, "embedding file has multiple terms in it"
        emb = next(iter(param_dict.items()))[1]
        vec = emb.detach().to(dtype=torch.float32)
        shape, vectors = vec.shape[-1], vec.shape[0]
    elif type(data) is dict and "clip_g" in data and "clip_l" in data:
        vec = {k: v.detach().to(dtype=torch.float32) for k, v in data.items()}
        shape = data["clip_g"].shape[-1] + data["clip_l"].shape[-1]
        vectors = data["clip_g"].shape[0]
    elif type(data) is dict and type(next(iter(data.values()))) is torch.Tensor:
        assert len(data.keys()) == 1, "embedding file has multiple terms in it"
        emb = next(iter(data.values()))
        if len(emb.shape) == 1:
            emb = emb.unsqueeze(0)
        vec = emb.detach().to(dtype=torch.float32)
        shape, vectors = vec.shape[-1], vec.shape[0]
    else:
        raise AssertionError(
            f"Couldn't identify {path.name} as neither textual inversion embedding nor diffuser concept."
        )
    return {
        "name": name,
        "vec": vec,
        "shape": shape,
        "vectors": vectors,
        "step": data.get("step", None),
        "sd_checkpoint_name": data.get("sd_checkpoint_name", None),
    }


# Round trips


@pytest.mark.parametrize("fmt", writers.EXPORT_FORMATS)
@pytest.mark.parametrize("widths", WIDTHS, ids=lambda w: "+".join(map(str, w)))
@pytest.mark.parametrize("n", [1, 4])
def test_export_then_import_is_exact(tmp_path: Path, fmt: str, widths: tuple[int, ...], n: int) -> None:
    emb = make(widths, n)
    out = out_path(tmp_path, fmt, emb)
    if fmt == "a1111-png" and len(widths) > 1:
        with pytest.raises(FormatError, match="never wrote them for SDXL"):
            writers.write(emb, fmt, out)
        return
    written = writers.write(emb, fmt, out)
    assert written and all(p.is_file() for p in written)

    imported = detect.read(out)

    assert imported.embedding.token == TOKEN
    assert imported.embedding.num_vectors == n
    assert imported.embedding.widths == widths
    assert imported.embedding.equal(emb)
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in imported.embedding.vectors)
    expected = {"kohya": "kohya", "a1111": "a1111", "diffusers": "diffusers"}.get(fmt, fmt)
    if len(widths) == 2 and fmt in ("a1111", "kohya"):
        expected = "sdxl"
    assert imported.format == expected


def test_a1111_keeps_all_16_vectors(tmp_path: Path) -> None:
    emb = make((768,), 16, token="sixteen")
    writers.write(emb, "a1111", tmp_path / "sixteen.pt", meta={"step": 3000})
    imported = detect.read(tmp_path / "sixteen.pt")
    assert imported.embedding.num_vectors == 16
    assert imported.embedding.equal(emb)
    assert imported.meta["step"] == 3000


def test_import_then_export_then_import_from_a_foreign_a1111_file(tmp_path: Path) -> None:
    vec = torch.nn.Parameter(torch.randn(3, 768))
    source = tmp_path / "style-thing.pt"
    torch.save(
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": vec},
            "name": "style-thing-1500",
            "step": 1500,
            "sd_checkpoint": "a9263745",
            "sd_checkpoint_name": "v1-5-pruned",
        },
        source,
    )
    first = detect.read(source)
    assert first.format == "a1111"
    assert first.embedding.token == "style-thing"
    assert first.meta == {
        "name": "style-thing-1500",
        "step": 1500,
        "sd_checkpoint": "a9263745",
        "sd_checkpoint_name": "v1-5-pruned",
    }
    for fmt in writers.EXPORT_FORMATS:
        out = out_path(tmp_path / fmt, fmt, first.embedding, token="style-thing")
        writers.write(first.embedding, fmt, out)
        again = detect.read(out)
        assert again.embedding.equal(first.embedding), fmt
        assert torch.equal(again.embedding.vectors[0], vec.detach())


def test_old_textual_inversion_parameterdict_file_is_read(tmp_path: Path) -> None:
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(torch.randn(2, 768))})
    path = tmp_path / "old.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": params}, path)
    imported = detect.read(path)
    assert imported.embedding.token == "old"
    assert torch.equal(imported.embedding.vectors[0], params["*"].detach())


# Concepts library


def concept_folder(tmp_path: Path, tensor: torch.Tensor, *, safetensors: torch.Tensor | None = None) -> Path:
    folder = tmp_path / "sd-concepts-library" / "cat-toy"
    (folder / "concept_images").mkdir(parents=True)
    torch.save({"<cat-toy>": tensor}, folder / "learned_embeds.bin")
    if safetensors is not None:
        save_file({"<cat-toy>": safetensors}, str(folder / "learned_embeds.safetensors"))
    (folder / "token_identifier.txt").write_text("<cat-toy>")
    (folder / "type_of_concept.txt").write_text("style\n")
    from PIL import Image

    # Real images: a concepts library folder's concept_images/ holds nothing else (formats/contained.py).
    for name in ("2.jpeg", "0.jpeg", "1.png"):
        Image.new("RGB", (8, 8), "red").save(folder / "concept_images" / name)
    return folder


def test_concepts_library_folder_with_1d_bin(tmp_path: Path) -> None:
    vector = torch.randn(768)
    folder = concept_folder(tmp_path, vector)

    imported = detect.read(folder)

    assert imported.format == "concepts-library"
    assert imported.source == folder
    assert imported.kind == "style"
    assert [p.name for p in imported.images] == ["0.jpeg", "1.png", "2.jpeg"]
    assert imported.embedding.token == "<cat-toy>"
    assert imported.embedding.num_vectors == 1
    assert torch.equal(imported.embedding.vectors[0][0], vector)

    via_file = detect.read(folder / "learned_embeds.bin")
    assert via_file.format == "concepts-library"
    assert via_file.kind == "style"
    assert via_file.embedding.equal(imported.embedding)


def test_concepts_library_prefers_safetensors(tmp_path: Path) -> None:
    in_bin, in_safetensors = torch.randn(768), torch.randn(1, 768)
    folder = concept_folder(tmp_path, in_bin, safetensors=in_safetensors)
    imported = detect.read(folder)
    assert torch.equal(imported.embedding.vectors[0], in_safetensors)


def test_concepts_library_token_file_wins_over_key_and_key_is_the_fallback(tmp_path: Path) -> None:
    folder = tmp_path / "concept"
    folder.mkdir()
    torch.save({"<key-token>": torch.randn(768)}, folder / "learned_embeds.bin")
    assert detect.read(folder).embedding.token == "<key-token>"
    assert detect.read(folder).kind is None
    (folder / "token_identifier.txt").write_text("<file-token>\n")
    assert detect.read(folder).embedding.token == "<file-token>"


def test_write_concepts_library_layout(tmp_path: Path) -> None:
    images = []
    for name in ("a.png", "b.jpg"):
        images.append(tmp_path / "imgs" / name)
        images[-1].parent.mkdir(exist_ok=True)
        images[-1].write_bytes(name.encode())
    one = make((768,), 1)
    folder = tmp_path / "entry"

    written = writers.write_concepts_library(one, folder, kind="style", images=images, readme="# cat toy\n")

    assert sorted(p.relative_to(folder).as_posix() for p in written) == sorted(
        [
            "learned_embeds.safetensors",
            "learned_embeds.bin",
            "token_identifier.txt",
            "type_of_concept.txt",
            "concept_images/a.png",
            "concept_images/b.jpg",
            "README.md",
        ]
    )
    # Nothing else, in particular no temporary files left behind.
    assert sorted(p for p in folder.rglob("*") if p.is_file()) == sorted(written)
    safe = load_file(str(folder / "learned_embeds.safetensors"))
    assert list(safe) == [TOKEN] and safe[TOKEN].shape == (1, 768)
    bin_data = torch.load(folder / "learned_embeds.bin", weights_only=True)
    assert list(bin_data) == [TOKEN] and bin_data[TOKEN].shape == (768,)
    assert torch.equal(bin_data[TOKEN], one.vectors[0][0])
    assert (folder / "token_identifier.txt").read_text() == TOKEN
    assert (folder / "type_of_concept.txt").read_text() == "style"
    assert (folder / "concept_images" / "b.jpg").read_bytes() == b"b.jpg"
    assert (folder / "README.md").read_text() == "# cat toy\n"
    assert detect.read_entry_embedding(folder).equal(one)


def test_write_concepts_library_multi_vector_and_sdxl(tmp_path: Path) -> None:
    four = make((1024,), 4)
    writers.write_concepts_library(four, tmp_path / "four")
    bin_data = torch.load(tmp_path / "four" / "learned_embeds.bin", weights_only=True)
    assert bin_data[TOKEN].shape == (4, 1024)

    sdxl = make((768, 1280), 2)
    written = writers.write_concepts_library(sdxl, tmp_path / "xl")
    assert not (tmp_path / "xl" / "learned_embeds.bin").exists()
    assert tmp_path / "xl" / "learned_embeds.bin" not in written
    safe = load_file(str(tmp_path / "xl" / "learned_embeds.safetensors"))
    assert {k: tuple(v.shape) for k, v in safe.items()} == {"clip_l": (2, 768), "clip_g": (2, 1280)}
    assert detect.read_entry_embedding(tmp_path / "xl").equal(sdxl)


# Files have the keys and shapes the other tools expect


def test_a1111_file_loads_as_a1111_reads_it(tmp_path: Path) -> None:
    emb = make((768,), 3, token="my-style")
    path = tmp_path / "my-style.pt"
    writers.write(emb, "a1111", path, meta={"step": 500, "sd_checkpoint_name": "v1-5"})

    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["string_to_token"] == {"*": 265}
    assert list(raw["string_to_param"]) == ["*"]
    assert raw["name"] == "my-style" and raw["step"] == 500
    assert raw["sd_checkpoint"] is None and raw["sd_checkpoint_name"] == "v1-5"

    loaded = a1111_load_from_file(path)
    assert loaded["name"] == "my-style"
    assert loaded["vectors"] == 3 and loaded["shape"] == 768
    assert torch.equal(loaded["vec"], emb.vectors[0])
    assert loaded["step"] == 500 and loaded["sd_checkpoint_name"] == "v1-5"


def test_a1111_sdxl_file_loads_as_a1111_reads_it(tmp_path: Path) -> None:
    emb = make((768, 1280), 2, token="xl-style")
    path = tmp_path / "xl-style.safetensors"
    writers.write(emb, "a1111", path)
    loaded = a1111_load_from_file(path)
    assert loaded["name"] == "xl-style"
    assert loaded["vectors"] == 2 and loaded["shape"] == 768 + 1280
    assert torch.equal(loaded["vec"]["clip_l"], emb.vectors[0])
    assert torch.equal(loaded["vec"]["clip_g"], emb.vectors[1])


def test_kohya_and_diffusers_keys_and_shapes(tmp_path: Path) -> None:
    emb = make((768,), 2)
    writers.write(emb, "kohya", tmp_path / "k.safetensors")
    kohya = load_file(str(tmp_path / "k.safetensors"))
    assert {k: tuple(v.shape) for k, v in kohya.items()} == {"emb_params": (2, 768)}

    sdxl = make((768, 1280), 3)
    writers.write(sdxl, "kohya", tmp_path / "kxl.safetensors")
    kohya_xl = load_file(str(tmp_path / "kxl.safetensors"))
    assert {k: tuple(v.shape) for k, v in kohya_xl.items()} == {"clip_l": (3, 768), "clip_g": (3, 1280)}

    writers.write(emb, "diffusers", tmp_path / "d.safetensors")
    diffusers = load_file(str(tmp_path / "d.safetensors"))
    assert {k: tuple(v.shape) for k, v in diffusers.items()} == {TOKEN: (2, 768)}

    writers.write(emb, "diffusers", tmp_path / "d.bin")
    diffusers_bin = torch.load(tmp_path / "d.bin", weights_only=True)
    assert {k: tuple(v.shape) for k, v in diffusers_bin.items()} == {TOKEN: (2, 768)}

    written = writers.write(sdxl, "diffusers", tmp_path / "dxl")
    assert [p.name for p in written] == ["learned_embeds.safetensors", "learned_embeds_2.safetensors"]
    first, second = (load_file(str(p)) for p in written)
    assert {k: tuple(v.shape) for k, v in first.items()} == {TOKEN: (3, 768)}
    assert {k: tuple(v.shape) for k, v in second.items()} == {TOKEN: (3, 1280)}


def test_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    for fmt in writers.EXPORT_FORMATS:
        writers.write(make((768,), 1), fmt, out_path(tmp_path / fmt, fmt, make((768,), 1)))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_write_errors(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="unknown export format 'sdxl'"):
        writers.write(make((768,), 1), "sdxl", tmp_path / "x.safetensors")
    three = Embedding(TOKEN, (torch.zeros(1, 8), torch.zeros(1, 8), torch.zeros(1, 8)))
    with pytest.raises(FormatError, match="3 text encoders"):
        writers.write(three, "kohya", tmp_path / "x.safetensors")
    with pytest.raises(FormatError, match=r"only as safetensors"):
        writers.write(make((768, 1280), 1), "a1111", tmp_path / "x.pt")
    with pytest.raises(FormatError, match="folder"):
        writers.write(make((768, 1280), 1), "diffusers", tmp_path / "x.safetensors")
    with pytest.raises(FormatError, match="kind"):
        writers.write(make((768,), 1), "concepts-library", tmp_path / "c", kind="person")


# Inputs that must be refused


class RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_that_runs_code_is_refused(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "learned_embeds.bin"
    payload = {"<evil>": RunsCode(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))

    with pytest.raises(FormatError, match="refused") as info:
        detect.read(path)

    assert str(path) in info.value.message
    assert "never executes" in info.value.message
    assert info.value.hint
    assert not marker.exists()


def test_bad_files_are_format_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    good = tmp_path / "good.safetensors"
    save_file({TOKEN: torch.randn(2, 768)}, str(good))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    random_bytes = tmp_path / "random.bin"
    random_bytes.write_bytes(
        torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1))
        .to(torch.uint8)
        .numpy()
        .tobytes()
    )
    cut_pickle = tmp_path / "cut.pt"
    torch.save({TOKEN: torch.randn(2, 768)}, tmp_path / "whole.pt")
    cut_pickle.write_bytes((tmp_path / "whole.pt").read_bytes()[:200])
    bare = tmp_path / "bare.pt"
    torch.save(torch.randn(768), bare)

    cases = {
        empty: "empty",
        truncated: "truncated or corrupt safetensors",
        random_bytes: "neither a safetensors file nor a PyTorch pickle",
        cut_pickle: "truncated or corrupt PyTorch file",
        bare: "holds a Tensor, not a dict",
    }
    for path, words in cases.items():
        with pytest.raises(FormatError, match=words) as info:
            detect.read(path)
        assert str(path) in info.value.message
        assert info.value.hint


def test_bad_contents_are_format_errors(tmp_path: Path) -> None:
    cases = {
        "int.safetensors": ({TOKEN: torch.arange(768)}, "dtype torch.int64"),
        "nan.safetensors": ({TOKEN: torch.full((2, 768), float("nan"))}, "NaN"),
        "unknown.pt": (
            {"weight": torch.zeros(2), "config": {"lr": 1}},
            "holds keys weight, config; not an embedding format",
        ),
        "several.safetensors": (
            {"<a>": torch.zeros(768), "<b>": torch.zeros(768), "<c>": torch.zeros(768)},
            "3 embeddings for different tokens",
        ),
        "half-sdxl.safetensors": ({"clip_l": torch.zeros(1, 768)}, "no clip_g"),
        "counts.safetensors": (
            {"clip_l": torch.zeros(1, 768), "clip_g": torch.zeros(2, 1280)},
            "different vector counts",
        ),
        "too-many.safetensors": ({"emb_params": torch.zeros(76, 768)}, "76 vectors"),
        "two-terms.pt": (
            {"string_to_param": {"*": torch.zeros(1, 768), "x": torch.zeros(1, 768)}},
            "2 terms",
        ),
    }
    for name, (data, words) in cases.items():
        path = tmp_path / name
        if name.endswith(".safetensors"):
            save_file(data, str(path))
        else:
            torch.save(data, path)
        with pytest.raises(FormatError, match=words) as info:
            detect.read(path)
        assert str(path) in info.value.message, name


# Accepted variations


def test_half_precision_is_read_as_float32(tmp_path: Path) -> None:
    for dtype in (torch.float16, torch.bfloat16):
        source = torch.randn(2, 768).to(dtype)
        path = tmp_path / f"{dtype}.safetensors"
        save_file({"emb_params": source}, str(path))
        vectors = detect.read(path).embedding.vectors[0]
        assert vectors.dtype == torch.float32
        assert torch.equal(vectors, source.float())


def test_token_override_and_a1111_stem(tmp_path: Path) -> None:
    path = tmp_path / "file-stem.pt"
    torch.save({"string_to_param": {"*": torch.randn(1, 768)}, "name": "stored-name"}, path)
    assert detect.read(path).embedding.token == "file-stem"
    assert detect.read(path, token="<mine>").embedding.token == "<mine>"

    spaced = tmp_path / "my style.pt"
    torch.save({"string_to_param": {"*": torch.randn(1, 768)}}, spaced)
    with pytest.raises(FormatError, match="whitespace") as info:
        detect.read(spaced)
    assert "--token" in (info.value.hint or "")
    assert detect.read(spaced, token="<my-style>").embedding.token == "<my-style>"


def test_split_diffusers_form_is_merged_in_index_order(tmp_path: Path) -> None:
    rows = torch.randn(3, 768)
    # Stored out of order, and with one row as [1, d], as some converters write them. (A pickle keeps the
    # order it was given; safetensors sorts its keys.)
    split = {"<t>_2": rows[2].clone(), "<t>": rows[0:1].clone(), "<t>_1": rows[1].clone()}
    torch.save(split, tmp_path / "split.bin")
    save_file(split, str(tmp_path / "split.safetensors"))
    for name in ("split.bin", "split.safetensors"):
        imported = detect.read(tmp_path / name)
        assert imported.format == "diffusers"
        assert imported.embedding.token == "<t>"
        assert torch.equal(imported.embedding.vectors[0], rows)


def test_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "kept.safetensors"
    before = make((768,), 1)
    writers.write(before, "kohya", out)
    real_write = Path.write_bytes

    def disk_full(self: Path, data: bytes) -> int:
        real_write(self, data[:7])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(OSError):
        writers.write(make((768,), 1, seed=1), "kohya", out)

    assert detect.read(out, token=TOKEN).embedding.equal(before)
    assert [p.name for p in tmp_path.iterdir()] == ["kept.safetensors"]


def test_format_is_detected_by_content_not_suffix(tmp_path: Path) -> None:
    emb = make((768,), 2)
    looks_like_pickle = tmp_path / "really-safetensors.bin"
    save_file({"emb_params": emb.vectors[0]}, str(looks_like_pickle))
    assert detect.read(looks_like_pickle).format == "kohya"
    assert detect.read(looks_like_pickle).embedding.vectors[0].equal(emb.vectors[0])

    looks_like_safetensors = tmp_path / "really-pickle.safetensors"
    torch.save({TOKEN: emb.vectors[0]}, looks_like_safetensors)
    assert detect.read(looks_like_safetensors).embedding.equal(emb)


def test_safetensors_metadata_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "kohya-made.safetensors"
    save_file({"emb_params": torch.randn(1, 768)}, str(path), metadata={"ss_steps": "1000"})
    assert detect.read(path).meta["safetensors_metadata"] == {"ss_steps": "1000"}
