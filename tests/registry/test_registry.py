"""The local registry (versions, atomic add and remove, fast listing) and the model card it writes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from tinv_cli.embedding import Embedding
from tinv_cli.errors import NotFoundError, RegistryError
from tinv_cli.formats import writers
from tinv_cli.names import NAME_RE, name_from_token
from tinv_cli.registry import modelcard
from tinv_cli.registry.modelcard import model_card
from tinv_cli.registry.store import Registry, parse_ref

TRAINED = {"type": "trained"}


def make_embedding(
    token: str = "<cat-toy>", seed: int = 0, vectors: int = 1, widths: tuple[int, ...] = (768,)
) -> Embedding:
    gen = torch.Generator().manual_seed(seed)
    return Embedding(token, tuple(torch.randn(vectors, w, generator=gen) for w in widths))


def make_images(folder: Path, count: int = 2) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i}.png"
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(path)
        paths.append(path)
    return paths


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes, so a test can prove nothing changed."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "home")


# Names and refs


def test_parse_ref() -> None:
    assert parse_ref("cat-toy") == ("cat-toy", None)
    assert parse_ref("cat-toy@2") == ("cat-toy", 2)
    assert parse_ref("v1.5_style@10") == ("v1.5_style", 10)
    for bad in (
        "",
        "@2",
        "cat-toy@",
        "cat-toy@0",
        "cat-toy@x",
        "cat-toy@-1",
        "-cat",
        "../etc",
        "a b",
        "x" * 97,
    ):
        with pytest.raises(RegistryError) as info:
            parse_ref(bad)
        assert info.value.hint


def test_name_re_rejects_trailing_newline() -> None:
    assert NAME_RE.match("cat-toy")
    assert not NAME_RE.match("cat-toy\n")


def test_name_from_token() -> None:
    assert name_from_token("<cat-toy>") == "cat-toy"
    assert name_from_token("<my cat/toy>") == "my-cat-toy"
    assert name_from_token("sks") == "sks"
    assert name_from_token("<_x_>") == "x_"
    assert name_from_token("<>") == "concept"
    assert NAME_RE.match(name_from_token("<" + "a" * 200 + ">"))


def test_registry_defaults_to_tinv_home(isolated_state: Path) -> None:
    reg = Registry()
    assert reg.home_paths() == {
        "home": isolated_state / "tinv",
        "registry": isolated_state / "tinv" / "registry",
        "tmp": isolated_state / "tinv" / "tmp",
    }
    assert reg.list() == []


# Adding, reading, versions


def test_add_writes_a_complete_entry(registry: Registry, tmp_path: Path) -> None:
    emb = make_embedding()
    images = make_images(tmp_path / "imgs")
    extra = tmp_path / "val.png"
    shutil.copyfile(images[0], extra)
    entry = registry.add(
        "cat-toy",
        emb,
        source=TRAINED,
        images=images,
        base_model="stable-diffusion-v1-5/stable-diffusion-v1-5",
        training={"seed": 0, "steps": 10},
        extra_files={"validation.png": extra},
    )
    assert entry.ref == "cat-toy@1"
    assert entry.path == registry.root / "cat-toy" / "1"
    for name in (
        "learned_embeds.safetensors",
        "token_identifier.txt",
        "README.md",
        "tinv.json",
        "validation.png",
    ):
        assert (entry.path / name).is_file(), name
    assert sorted(p.name for p in (entry.path / "concept_images").iterdir()) == ["0.png", "1.png"]

    info = json.loads((entry.path / "tinv.json").read_text())
    assert info == entry.info
    assert info["schema"] == 1 and info["name"] == "cat-toy" and info["version"] == 1
    assert (entry.token, entry.kind, entry.num_vectors, entry.widths, entry.family) == (
        "<cat-toy>",
        "object",
        1,
        (768,),
        "sd1",
    )
    assert entry.source_type == "trained" and info["images"] == 2 and info["training"]["steps"] == 10
    assert entry.base_model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry.created or "")
    assert entry.sha256 == hashlib.sha256(entry.embedding_file().read_bytes()).hexdigest()
    assert entry.embedding().equal(emb)
    assert "concept_images/0.png" in (entry.path / "README.md").read_text()

    assert registry.list() == [entry]
    assert registry.get("cat-toy") == entry
    assert registry.get("cat-toy@1") == entry
    assert registry.get("<cat-toy>") == entry
    assert registry.find_token("<cat-toy>") == entry
    assert registry.find_token("<dog>") is None
    assert list((registry.home / "tmp").iterdir()) == []


def test_readding_a_name_makes_a_new_version(registry: Registry) -> None:
    first = make_embedding(seed=1)
    v1 = registry.add("cat-toy", first, source=TRAINED)
    v1_bytes = snapshot(v1.path)
    second = make_embedding(seed=2, vectors=3)
    v2 = registry.add("cat-toy", second, source={"type": "imported", "format": "a1111"})

    assert v2.ref == "cat-toy@2"
    assert [e.ref for e in registry.versions("cat-toy")] == ["cat-toy@1", "cat-toy@2"]
    assert registry.list() == [v2]
    assert registry.get("cat-toy") == v2
    old = registry.get("cat-toy@1")
    assert snapshot(old.path) == v1_bytes
    assert old.embedding().equal(first)
    assert registry.get("cat-toy").embedding().equal(second)
    assert v1.sha256 != v2.sha256


def test_list_is_sorted_and_shows_current_versions(registry: Registry) -> None:
    registry.add("zebra", make_embedding("<zebra>"), source=TRAINED)
    registry.add("apple", make_embedding("<apple>"), source=TRAINED)
    registry.add("zebra", make_embedding("<zebra>", seed=3), source=TRAINED)
    assert [e.ref for e in registry.list()] == ["apple@1", "zebra@2"]
    assert registry.versions("nothing") == []


def test_sdxl_entry(registry: Registry) -> None:
    emb = make_embedding("<xl>", vectors=2, widths=(768, 1280))
    entry = registry.add("xl", emb, kind="style", source=TRAINED)
    assert (entry.widths, entry.family, entry.kind) == ((768, 1280), "sdxl", "style")
    assert entry.embedding().equal(emb)
    assert "- stable-diffusion-xl" in (entry.path / "README.md").read_text()


def test_get_typo_suggests_the_name(registry: Registry) -> None:
    registry.add("cat-toy", make_embedding(), source=TRAINED)
    registry.add("dog", make_embedding("<sks-dog>"), source=TRAINED)
    with pytest.raises(NotFoundError) as info:
        registry.get("cat-tyo")
    assert "did you mean cat-toy" in info.value.message
    assert info.value.hint and "tinv list" in info.value.hint
    # Close to a token, not a name: the suggestion is still the name to type.
    with pytest.raises(NotFoundError) as info:
        registry.get("<sks-dgo>")
    assert "did you mean dog" in info.value.message
    with pytest.raises(NotFoundError) as info:
        registry.get("qqqqqq")
    assert "did you mean" not in info.value.message


def test_get_missing_version_lists_the_versions(registry: Registry) -> None:
    registry.add("cat-toy", make_embedding(), source=TRAINED)
    with pytest.raises(NotFoundError) as info:
        registry.get("cat-toy@7")
    assert "versions: 1" in info.value.message
    assert info.value.hint and "cat-toy@1" in info.value.hint


def test_add_rejects_bad_arguments(registry: Registry, tmp_path: Path) -> None:
    emb = make_embedding()
    with pytest.raises(RegistryError):
        registry.add("../escape", emb, source=TRAINED)
    with pytest.raises(RegistryError):
        registry.add("cat", emb, kind="person", source=TRAINED)
    with pytest.raises(RegistryError):
        registry.add("cat", emb, source={"type": "stolen"})
    real = make_images(tmp_path / "imgs", 1)[0]
    for bad in ("tinv.json", "README.md", "concept_images/x.png", "../x.png", "/abs.png"):
        with pytest.raises(RegistryError):
            registry.add("cat", emb, source=TRAINED, extra_files={bad: real})
    with pytest.raises(NotFoundError) as info:
        registry.add("cat", emb, source=TRAINED, images=[real, tmp_path / "missing.png"])
    assert "missing.png" in info.value.message
    assert snapshot(registry.root) == {}


# Atomicity


def test_failed_add_leaves_the_registry_unchanged(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    registry.add("cat-toy", make_embedding(), source=TRAINED)
    before = snapshot(registry.root)
    real_write = writers.write_concepts_library

    def write_then_fail(embedding: Embedding, folder: Path, **kwargs: object) -> list[Path]:
        real_write(embedding, folder, **kwargs)
        assert (Path(folder) / "learned_embeds.safetensors").is_file()
        raise OSError("disk full")

    monkeypatch.setattr(writers, "write_concepts_library", write_then_fail)
    for name in ("cat-toy", "new-one"):
        with pytest.raises(OSError, match="disk full"):
            registry.add(name, make_embedding(seed=5), source=TRAINED, images=make_images(tmp_path / "i"))
    assert snapshot(registry.root) == before
    assert sorted(p.name for p in (registry.root).iterdir()) == ["cat-toy"]
    assert [e.ref for e in registry.versions("cat-toy")] == ["cat-toy@1"]
    assert list(registry.tmp.iterdir()) == []


def test_failure_after_files_are_written_leaves_nothing(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_card(*args: object, **kwargs: object) -> str:
        raise RuntimeError("card failed")

    monkeypatch.setattr(modelcard, "model_card", broken_card)
    with pytest.raises(RuntimeError, match="card failed"):
        registry.add("cat-toy", make_embedding(), source=TRAINED)
    assert registry.list() == []
    assert not (registry.root / "cat-toy" / "1").exists()
    assert list(registry.tmp.iterdir()) == []


def test_add_that_loses_a_race_takes_the_next_version(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A second process adds the same name after our add picked its number and before it renamed: our card
    # hook runs exactly in that window, so the competing add is a real one.
    real_card = modelcard.model_card
    competitor = make_embedding(seed=8)
    raced = []

    def card_with_competitor(info: dict[str, object], images: Sequence[str] = ()) -> str:
        if not raced:
            raced.append(True)
            Registry(registry.home).add("cat-toy", competitor, source=TRAINED)
        return real_card(info, images)

    monkeypatch.setattr(modelcard, "model_card", card_with_competitor)
    mine = make_embedding(seed=9)
    entry = registry.add("cat-toy", mine, source=TRAINED)
    assert entry.ref == "cat-toy@2"
    assert registry.get("cat-toy@1").embedding().equal(competitor)
    assert registry.get("cat-toy@2").embedding().equal(mine)
    assert json.loads((entry.path / "tinv.json").read_text())["version"] == 2


def test_stale_staging_folders_are_cleaned(registry: Registry) -> None:
    registry.tmp.mkdir(parents=True)
    old = registry.tmp / "add-crashed-abc"
    (old / "concept_images").mkdir(parents=True)
    (old / "learned_embeds.safetensors").write_bytes(b"partial")
    fresh = registry.tmp / "add-running-def"
    fresh.mkdir()
    two_hours_ago = time.time() - 7200
    for path in (old / "concept_images", old / "learned_embeds.safetensors", old):
        os.utime(path, (two_hours_ago, two_hours_ago))
    registry.add("cat-toy", make_embedding(), source=TRAINED)
    assert not old.exists()
    assert fresh.exists()


# Broken folders and speed


def test_list_skips_broken_folders(registry: Registry) -> None:
    good = registry.add("cat-toy", make_embedding(), source=TRAINED)
    root = registry.root
    (root / "cat-toy" / "2").mkdir()  # a newer version that never finished: no tinv.json
    (root / "garbage" / "1").mkdir(parents=True)
    (root / "garbage" / "1" / "tinv.json").write_text("{not json")
    (root / "wrong-shape" / "1").mkdir(parents=True)
    (root / "wrong-shape" / "1" / "tinv.json").write_text('["a list"]')
    (root / "no-versions").mkdir()
    (root / "cat-toy" / "notes").mkdir()
    (root / ".DS_Store").write_bytes(b"\0")
    (root / "stray-file.txt").write_text("x")

    assert registry.list() == [good]
    assert registry.get("cat-toy") == good
    assert [e.ref for e in registry.versions("cat-toy")] == ["cat-toy@1"]
    with pytest.raises(NotFoundError):
        registry.get("garbage")
    # The broken folder's number is not reused: nothing is ever written over.
    assert registry.add("cat-toy", make_embedding(seed=4), source=TRAINED).version == 3


def build_many(registry: Registry, count: int) -> None:
    template = registry.add("concept-0", make_embedding("<concept-0>"), source=TRAINED).path
    for i in range(1, count):
        target = registry.root / f"concept-{i}" / "1"
        shutil.copytree(template, target)
        info = json.loads((target / "tinv.json").read_text())
        info.update(name=f"concept-{i}", token=f"<concept-{i}>")
        (target / "tinv.json").write_text(json.dumps(info))


def test_listing_500_entries_is_fast_and_imports_no_torch(registry: Registry) -> None:
    build_many(registry, 500)
    start = time.perf_counter()
    entries = registry.list()
    elapsed = time.perf_counter() - start
    assert len(entries) == 500
    assert entries[0].name == "concept-0" and entries[-1].name == "concept-99"
    assert elapsed < 1.0, f"listing 500 entries took {elapsed:.2f}s"

    code = (
        "import sys; from pathlib import Path; from tinv_cli.registry.store import Registry; "
        f"n = len(Registry(Path({str(registry.home)!r})).list()); print(n, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["500", "False"]


# Updating and removing


def test_update_info_merges_and_keeps_other_keys(registry: Registry) -> None:
    entry = registry.add("cat-toy", make_embedding(), source=TRAINED, training={"steps": 5})
    before = dict(entry.info)
    card = (entry.path / "README.md").read_bytes()
    hub = {"repo": "me/cat-toy", "revision": "abc123", "url": "https://huggingface.co/me/cat-toy"}
    updated = registry.update_info(entry, hub=hub)
    on_disk = json.loads((entry.path / "tinv.json").read_text())
    assert on_disk == updated.info == {**before, "hub": hub}
    assert registry.get("cat-toy").info["hub"] == hub
    assert (entry.path / "README.md").read_bytes() == card
    assert not [p.name for p in entry.path.iterdir() if p.name.startswith(".")]  # no temp file left
    with pytest.raises(RegistryError):
        registry.update_info(entry, version=9)


def test_remove_one_version_then_the_name(registry: Registry) -> None:
    v1 = registry.add("cat-toy", make_embedding(seed=1), source=TRAINED)
    v2 = registry.add("cat-toy", make_embedding(seed=2), source=TRAINED)
    v3 = registry.add("cat-toy", make_embedding(seed=3), source=TRAINED)
    other = registry.add("dog", make_embedding("<dog>"), source=TRAINED)

    assert registry.remove("cat-toy@3") == [v3]
    assert registry.get("cat-toy") == v2
    assert registry.remove("cat-toy@1") == [v1]
    assert [e.ref for e in registry.versions("cat-toy")] == ["cat-toy@2"]
    with pytest.raises(NotFoundError, match="versions: 2"):
        registry.remove("cat-toy@1")

    v4 = registry.add("cat-toy", make_embedding(seed=4), source=TRAINED)
    assert registry.remove("cat-toy") == [v2, v4]
    assert not (registry.root / "cat-toy").exists()
    assert registry.list() == [other]
    assert list(registry.tmp.iterdir()) == []
    with pytest.raises(NotFoundError):
        registry.remove("cat-toy")

    assert registry.remove("dog@1") == [other]
    assert not (registry.root / "dog").exists()


def test_remove_interrupted_midway_never_leaves_half_an_entry(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = registry.add("cat-toy", make_embedding(seed=1), source=TRAINED)
    registry.add("cat-toy", make_embedding(seed=2), source=TRAINED)
    real_rmtree = shutil.rmtree

    def delete_one_file_then_die(path: str | Path, *args: object, **kwargs: object) -> None:
        next(p for p in Path(path).rglob("*") if p.is_file()).unlink()
        raise KeyboardInterrupt  # the process is killed half way through deleting

    monkeypatch.setattr(shutil, "rmtree", delete_one_file_then_die)
    with pytest.raises(KeyboardInterrupt):
        registry.remove("cat-toy@2")
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    assert not (registry.root / "cat-toy" / "2").exists()
    assert registry.list() == [v1]
    assert registry.get("cat-toy").embedding().equal(make_embedding(seed=1))


# The model card


def front_matter(card: str) -> list[str]:
    empty, matter, body = card.split("---\n", 2)
    assert empty == "" and body.strip()
    return matter.splitlines()


def test_model_card_front_matter() -> None:
    info = {
        "name": "cat-toy",
        "version": 1,
        "token": "<cat-toy>",
        "kind": "object",
        "vectors": 1,
        "widths": [768],
        "family": "sd1",
        "base_model": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "source": {"type": "trained"},
        "training": {"steps": 3000, "config": {"learning_rate": 5e-4}},
        "hub": {"repo": "sd-concepts-library/cat-toy"},
    }
    card = model_card(info, ["concept_images/0.png", "my cat.jpg"])
    assert front_matter(card) == [
        "license: mit",
        "base_model: stable-diffusion-v1-5/stable-diffusion-v1-5",
        "tags:",
        "- textual_inversion",
        "- stable-diffusion",
        "- tinv",
        "library_name: diffusers",
    ]
    assert "`<cat-toy>`" in card
    assert "tinv pull sd-concepts-library/cat-toy" in card
    assert "tinv sample 'a <cat-toy> on a beach'" in card
    assert 'pipe.load_textual_inversion("sd-concepts-library/cat-toy")' in card
    assert "| config.learning_rate | 0.0005 |" in card
    assert "![0](concept_images/0.png)" in card
    assert "](concept_images/my%20cat.jpg)" in card


def test_model_card_quotes_values_and_skips_local_base_models() -> None:
    info = {
        "token": "<xl>",
        "kind": "style",
        "vectors": 2,
        "widths": [768, 1280],
        "family": "sdxl",
        "base_model": "/home/me/models/sdxl",
        "license": "other: see #1",
    }
    lines = front_matter(model_card(info))
    assert lines[0] == 'license: "other: see #1"'
    assert not any(line.startswith("base_model:") for line in lines)
    assert "- stable-diffusion-xl" in lines
    card = model_card(info)
    assert 'state_dict["clip_g"]' in card and "text_encoder_2" in card
    assert "style of <xl>" in card
    assert "## Training settings" not in card and "## Images" not in card


def test_yaml_scalar() -> None:
    assert modelcard.yaml_scalar("mit") == "mit"
    assert modelcard.yaml_scalar("openrail++") == '"openrail++"'
    assert (
        modelcard.yaml_scalar("stabilityai/stable-diffusion-xl-base-1.0")
        == "stabilityai/stable-diffusion-xl-base-1.0"
    )
    for special in ("yes", "No", "null", "1.5", "10", "2024-01-01", "", "a: b", "#x", 'say "hi"'):
        assert modelcard.yaml_scalar(special) == json.dumps(special)


@pytest.mark.parametrize(
    "license_id", ["mit", "openrail++", "other: see #1", 'say "hi"', "1.0", "yes", "lïcense\\x"]
)
def test_model_card_front_matter_is_yaml_the_hub_reads(license_id: str) -> None:
    yaml = pytest.importorskip("yaml")
    from huggingface_hub import ModelCard

    info = {"token": "<t>", "vectors": 1, "widths": [768], "family": "sd1", "license": license_id}
    info["base_model"] = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    card = model_card(info)
    expected = {
        "license": license_id,
        "base_model": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "tags": ["textual_inversion", "stable-diffusion", "tinv"],
        "library_name": "diffusers",
    }
    assert yaml.safe_load("\n".join(front_matter(card))) == expected
    assert ModelCard(card).data.to_dict() == expected


# What a killed process leaves in tmp/

_KILLED_ADD = """
import sys, time
from pathlib import Path
from tinv_cli.formats import writers
from tinv_cli.registry.store import Registry
from tests.registry.test_registry import make_embedding

