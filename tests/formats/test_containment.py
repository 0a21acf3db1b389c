"""No file outside a source folder reaches the registry or the Hub (formats/contained.py): symlinks, hard links
and ``..`` paths, for `tinv import`, a pulled snapshot's layout and `tinv push`'s file list; concept images are
real images of bounded size; the layout's text files are UTF-8 or a one-line error."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from tinv_cli.cli.app import app
from tinv_cli.errors import TinvError
from tinv_cli.formats import detect
from tinv_cli.formats.contained import MAX_IMAGE_SIDE
from tinv_cli.registry.store import Registry
from tinv_cli.registry.transfer import import_file

SECRET = b"root:x:0:0:the secret\n"


def _folder(tmp_path: Path, name: str = "cat-toy") -> Path:
    """A valid concepts library folder with two real images."""
    folder = tmp_path / name
    (folder / "concept_images").mkdir(parents=True)
    save_file({"<cat-toy>": torch.randn(1, 32)}, str(folder / "learned_embeds.safetensors"))
    (folder / "token_identifier.txt").write_text("<cat-toy>")
    (folder / "type_of_concept.txt").write_text("object")
    for i in range(2):
        Image.new("RGB", (16, 16), (i * 100, 20, 20)).save(folder / "concept_images" / f"{i}.png")
    return folder


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere" / "secret.txt"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def _registry_bytes(home: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()] if home.exists() else []


def _image_link(folder: Path, secret: Path) -> None:
    (folder / "concept_images" / "passwd.png").symlink_to(secret)


def _images_dir_link(folder: Path, secret: Path) -> None:
    for image in (folder / "concept_images").iterdir():
        image.unlink()
    (folder / "concept_images").rmdir()
    (folder / "concept_images").symlink_to(secret.parent, target_is_directory=True)
    Image.new("RGB", (8, 8)).save(secret.parent / "outside.png")  # a real image, but outside the folder


def _image_link_to_etc(folder: Path, secret: Path) -> None:
    (folder / "concept_images" / "passwd.png").symlink_to("/etc/passwd")


def _token_link(folder: Path, secret: Path) -> None:
    (folder / "token_identifier.txt").unlink()
    (folder / "token_identifier.txt").symlink_to(secret)


def _kind_link(folder: Path, secret: Path) -> None:
    (folder / "type_of_concept.txt").unlink()
    (folder / "type_of_concept.txt").symlink_to(secret)


def _embeds_link(folder: Path, secret: Path) -> None:
    outside = secret.parent / "other.safetensors"
    save_file({"<cat-toy>": torch.randn(1, 32)}, str(outside))
    (folder / "learned_embeds.safetensors").unlink()
    (folder / "learned_embeds.safetensors").symlink_to(outside)


def _image_hard_link(folder: Path, secret: Path) -> None:
    image = secret.parent / "real.png"
    Image.new("RGB", (8, 8)).save(image)
    os.link(image, folder / "concept_images" / "linked.png")


def _token_hard_link(folder: Path, secret: Path) -> None:
    (folder / "token_identifier.txt").unlink()
    os.link(secret, folder / "token_identifier.txt")


def _relative_escape(folder: Path, secret: Path) -> None:
    # A relative link that climbs out with `..`.
    (folder / "concept_images" / "up.png").symlink_to(Path("..") / ".." / "elsewhere" / "secret.txt")


ESCAPES: dict[str, Callable[[Path, Path], None]] = {
    "image symlink to a secret": _image_link,
    "image symlink to /etc/passwd": _image_link_to_etc,
    "concept_images is a symlink out": _images_dir_link,
    "token file symlink": _token_link,
    "kind file symlink": _kind_link,
    "embedding symlink": _embeds_link,
    "image hard link": _image_hard_link,
    "token file hard link": _token_hard_link,
    "relative .. symlink": _relative_escape,
}


@pytest.mark.parametrize("plant", ESCAPES.values(), ids=list(ESCAPES))
def test_import_refuses_every_route_out_of_the_folder(
    plant: Callable[[Path, Path], None], tmp_path: Path, secret: Path
) -> None:
    folder = _folder(tmp_path)
    plant(folder, secret)
    home = Path(os.environ["TINV_HOME"])
    before = _registry_bytes(home)

    result = CliRunner().invoke(app, ["import", str(folder)])

    assert result.exit_code == 1, result.output
    assert "Error:" in result.output and "Traceback" not in result.output
    assert "refused" in result.output
    assert _registry_bytes(home) == before
    assert all(SECRET not in data for data in _registry_bytes(home))


def test_links_inside_the_folder_are_followed(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "concept_images" / "again.png").symlink_to("0.png")
    entry = import_file(Registry(), folder).entry
    names = sorted(p.name for p in (entry.path / "concept_images").iterdir())
    assert names == ["0.png", "1.png", "again.png"]
    assert all(not p.is_symlink() for p in entry.path.rglob("*"))


def test_a_snapshot_made_of_links_into_its_own_cache_folder_is_read(tmp_path: Path, secret: Path) -> None:
    """The Hugging Face cache's layout: snapshots/<commit>/file -> ../../blobs/<hash>, legitimate inside the
    repository's cache folder (the root a pull passes), refused when a link leads elsewhere."""
    source = _folder(tmp_path / "src")
    repo = tmp_path / "hub" / "models--someone--cat-toy"
    snapshot = repo / "snapshots" / ("a" * 40)
    (repo / "blobs").mkdir(parents=True)
    for i, path in enumerate(sorted(p for p in source.rglob("*") if p.is_file())):
        blob = repo / "blobs" / f"hash{i}"
        blob.write_bytes(path.read_bytes())
        link = snapshot / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))

    imported = detect.read(snapshot, root=repo)
    assert imported.embedding.token == "<cat-toy>"
    assert [p.name for p in imported.images] == ["0.png", "1.png"]  # the names, not the blobs' hashes

    # Without the cache folder as root the same links lead out of the snapshot.
    with pytest.raises(TinvError, match="outside"):
        detect.read(snapshot)
    # A `..` path into the snapshot is refused even when it stays inside the cache folder.
    with pytest.raises(TinvError, match="leads out"):
        detect.read(snapshot / "concept_images" / ".." / "learned_embeds.safetensors", root=repo)
    with pytest.raises(TinvError, match="leads out"):
        detect.read(snapshot / ".." / ".." / ".." / "evil.safetensors", root=repo)
    (snapshot / "concept_images" / "0.png").unlink()
    (snapshot / "concept_images" / "0.png").symlink_to(secret)
    with pytest.raises(TinvError, match="outside"):
        detect.read(snapshot, root=repo)


