"""Reading ``concepts.toml``: find it, parse it into ``project.config.Project``, and report every mistake at once.

tomllib stops at the first syntax error but knows nothing about tinv's keys, so everything past the syntax
(unknown keys, types, ranges, image folders, tokens) is checked here, and each problem is reported with the
line of the key that caused it (``toml_lines``).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tinv_cli.embedding import token_names
from tinv_cli.errors import NotFoundError, Problem, ProjectError
from tinv_cli.images import image_problems
from tinv_cli.names import NAME_RE, NAME_RULE
from tinv_cli.project.config import (
    INITIALIZER_INITS,
    Concept,
    HubConfig,
    ModelConfig,
    Project,
    TrainConfig,
)
from tinv_cli.project.schema import (
    Setting,
    check_value,
    describe_value,
    did_you_mean,
    quote,
    table_label,
    table_settings,
    token_problem,
)
from tinv_cli.project.toml_lines import KeyPath, key_lines, line_of

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PROJECT_FILE = "concepts.toml"
TOP_LEVEL = ("model", "train", "hub", "concepts")


# ---------------------------------------------------------------------------------------------------------------
# Parsing and checking.


class _Checker:
    """Collects problems while turning the parsed TOML into config objects."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text
        self.problems: list[Problem] = []
        self._lines: dict[KeyPath, int] | None = None

    def line(self, path: KeyPath) -> int:
        if self._lines is None:  # scanned only when there is something to report
            self._lines = key_lines(self.text)
        return line_of(self._lines, path)

    def add(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(self.path, self.line(path), message))

    def table(self, data: dict[str, Any], path: KeyPath) -> dict[str, Any]:
        """``data[path[-1]]`` if it is a table; ``{}`` (with a problem when present) otherwise."""
        value = data.get(path[-1], {})
        if isinstance(value, dict):
            return value
        self.add(path, f"{table_label(path)[1:-1]} must be a table, found {describe_value(value)}")
        return {}

    def fields(
        self,
        data: dict[str, Any],
        path: KeyPath,
        settings: Mapping[str, Setting],
        also_known: tuple[str, ...] = (),
        misplaced: Callable[[str], str | None] = lambda key: None,
    ) -> dict[str, Any]:
        """The valid values among ``data``'s keys; a problem for every unknown key or bad value."""
        where = table_label(path)
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in also_known:
                continue
            if key not in settings:
                note = misplaced(key) or did_you_mean(key, [*settings, *also_known])
                self.add((*path, key), f"unknown key {quote(key)} in {where}{note}")
                continue
            message, value = check_value(settings[key], value)
            if message:
                self.add((*path, key), f"{where} {key}: {message}")
            else:
                values[key] = value
        return values


def _absolute(path: Path) -> Path:
    # abspath, not resolve(): symlinks in the user's layout stay as written, only `..` is folded.
    return Path(os.path.abspath(path.expanduser()))


def _model_base(base: str, root: Path) -> str:
    """A local model folder made absolute (relative to the project file); a Hub id unchanged."""
    local = Path(base).expanduser()
    if local.is_absolute():
        return str(_absolute(local))
    # "org/name" is both a Hub id and a relative path; it means the folder (or checkpoint file) only when that
    # exists; a name with a checkpoint's suffix is never a Hub id.
    if (
        base.startswith(("./", "../", ".\\", "..\\"))
        or base in (".", "..")
        or (root / local).exists()
        or local.suffix.lower() in (".safetensors", ".ckpt")
    ):
        return str(_absolute(root / local))
    return base


def _parse_concept(
    checker: _Checker,
    name: str,
    data: Any,
    root: Path,
    train: TrainConfig,
    token_owner: dict[str, str],
    check_images: bool,
) -> Concept | None:
    """The concept ``[concepts.NAME]`` describes, or None after adding its problems to ``checker``."""
    path: KeyPath = ("concepts", name)
    label = table_label(path)
    before = len(checker.problems)
    # The registry's rule: a name it would refuse after a whole training run is refused here, before one.
    name_ok = bool(NAME_RE.match(name))
    if not name_ok:
        checker.add(path, f"concept name {quote(name)} is not allowed: {NAME_RULE}")
    if not isinstance(data, dict):
        checker.add(path, f"concept {quote(name)} must be a table, found {describe_value(data)}")
        return None

    train_settings = table_settings(TrainConfig)
    concept_settings = table_settings(Concept)

    def misplaced(key: str) -> str | None:
        if key in train_settings:
            return f"; training settings go in {table_label((*path, 'train'))}"
        return None

    values = checker.fields(data, path, concept_settings, also_known=("train",), misplaced=misplaced)
    overrides = checker.fields(checker.table(data, (*path, "train")), (*path, "train"), train_settings)

    # A key that is present but already reported as invalid is not checked again with its default.
    token = values.get("token", f"<{name}>")
    if "token" in values or ("token" not in data and name_ok):
        problem = token_problem(token)
        if problem:
            checker.add((*path, "token"), f"{label} {problem}")
        else:
            # Every vector's tokenizer entry must be unique, not just the first one.
            for entry in token_names(token, values.get("vectors", concept_settings["vectors"].default)):
                owner = token_owner.setdefault(entry, name)
                if owner != name:
                    checker.add(
                        (*path, "token"),
                        f"{label} token {quote(entry)} is already used by concept {quote(owner)}; "
                        "pick another token",
                    )
                    break
    init = values.get("init", None if "init" in data else concept_settings["init"].default)
    if init in INITIALIZER_INITS and "initializer" not in data:
        checker.add(
            (*path, "init"),
            f'{label} needs an initializer: a word close to the concept (initializer = "toy"), '
            'or init = "random"',
        )
    images: Path | None = None
    if "images" not in data:
        checker.add(path, f'{label} needs images = "FOLDER" (a folder relative to {PROJECT_FILE})')
    elif "images" in values:
        images = _absolute(root / Path(values["images"]).expanduser())
        if check_images:
            for message in image_problems(images):
                checker.add((*path, "images"), f"{label} images: {message}")

    if images is None or len(checker.problems) > before:
        return None
    # Keys left out take the dataclass's defaults.
    values.update(token=token, images=images, init=init)
    return Concept(name=name, train=train.merged(overrides), **values)


