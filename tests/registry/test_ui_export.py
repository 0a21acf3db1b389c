"""``tinv export --all --to DIR --for UI``'s core: files the UIs (and diffusers) load, a manifest that makes a
second run write nothing, and a folder shared with the user's own files that tinv never touches."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tinv_cli.embedding import Embedding, token_names
from tinv_cli.registry import ui_export
from tinv_cli.registry.store import Registry
from tinv_cli.registry.ui_export import (
    EDITED,
    LEFT,
    MANIFEST,
    NAME_CLASH,
    REMOVED,
    UP_TO_DATE,
    UPDATED,
    USER_FILE,
    WRITTEN,
    export_to_ui,
    read_manifest,
    ui_named,
)

SD1, SDXL = (768,), (768, 1280)
IMPORTED = {"type": "imported"}


def make(token: str, widths: tuple[int, ...], seed: int = 0, vectors: int = 2) -> Embedding:
    gen = torch.Generator().manual_seed(seed)
    return Embedding(token, tuple(torch.randn(vectors, w, generator=gen) for w in widths))


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "home")


def stats(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file, the manifest included: a run that writes nothing changes none."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_the_files_load_in_diffusers_with_the_exact_vectors(tmp_path: Path, registry: Registry) -> None:
    from tests.tiny import build_tiny_pipeline, build_tiny_sdxl_pipeline

    sd = make("<cat-toy>", SD1, seed=1)
    xl = make("<xl-style>", SDXL, seed=2)
    registry.add("cat-toy", sd, source=IMPORTED)
    registry.add("xl-style", xl, source=IMPORTED)
    folder = tmp_path / "embeddings"

    report = export_to_ui(registry, folder, ui_named("a1111"))

    assert [(o.file, o.action) for o in report.outcomes] == [
        ("cat-toy.safetensors", WRITTEN),
        ("xl-style.safetensors", WRITTEN),
    ]
    # The UIs' layout: one emb_params tensor for SD 1.x, clip_l and clip_g for SDXL; the stem is the trigger.
    assert set(load_file(str(folder / "cat-toy.safetensors"))) == {"emb_params"}
    assert set(load_file(str(folder / "xl-style.safetensors"))) == {"clip_l", "clip_g"}
    # The hash tinv shows (and writes into images' TI hashes) is the hash of the very file the UI loads.
    import hashlib

    from tinv_cli.registry.transfer import a1111_hash

    for entry in registry.list():
        written = (folder / f"{entry.name}.safetensors").read_bytes()
        assert a1111_hash(entry) == hashlib.sha256(written).hexdigest()[:12]

    pipe = build_tiny_pipeline(SD1[0])
    pipe.load_textual_inversion(str(folder / "cat-toy.safetensors"), token="cat-toy")
    ids = pipe.tokenizer.convert_tokens_to_ids(token_names("cat-toy", 2))
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[ids], sd.vectors[0])

    # diffusers' documented way of loading an SDXL embedding file: each key into its own encoder.
    xl_pipe = build_tiny_sdxl_pipeline(SDXL)
    state = load_file(str(folder / "xl-style.safetensors"))
    xl_pipe.load_textual_inversion(
        state["clip_l"], token="xl-style", text_encoder=xl_pipe.text_encoder, tokenizer=xl_pipe.tokenizer
    )
    xl_pipe.load_textual_inversion(
        state["clip_g"], token="xl-style", text_encoder=xl_pipe.text_encoder_2, tokenizer=xl_pipe.tokenizer_2
    )
    for vectors, tokenizer, encoder in zip(
        xl.vectors,
        (xl_pipe.tokenizer, xl_pipe.tokenizer_2),
        (xl_pipe.text_encoder, xl_pipe.text_encoder_2),
        strict=True,
    ):
        ids = tokenizer.convert_tokens_to_ids(token_names("xl-style", 2))
        assert torch.equal(encoder.get_input_embeddings().weight[ids], vectors)


def test_a_second_run_writes_nothing_and_a_new_version_is_updated(tmp_path: Path, registry: Registry) -> None:
    for i in range(3):
        registry.add(f"concept-{i}", make(f"<concept-{i}>", SD1, seed=i), source=IMPORTED)
    folder = tmp_path / "embeddings"
    export_to_ui(registry, folder, ui_named("comfyui"))
    before = stats(folder)
    manifest = (folder / MANIFEST).read_bytes()

    again = export_to_ui(registry, folder, ui_named("comfyui"))

    assert again.count(UP_TO_DATE) == 3 and len(again.outcomes) == 3
    assert stats(folder) == before
    assert (folder / MANIFEST).read_bytes() == manifest
    # --force rewrites only what would differ: the same entries are the same bytes.
    export_to_ui(registry, folder, ui_named("comfyui"), force=True)
    assert stats(folder) == before

    registry.add("concept-1", make("<concept-1>", SD1, seed=9), source=IMPORTED)
    third = export_to_ui(registry, folder, ui_named("comfyui"))
    assert [(o.file, o.action) for o in third.outcomes if o.action != UP_TO_DATE] == [
        ("concept-1.safetensors", UPDATED)
    ]
    record = read_manifest(folder)["concept-1.safetensors"]
    assert record["entry"] == "concept-1" and record["version"] == 2 and "previous" not in record
    after = stats(folder)
    assert after["concept-0.safetensors"] == before["concept-0.safetensors"]
    assert after["concept-1.safetensors"] != before["concept-1.safetensors"]


def test_files_of_removed_entries_go_unless_the_user_changed_them(tmp_path: Path, registry: Registry) -> None:
    for name in ("keep", "gone", "edited"):
        registry.add(name, make(f"<{name}>", SD1), source=IMPORTED)
    folder = tmp_path / "embeddings"
    export_to_ui(registry, folder, ui_named("a1111"))
    (folder / "edited.safetensors").write_bytes(b"the user's own bytes now")
    registry.remove("gone")
    registry.remove("edited")

    report = export_to_ui(registry, folder, ui_named("a1111"))

    assert {(o.file, o.action) for o in report.outcomes} == {
        ("edited.safetensors", LEFT),
        ("gone.safetensors", REMOVED),
        ("keep.safetensors", UP_TO_DATE),
    }
    assert not report.conflicts
    assert not (folder / "gone.safetensors").exists()
    assert (folder / "edited.safetensors").read_bytes() == b"the user's own bytes now"
    assert set(read_manifest(folder)) == {"keep.safetensors"}
    # From now on the edited file is the user's: an entry of that name is refused, the file kept.
    registry.add("edited", make("<edited>", SD1, seed=3), source=IMPORTED)
    (clash,) = [
        o for o in export_to_ui(registry, folder, ui_named("a1111")).outcomes if o.file.startswith("edited")
    ]
    assert clash.action == USER_FILE
    assert (folder / "edited.safetensors").read_bytes() == b"the user's own bytes now"


def test_user_files_edited_files_and_case_clashes_are_reported_not_written(
    tmp_path: Path, registry: Registry
) -> None:
    folder = tmp_path / "embeddings"
    (folder / "mine").mkdir(parents=True)
    users = folder / "mine" / "Bad-Hands.pt"  # A1111 and ComfyUI find it by its stem, in any subfolder
    users.write_bytes(b"user data")
    registry.add("bad-hands", make("<bad-hands>", SD1), source=IMPORTED)
    registry.add("Cat", make("<Cat>", SD1, seed=1), source=IMPORTED)
    registry.add("cat", make("<cat>", SD1, seed=2), source=IMPORTED)
    registry.add("tuned", make("<tuned>", SD1, seed=3), source=IMPORTED)
    export_to_ui(registry, folder, ui_named("invokeai"))
    (folder / "tuned.safetensors").write_bytes(b"edited in place")
    registry.add("tuned", make("<tuned>", SD1, seed=4), source=IMPORTED)

    report = export_to_ui(registry, folder, ui_named("invokeai"))

    actions = {(o.file, o.action) for o in report.outcomes}
    assert actions == {
        ("bad-hands.safetensors", USER_FILE),
        ("Cat.safetensors", NAME_CLASH),
        ("cat.safetensors", NAME_CLASH),
        ("tuned.safetensors", EDITED),
    }
    assert len(report.conflicts) == 4
    assert users.read_bytes() == b"user data"
    assert (folder / "tuned.safetensors").read_bytes() == b"edited in place"
    assert not (folder / "Cat.safetensors").exists() and not (folder / "cat.safetensors").exists()
    assert not (folder / "bad-hands.safetensors").exists()
    message = next(o.message for o in report.outcomes if o.action == USER_FILE)
    assert message is not None and "mine/Bad-Hands.pt" in message


def test_a_crash_after_the_manifest_leaves_files_the_next_run_knows(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.add("cat-toy", make("<cat-toy>", SD1), source=IMPORTED)
    folder = tmp_path / "embeddings"
    export_to_ui(registry, folder, ui_named("a1111"))
    registry.add("cat-toy", make("<cat-toy>", SD1, seed=5), source=IMPORTED)
    real = ui_export.write_bytes

    def crash(*args: object, **kwargs: object) -> Path:
        raise KeyboardInterrupt  # killed between the manifest and the file

    monkeypatch.setattr(ui_export, "write_bytes", crash)
    with pytest.raises(KeyboardInterrupt):
        export_to_ui(registry, folder, ui_named("a1111"))
    monkeypatch.setattr(ui_export, "write_bytes", real)
    record = read_manifest(folder)["cat-toy.safetensors"]
    assert record["version"] == 2 and len(record["previous"]) == 1  # the old bytes, still there, are tinv's

    report = export_to_ui(registry, folder, ui_named("a1111"))

    assert [(o.file, o.action) for o in report.outcomes] == [("cat-toy.safetensors", UPDATED)]
    assert "previous" not in read_manifest(folder)["cat-toy.safetensors"]


def test_an_unreadable_manifest_stops_the_export(tmp_path: Path, registry: Registry) -> None:
    from tinv_cli.errors import RegistryError

    folder = tmp_path / "embeddings"
    folder.mkdir()
    (folder / MANIFEST).write_text("{not json")
    registry.add("cat-toy", make("<cat-toy>", SD1), source=IMPORTED)
    with pytest.raises(RegistryError, match="cannot tell its files from yours"):
        export_to_ui(registry, folder, ui_named("a1111"))
    assert sorted(os.listdir(folder)) == [MANIFEST]
    with pytest.raises(RegistryError, match="unknown UI"):
        ui_named("photoshop")
    assert json.loads(json.dumps([u.id for u in ui_export.UIS.values()])) == [
        "a1111",
        "forge",
        "comfyui",
        "invokeai",
    ]