def _not_an_image(folder: Path) -> None:
    (folder / "concept_images" / "notes.png").write_text("just text\n")


def _huge_image(folder: Path) -> None:
    # 20000x20000 px in a few hundred kB: PNG deflates a flat colour to almost nothing.
    Image.new("1", (20000, 20000)).save(folder / "concept_images" / "huge.png")


def _truncated_image(folder: Path) -> None:
    data = (folder / "concept_images" / "0.png").read_bytes()
    (folder / "concept_images" / "cut.png").write_bytes(data[: len(data) // 2])


def _subfolder(folder: Path) -> None:
    (folder / "concept_images" / "more").mkdir()


def _fifo(folder: Path) -> None:
    os.mkfifo(folder / "concept_images" / "pipe.png")  # opening it would block the import forever


def _dangling(folder: Path) -> None:
    (folder / "concept_images" / "gone.png").symlink_to("missing.png")


BAD_IMAGES = {
    "a fifo named .png": (_fifo, "not a regular file"),
    "a dangling link": (_dangling, "cannot be read"),
    "text named .png": (_not_an_image, "not a readable image"),
    "20000x20000 png": (_huge_image, f"at most {MAX_IMAGE_SIDE} px"),
    "truncated png": (_truncated_image, "not a readable image"),
    "a folder in concept_images": (_subfolder, "not a regular file"),
}


@pytest.mark.parametrize(("plant", "message"), BAD_IMAGES.values(), ids=list(BAD_IMAGES))
def test_concept_images_are_real_images_of_bounded_size(
    plant: Callable[[Path], None], message: str, tmp_path: Path
) -> None:
    folder = _folder(tmp_path)
    plant(folder)
    result = CliRunner().invoke(app, ["import", str(folder)])
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output
    assert Registry().list() == []


@pytest.mark.parametrize("data", [b"\xff\xfe<\x00c\x00a\x00t\x00>\x00", b"<caf\xe9>", b"x" * 5000])
def test_a_token_file_that_is_not_one_utf8_word_is_a_one_line_error(data: bytes, tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "token_identifier.txt").write_bytes(data)
    result = CliRunner().invoke(app, ["import", str(folder)])
    assert result.exit_code == 1, result.output
    assert "token_identifier.txt" in result.output and "Traceback" not in result.output
    assert Registry().list() == []


def test_a_utf8_token_file_with_a_bom_is_read(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "token_identifier.txt").write_bytes("\ufeff<cat-toy>\n".encode())
    assert detect.read(folder).embedding.token == "<cat-toy>"


def test_push_uploads_only_regular_files_inside_the_entry(tmp_path: Path, secret: Path) -> None:
    """A link planted in a registry entry is refused by push's file list, before any request."""
    from tinv_cli.hub.push import _entry_files

    entry = import_file(Registry(), _folder(tmp_path)).entry
    files = _entry_files(entry, "alice/cat-toy")
    assert "concept_images/0.png" in files and all(SECRET not in data for data in files.values())

    planted = entry.path / "concept_images" / "passwd.png"
    planted.symlink_to(secret)
    with pytest.raises(TinvError, match="outside"):
        _entry_files(entry, "alice/cat-toy")
    planted.unlink()
    os.link(secret, planted)
    with pytest.raises(TinvError, match="hard link"):
        _entry_files(entry, "alice/cat-toy")
    planted.unlink()
    (entry.path / "token_identifier.txt").unlink()
    (entry.path / "token_identifier.txt").symlink_to(secret)
    with pytest.raises(TinvError, match="outside"):
        _entry_files(entry, "alice/cat-toy")