def _syntax_problem(path: Path, text: str, exc: tomllib.TOMLDecodeError) -> Problem:
    line = getattr(exc, "lineno", None)  # Python >= 3.14 has the position as attributes
    message = getattr(exc, "msg", None) or str(exc)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if match:
        line = int(match.group(1))
        message = f"{message[: match.start()]} (column {match.group(2)})"
    elif message.endswith("(at end of document)"):
        line = len(text.splitlines()) or 1
        message = message.replace("(at end of document)", "(at the end of the file)")
    return Problem(path, line or 0, f"TOML syntax error: {message}")


def parse_project_text(text: str, path: Path, *, check_images: bool = True) -> Project:
    """``load_project`` for text already in memory (``add_concept`` checks its edit before writing it)."""
    path = _absolute(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProjectError([_syntax_problem(path, text, exc)]) from None

    checker = _Checker(path, text)
    root = path.parent
    for key in data:
        if key not in TOP_LEVEL:
            checker.add((key,), f"unknown table or key {quote(key)}{did_you_mean(key, TOP_LEVEL)}")

    def table(cls: type, key: str) -> dict[str, Any]:
        return checker.fields(checker.table(data, (key,)), (key,), table_settings(cls))

    model_values = table(ModelConfig, "model")
    if "base" in model_values:
        model_values["base"] = _model_base(model_values["base"], root)
    if "config" in model_values:
        model_values["config"] = str(_absolute(root / Path(model_values["config"]).expanduser()))
    train = TrainConfig.from_settings(table(TrainConfig, "train"))
    hub = HubConfig(**table(HubConfig, "hub"))

    concepts: dict[str, Concept] = {}
    token_owner: dict[str, str] = {}
    for name, concept_data in checker.table(data, ("concepts",)).items():
        concept = _parse_concept(checker, name, concept_data, root, train, token_owner, check_images)
        if concept is not None:
            concepts[name] = concept

    if checker.problems:
        raise ProjectError(sorted(checker.problems, key=lambda p: p.line))
    return Project(path=path, model=ModelConfig(**model_values), train=train, hub=hub, concepts=concepts)


def load_project(path: Path, *, check_images: bool = True) -> Project:
    """Parse ``path`` (a ``concepts.toml``, or a folder holding one) into a ``Project``.

    Every problem in the file is collected and raised as one ``ProjectError``; paths in the result are
    absolute. ``check_images=False`` skips looking at the image folders (for commands that do not train).
    """
    if path.is_dir():
        path = path / PROJECT_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(
            f"project file {path} does not exist", "run `tinv init` to create one, or pass --project PATH"
        ) from None
    try:
        # A byte-order mark (Windows editors write one) is not part of the TOML; tomllib would refuse it.
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ProjectError(
            [Problem(_absolute(path), line, f"not UTF-8 text (byte {exc.start}); TOML files are UTF-8")],
            "save the file as UTF-8",
        ) from None
    return parse_project_text(text, path, check_images=check_images)


def find_project(start: Path | None = None) -> Path:
    """``$TINV_PROJECT`` if set, else the nearest ``concepts.toml`` in ``start`` (default: cwd) or above."""
    env = os.environ.get("TINV_PROJECT")
    if env:
        chosen = _absolute(Path(env))
        if chosen.is_dir():
            chosen = chosen / PROJECT_FILE
        if not chosen.is_file():
            raise NotFoundError(
                f"$TINV_PROJECT points to {chosen}, which does not exist",
                "fix or unset TINV_PROJECT, or run `tinv init` there",
            )
        return chosen
    here = _absolute(start if start is not None else Path.cwd())
    for folder in (here, *here.parents):
        candidate = folder / PROJECT_FILE
        if candidate.is_file():
            return candidate
    raise NotFoundError(
        f"no {PROJECT_FILE} in {here} or any folder above it",
        "run `tinv init` to create one, or pass --project PATH",
    )