real = writers.write_concepts_library
def write_then_hang(embedding, folder, **kwargs):
    real(embedding, folder, **kwargs)
    (Path(folder) / "big.bin").write_bytes(bytes(1 << 20))  # what a big import has copied so far
    print("staged", flush=True)
    time.sleep(600)
writers.write_concepts_library = write_then_hang
Registry(Path(sys.argv[1])).add("cat-toy", make_embedding(), source={"type": "imported"})
"""


def _killed_add(home: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_ADD, str(home)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "staged\n"
    finally:
        process.kill()  # SIGKILL: no finally block, no cleanup of its own
        process.wait(timeout=60)


def test_a_killed_add_leaves_a_staging_folder_the_next_add_removes_at_once(registry: Registry) -> None:
    _killed_add(registry.home)
    left = sorted(p.name for p in registry.tmp.iterdir())
    assert len(left) == 2 and left[1] == left[0] + ".lock"  # the folder and its (now free) lock
    assert (registry.tmp / left[0] / "big.bin").is_file()
    entry = registry.add("dog", make_embedding(seed=3), source=TRAINED)  # seconds later, not an hour
    assert list(registry.tmp.iterdir()) == []
    assert [e.ref for e in registry.list()] == [entry.ref]


def test_the_sweep_spares_a_folder_a_live_process_is_building(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tinv_cli.atomic import Lock

    # Another process's add in progress: its folder and the lock it holds (held here by a second open file,
    # which the OS treats as another owner).
    registry.tmp.mkdir(parents=True)
    busy = registry.tmp / "add-dog-0123"
    busy.mkdir()
    (busy / "learned_embeds.safetensors").write_bytes(b"x")
    holder = Lock(registry.tmp / "add-dog-0123.lock")
    assert holder.acquire()
    # An old folder with no lock file (an older tinv's) still goes by age, a young one stays.
    old, young = registry.tmp / "add-old-1", registry.tmp / "add-young-1"
    old.mkdir(), young.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    try:
        registry.add("cat-toy", make_embedding(), source=TRAINED)
        assert sorted(p.name for p in registry.tmp.iterdir()) == [
            "add-dog-0123", "add-dog-0123.lock", "add-young-1",
        ]  # fmt: skip
    finally:
        holder.release()
    registry.remove("cat-toy")  # a remove sweeps too, once the builder is gone
    assert sorted(p.name for p in registry.tmp.iterdir()) == ["add-young-1"]
