"""Writing ``concepts.toml``: a new one from the template (``template.py``), and adding a concept to it.

Edits append text instead of re-serialising the parsed TOML, because a round trip through a TOML writer
would drop the user's comments and layout.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tinv_cli.atomic import write_bytes
from tinv_cli.errors import DataError, Problem, ProjectError, TinvError
from tinv_cli.images import image_problems
from tinv_cli.project.config import Concept
from tinv_cli.project.load import PROJECT_FILE, load_project, parse_project_text
from tinv_cli.project.template import TEMPLATE, toml_string
from tinv_cli.project.toml_lines import BARE_KEY_RE


def init_project(path: Path) -> Path:
    """Write the template to ``path`` (or to ``path/concepts.toml`` for a folder); never overwrites."""
    if path.is_dir():
        path = path / PROJECT_FILE
    path = Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # "x" mode: creating and checking for an existing file is one step, so a race cannot overwrite.
        with path.open("x", encoding="utf-8", newline="\n") as f:
            f.write(TEMPLATE)
    except FileExistsError:
        raise TinvError(
            f"{path} already exists",
            "edit it, or add a concept with `tinv init --concept NAME --images FOLDER --initializer WORD`",
        ) from None
    return path


def _toml_key(key: str) -> str:
    return key if BARE_KEY_RE.fullmatch(key) else toml_string(key)


def _relative_images(images: Path, root: Path) -> str:
    """The image folder as written into the file: relative to the project folder, with / separators."""
    absolute = Path(os.path.abspath(images.expanduser()))
    try:
        return Path(os.path.relpath(absolute, root)).as_posix()
    except ValueError:  # another drive on Windows: no relative path exists
        return absolute.as_posix()


def _concept_table(
    name: str, token: str, images: str, initializer: str | None, kind: str, vectors: int, newline: str
) -> str:
    lines = [
        f"[concepts.{_toml_key(name)}]",
        f"token = {toml_string(token)}",
        f"images = {toml_string(images)}",
    ]
    if initializer is not None:
        lines.append(f"initializer = {toml_string(initializer)}")
    lines += [f"kind = {toml_string(kind)}", f"vectors = {vectors}"]
    return newline.join(lines) + newline


def add_concept(
    path: Path,
    name: str,
    images: Path,
    *,
    token: str | None = None,
    initializer: str | None = None,
    kind: str = "object",
    vectors: int = 1,
) -> Concept:
    """Append a ``[concepts.NAME]`` table to the project file and return the concept it defines.

    The file's existing bytes are kept as they are. The edited text is parsed and checked first (the new
    concept's image folder included), and the file is only replaced when it is valid: on any problem it is
    left unchanged. ``images`` is relative to the current folder (as typed on the command line) or absolute.
    """
    path = Path(os.path.abspath(path))
    # Existing problems (or a missing file) are reported as they are, before anything about the new concept.
    existing = load_project(path, check_images=False)
    original = path.read_bytes()
    if name in existing.concepts:
        raise TinvError(
            f"concept {name!r} already exists in {path}",
            "pick another name, or edit its table in the file",
        )
    token = token if token is not None else f"<{name}>"
    for other in existing.concepts.values():
        if other.token == token:
            raise TinvError(
                f"token {token} is already used by concept {other.name!r} in {path}", "pass another --token"
            )
    if initializer is None:
        raise TinvError(
            f"concept {name!r} needs an initializer: the word its embedding starts from",
            "pass --initializer WORD with a word close to the concept, such as toy or painting",
        )

    text = original.decode("utf-8")
    newline = "\r\n" if "\r\n" in text else "\n"
    separator = "" if not text or text.endswith("\n") else newline
    # A blank line before the table when the file does not already end with one keeps the layout readable.
    if text and not text.endswith(("\n\n", "\r\n\r\n")):
        separator += newline
    table = _concept_table(
        name, token, _relative_images(images, path.parent), initializer, kind, vectors, newline
    )
    new_text = text + separator + table

    original_lines = len(text.splitlines())
    try:
        project = parse_project_text(new_text, path, check_images=False)
    except ProjectError as exc:
        # Lines past the end of the file are in the table not yet written: report them without a line.
        problems = [
            p if p.line <= original_lines else Problem(p.path, 0, f"new concept {name!r}: {p.message}")
            for p in exc.problems
        ]
        raise ProjectError(problems, "fix the values passed for the new concept") from None
    concept = project.concepts[name]
    folder_problems = image_problems(concept.images)
    if folder_problems:
        unreadable = any("not a readable image" in problem for problem in folder_problems)
        raise DataError(
            f"concept {name!r}: " + "; ".join(folder_problems),
            "remove or replace the unreadable files, then run this again"
            if unreadable
            else "put the training images (.png, .jpg, ...) in that folder first",
        )
    # One rename, so a crash leaves the old file or the new, never half; the file keeps its permissions.
    write_bytes(path, new_text.encode("utf-8"), mode=stat.S_IMODE(path.stat().st_mode))
    return concept
