"""`tinv pull` reads a snapshot of the Hugging Face cache under formats/contained.py's rule: its symlinks into the
repository's own cache folder are followed, a link or hard link planted in the cache that leads elsewhere, an
image that is not one and a token file that is not UTF-8 are one-line errors, and nothing reaches the registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.hub.test_hub import _concepts_library_repo, _tensor, _torch_bytes, hub, tinv  # noqa: F401
from tests.hubserver import LocalHub

REPO = "sd-concepts-library/cat-toy"
SECRET = b"root:x:0:0:the secret\n"


def _snapshot() -> Path:
    cache = Path(os.environ["HF_HOME"]) / "hub" / ("models--" + REPO.replace("/", "--"))
    (snapshot,) = (cache / "snapshots").iterdir()
    return snapshot


def _pulled_then_tampered(tmp_path: Path, tamper: str) -> tuple[Path, Path]:
    """Pull once (filling the cache), empty the registry, then plant ``tamper`` in the cached snapshot."""
    first = tinv("pull", REPO)
    assert first.code == 0, first.err
    home = tmp_path / "second-home"
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    image = _snapshot() / "concept_images" / "0.jpeg"
    if tamper == "symlink":
        image.unlink()
        image.symlink_to(secret)
    elif tamper == "hard link":
        blob = image.resolve()
        blob.unlink()
        os.link(secret, blob)
    elif tamper == "token symlink":
        token = _snapshot() / "token_identifier.txt"
        token.unlink()
        token.symlink_to(secret)
    return home, secret


@pytest.mark.slow
@pytest.mark.parametrize("tamper", ["symlink", "hard link", "token symlink"])
def test_a_cached_snapshot_with_a_link_out_is_refused(hub: LocalHub, tmp_path: Path, tamper: str) -> None:  # noqa: F811
    _concepts_library_repo(hub, REPO, "<cat-toy>", _tensor(1, 11)[0])
    home, _secret = _pulled_then_tampered(tmp_path, tamper)

    again = tinv("pull", REPO, TINV_HOME=str(home), HF_HUB_OFFLINE="1")

    assert again.code == 1, again.err
    assert "refused" in again.err and "Traceback" not in again.err
    assert not (home / "registry").exists() or not any((home / "registry").rglob("*.safetensors"))


@pytest.mark.slow
def test_a_pulled_non_image_and_a_non_utf8_token_are_one_line_errors(hub: LocalHub) -> None:  # noqa: F811
    hub.create_repo("mallory/text-image")
    hub.commit(
        "mallory/text-image",
        {
            "learned_embeds.bin": _torch_bytes({"<text-image>": _tensor(1, 3)[0]}),
            "token_identifier.txt": b"<text-image>",
            "concept_images/0.png": b"this is not a png\n",
        },
    )
    hub.create_repo("mallory/latin1")
    hub.commit(
        "mallory/latin1",
        {"learned_embeds.bin": _torch_bytes({"<x>": _tensor(1, 3)[0]}), "token_identifier.txt": b"<caf\xe9>"},
    )
    not_image = tinv("pull", "mallory/text-image")
    latin1 = tinv("pull", "mallory/latin1")
    assert not_image.code == 1 and "0.png: not a readable image" in not_image.err, not_image.err
    assert latin1.code == 1 and "token_identifier.txt: not UTF-8" in latin1.err, latin1.err
    for run in (not_image, latin1):
        assert "Traceback" not in run.err
    assert not (Path(os.environ["TINV_HOME"]) / "registry").exists()
