"""``tinv import DIR``'s core: a UI's embeddings folder of mixed formats, bad files reported and skipped, nothing
half-written, and a second run that adds nothing."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from tinv_cli.formats.layout import KIND_FILE, SAFE_NAME, SECOND_NAME, TOKEN_FILE
from tinv_cli.registry.folder_import import (
    FAILED,
    IMPORTED,
    SKIPPED,
    UNCHANGED,
    import_folder,
    is_embedding_name,
    is_one_concept,
    reason,
)
from tinv_cli.registry.store import Registry

SD1, SDXL = 768, (768, 1280)


def _vec(seed: int, rows: int = 1, width: int = SD1) -> torch.Tensor:
    return torch.randn(rows, width, generator=torch.Generator().manual_seed(seed))


class RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


def ui_folder(root: Path) -> dict[str, list[str]]:
    """A UI embeddings folder: 50 good concepts in five formats and subfolders, 3 broken files, 7 files that are
    not embeddings. Returns the expected entry names, broken paths and skipped paths (relative)."""
    good: list[str] = []
    seed = 0

    def next_seed() -> int:
        nonlocal seed
        seed += 1
        return seed

    for i in range(12):  # A1111 .pt, some in a subfolder
        sub = root / ("a1111" if i % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        stem = f"a1111-{i}"
        torch.save(
            {
                "string_to_token": {"*": 265},
                "string_to_param": {"*": _vec(next_seed(), 2)},
                "name": stem,
                "step": 5,
            },
            sub / f"{stem}.pt",
        )
        good.append(stem)
    for i in range(12):  # kohya emb_params
        path = root / "kohya" / "deep" / f"kohya-{i}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"emb_params": _vec(next_seed(), 3)}, str(path))
        good.append(f"kohya-{i}")
    for i in range(12):  # diffusers {token: tensor}, .bin and .safetensors
        path = root / "diffusers" / f"diff-{i}{'.bin' if i % 2 else '.safetensors'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {f"<tok-{i}>": _vec(next_seed())}
        torch.save(data, path) if i % 2 else save_file(data, str(path))
        good.append(f"diff-{i}")
    for i in range(12):  # SDXL clip_l / clip_g
        path = root / "sdxl" / f"xl-{i}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(
            {"clip_l": _vec(next_seed(), 2, SDXL[0]), "clip_g": _vec(next_seed(), 2, SDXL[1])}, str(path)
        )
        good.append(f"xl-{i}")
    # A concepts-library folder: one concept, named by its token file.
    concept = root / "library" / "cat-toy"
    concept.mkdir(parents=True)
    torch.save({"<cat-toy>": _vec(next_seed())[0]}, concept / "learned_embeds.bin")
    (concept / TOKEN_FILE).write_text("<cat-toy>")
    (concept / KIND_FILE).write_text("object")
    good.append("cat-toy")
    # The diffusers SDXL example's pair: one concept from two files.
    pair = root / "pair"
    pair.mkdir()
    save_file({"<pair-xl>": _vec(next_seed(), 1, SDXL[0])}, str(pair / SAFE_NAME))
    save_file({"<pair-xl>": _vec(next_seed(), 1, SDXL[1])}, str(pair / SECOND_NAME))
    good.append("pair-xl")
    assert len(good) == 50

    broken = root / "broken"
    broken.mkdir()
    save_file({"emb_params": _vec(next_seed())}, str(broken / "whole.safetensors"))
    data = (broken / "whole.safetensors").read_bytes()
    (broken / "whole.safetensors").unlink()
    (broken / "truncated.safetensors").write_bytes(data[:-100])
    (broken / "runs-code.pt").write_bytes(pickle.dumps({"<evil>": RunsCode()}, protocol=2))
    save_file({}, str(broken / "empty.safetensors"))

    skipped = [
        "notes.txt",
        "a1111/config.json",
        "kohya/deep/settings.yaml",
        ".hidden.pt",
        "a1111-1.preview.png",
    ]
    for rel in skipped:
        (root / rel).write_text("not an embedding")
    Image.new("RGB", (4, 4)).save(root / "a1111" / "a1111-3.preview.png")
    skipped.append("a1111/a1111-3.preview.png")
    (root / "pair" / "README.txt").write_text("the diffusers pair")
    skipped.append("pair/README.txt")
    (root / ".git").mkdir()  # a hidden folder is not walked at all
    (root / ".git" / "x.pt").write_bytes(b"junk")
    return {
        "good": good,
        "broken": ["broken/empty.safetensors", "broken/runs-code.pt", "broken/truncated.safetensors"],
        "skipped": skipped,
    }


def test_a_ui_folder_imports_the_good_files_and_reports_the_bad_ones(tmp_path: Path) -> None:
    folder = tmp_path / "embeddings"
    expected = ui_folder(folder)
    registry = Registry(tmp_path / "home")
    heard: list[str] = []

    report = import_folder(registry, folder, on_result=lambda r: heard.append(r.status))

    assert report.count(IMPORTED) == 50
    assert report.count(FAILED) == 3
    assert report.count(SKIPPED) == 7
    assert report.failed
    assert heard == [r.status for r in report.results]
    assert sorted(e.name for e in registry.list()) == sorted(expected["good"])
    failed = sorted((r for r in report.results if r.status == FAILED), key=lambda r: str(r.path))
    assert [r.path.relative_to(folder).as_posix() for r in failed] == expected["broken"]
    for result in failed:
        text = reason(result)
        assert text and "\n" not in text and not text.startswith(str(folder))
    assert "empty" in reason(failed[0]) and "refused" in reason(failed[1])
    skipped = sorted(r.path.relative_to(folder).as_posix() for r in report.results if r.status == SKIPPED)
    assert skipped == sorted(expected["skipped"])
    # The pair is one concept of two encoders read from both files; the library folder keeps its token.
    pair = registry.get("pair-xl")
    assert pair.widths == SDXL and pair.token == "<pair-xl>"
    (pair_result,) = [r for r in report.results if r.entry is not None and r.entry.name == "pair-xl"]
    assert {p.name for p in pair_result.files} == {SAFE_NAME, SECOND_NAME}
    assert registry.get("cat-toy").token == "<cat-toy>"
    # Names come from the file stem (the UI's trigger word), the token stays the file's.
    assert registry.get("diff-3").token == "<tok-3>"
    assert registry.get("xl-0").widths == SDXL and registry.get("kohya-0").num_vectors == 3
    # Every add was atomic: no staging folder is left.
    assert not registry.tmp.exists() or not any(
        p for p in registry.tmp.iterdir() if not p.name.endswith(".lock")
    )

    again = import_folder(registry, folder)
    assert again.count(IMPORTED) == 0
    assert again.count(UNCHANGED) == 50
    assert all(len(registry.versions(name)) == 1 for name in expected["good"])


def test_a_changed_file_becomes_the_next_version_and_same_stems_do_not_take_turns(tmp_path: Path) -> None:
    folder = tmp_path / "embeddings"
    (folder / "one").mkdir(parents=True)
    (folder / "two").mkdir()
    save_file({"emb_params": _vec(1)}, str(folder / "one" / "style.safetensors"))
    save_file({"emb_params": _vec(2)}, str(folder / "two" / "style.safetensors"))
    registry = Registry(tmp_path / "home")

    first = import_folder(registry, folder)
    assert [r.entry.ref for r in first.results if r.entry] == ["style@1", "style@2"]
    assert import_folder(registry, folder).count(UNCHANGED) == 2

    save_file({"emb_params": _vec(3)}, str(folder / "two" / "style.safetensors"))
    third = import_folder(registry, folder)
    assert [(r.status, r.entry.ref if r.entry else None) for r in third.results] == [
        (UNCHANGED, "style@1"),
        (IMPORTED, "style@3"),
    ]


def test_names_and_folders(tmp_path: Path) -> None:
    assert is_embedding_name(Path("x/bad-hands.pt")) and is_embedding_name(Path("x/y.SAFETENSORS"))
    assert is_embedding_name(Path("x/card.png"))  # an image embedding, or a failure with its reason
    assert not is_embedding_name(Path("x/bad-hands.preview.png"))
    assert not is_embedding_name(Path("x/.bad-hands.pt")) and not is_embedding_name(Path("x/notes.txt"))

    concept = tmp_path / "cat-toy"
    concept.mkdir()
    torch.save({"<cat-toy>": _vec(0)[0]}, concept / "learned_embeds.bin")
    (concept / TOKEN_FILE).write_text("<cat-toy>")
    (concept / "concept_images").mkdir()
    assert is_one_concept(concept)
    (concept / "other.pt").write_bytes(b"")
    assert not is_one_concept(concept)
    assert not is_one_concept(tmp_path)


def test_a_png_without_embedding_data_fails_with_its_reason(tmp_path: Path) -> None:
    folder = tmp_path / "embeddings"
    folder.mkdir()
    Image.new("RGB", (4, 4)).save(folder / "picture.png")
    Image.new("RGB", (4, 4)).save(folder / "picture.preview.png")

    report = import_folder(Registry(tmp_path / "home"), folder)

    assert [(r.path.name, r.status) for r in report.results] == [
        ("picture.png", FAILED),
        ("picture.preview.png", SKIPPED),
    ]
    assert reason(report.results[0])


def test_an_unknown_kind_is_refused_before_any_file(tmp_path: Path) -> None:
    from tinv_cli.errors import RegistryError

    with pytest.raises(RegistryError, match="person"):
        import_folder(Registry(tmp_path / "home"), tmp_path, kind="person")


def test_a_folder_import_records_negative_embeddings_as_a_single_import_does(tmp_path: Path) -> None:
    folder = tmp_path / "embeddings"
    folder.mkdir()
    negative = {"modelspec.sai_model_spec": "1.0.1", "modelspec.is_negative_embedding": "true"}
    save_file({"emb_params": _vec(1)}, str(folder / "bad-hands.safetensors"), metadata=negative)
    save_file({"emb_params": _vec(2)}, str(folder / "cat-toy.safetensors"))
    registry = Registry(tmp_path / "home")
    import_folder(registry, folder)
    assert {e.name: e.kind for e in registry.list()} == {"bad-hands": "negative", "cat-toy": "object"}
