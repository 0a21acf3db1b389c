"""Writing ``concepts.toml``: the commented template ``tinv init`` starts from, and adding a concept to it.

Edits append text instead of re-serialising the parsed TOML, because a round trip through a TOML writer
would drop the user's comments and layout.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from tinv_cli.atomic import write_bytes
from tinv_cli.errors import DataError, Problem, ProjectError, TinvError
from tinv_cli.images import image_problems
from tinv_cli.project.config import DEFAULT_BASE_MODEL, Concept
from tinv_cli.project.load import PROJECT_FILE, load_project, parse_project_text

TEMPLATE = f"""\
# tinv project file. Train a concept with `tinv train NAME`; check this file with `tinv check`.
# Paths are relative to this file. Unknown keys are errors, so a misspelled setting is never ignored.

[model]
base = "{DEFAULT_BASE_MODEL}"  # Hub id or local diffusers folder
# revision = "main"            # a branch, tag or commit of the Hub repository

# Defaults for every concept: the diffusers textual inversion example's cat-toy recipe.
# A concept overrides any of them in its own [concepts.NAME.train] table.
[train]
steps = 3000                   # optimisation steps
batch_size = 1                 # images per step and process
gradient_accumulation = 4      # steps whose gradients are summed before each update
learning_rate = 5.0e-4
scale_lr = true                # multiply learning_rate by batch_size x gradient_accumulation x processes
lr_scheduler = "constant"      # constant | constant_with_warmup | linear | cosine | cosine_with_restarts | polynomial
lr_warmup_steps = 0            # steps of linear warm-up (for the *_with_warmup and decaying schedulers)
lr_num_cycles = 1              # restarts of cosine_with_restarts
resolution = 512               # training images are resized to this (a multiple of 8)
center_crop = false            # crop to the centre square instead of resizing the whole image
flip_p = 0.5                   # chance of a horizontal flip per image
mixed_precision = "fp16"       # no | fp16 | bf16 (fp16 and bf16 need a GPU)
seed = 0                       # same seed, same images, same result
adam_beta1 = 0.9
adam_beta2 = 0.999
adam_weight_decay = 1.0e-2
adam_epsilon = 1.0e-8
max_grad_norm = 0.0            # gradient clipping; 0 turns it off, as in the reference script
gradient_checkpointing = false # trade compute for memory in the text encoder
compile = false                # torch.compile the UNet: minutes of compiling, then faster steps on a GPU
checkpoint_every = 500         # steps between resumable checkpoints (0: none)
validation_every = 0           # steps between validation images (0: only at the end)
num_validation_images = 4      # images per validation, when the concept has a validation_prompt

[hub]
# namespace = "your-hf-username"   # where `tinv push` publishes (e.g. sd-concepts-library)
private = false                    # create new Hub repositories as private

# One table per concept; add one with `tinv init --concept NAME --images FOLDER --initializer WORD`.
#
# [concepts.cat-toy]
# token = "<cat-toy>"          # the word to use in prompts (default: <NAME>)
# images = "data/cat-toy"      # folder of training images, relative to this file
# initializer = "toy"          # a word close to the concept: the embedding starts from it
# init = "initializer"         # initializer | random | zero
# kind = "object"              # object | style: which prompt templates are used in training
# vectors = 1                  # embedding vectors for the token (1 to 75)
# validation_prompt = "a <cat-toy> on a beach"
#
# [concepts.cat-toy.train]     # overrides of [train] for this concept
# steps = 2000
"""

_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


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


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string: quotes, backslashes and control characters escaped."""
    escapes = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
    out = []
    for char in text:
        if char in escapes:
            out.append(escapes[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY_RE.fullmatch(key) else toml_string(key)


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
