"""Reading ``concepts.toml``: find it, parse it into ``config.Project``, and report every mistake at once.

tomllib stops at the first syntax error but knows nothing about tinv's keys, so everything past the syntax
(unknown keys, types, ranges, image folders, tokens) is checked here, and each problem is reported with the
line of the key that caused it. tomllib gives no positions, hence the small line scanner in ``_key_lines``.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from tinv_cli.config import (
    LR_SCHEDULERS,
    Concept,
    HubConfig,
    Init,
    Kind,
    MixedPrecision,
    ModelConfig,
    Project,
    TrainConfig,
)
from tinv_cli.embedding import MAX_VECTORS, check_token, token_names
from tinv_cli.errors import ModelError, NotFoundError, Problem, ProjectError
from tinv_cli.images import image_problems

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

PROJECT_FILE = "concepts.toml"

KeyPath = tuple[str, ...]

_CONCEPT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


# ---------------------------------------------------------------------------------------------------------------
# Where each key is: a scanner for the subset of TOML structure that decides line numbers.


def _key_lines(text: str) -> dict[KeyPath, int]:
    """Map every table header and ``key =`` line to its 1-based line number.

    Only runs on text tomllib has accepted, but never raises on anything else: a line it cannot read is
    skipped. Values are skipped whole (multi-line strings, arrays and inline tables included), so a ``[`` or
    ``key =`` inside a value is never mistaken for structure. Tables that only appear as a prefix of a longer
    header or dotted key get the line where they first appear.
    """
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    lines: dict[KeyPath, int] = {}
    table: KeyPath = ()
    i, n = 0, len(text)

    def record(path: KeyPath, pos: int) -> None:
        line = bisect_right(starts, pos)
        for k in range(1, len(path)):
            lines.setdefault(path[:k], line)
        lines[path] = line

    while i < n:
        i = _skip_blanks(text, i)
        if i >= n:
            break
        if text[i] in "\r\n":
            i += 1
        elif text[i] == "#":
            i = _next_line(text, i)
        elif text[i] == "[":
            keys, end = _parse_key(text, i + (2 if text.startswith("[[", i) else 1))
            if keys:
                table = tuple(keys)
                record(table, i)
            i = _next_line(text, end)
        else:
            keys, end = _parse_key(text, i)
            if not keys:
                i = _next_line(text, i)
                continue
            record(table + tuple(keys), i)
            end = _skip_blanks(text, end)
            if end < n and text[end] == "=":
                end += 1
            i = _skip_value(text, end)
    return lines


def _skip_blanks(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t":
        i += 1
    return i


def _next_line(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end < 0 else end + 1


def _parse_key(text: str, i: int) -> tuple[list[str], int]:
    """A dotted key starting at ``i`` (bare, "basic" or 'literal' parts) and the index after it."""
    keys: list[str] = []
    n = len(text)
    while True:
        i = _skip_blanks(text, i)
        if i >= n:
            return [], i
        if text[i] in "\"'":
            end = _skip_string(text, i)
            raw = text[i:end]
            keys.append(_decode_quoted_key(raw))
            i = end
        else:
            match = _BARE_KEY_RE.match(text, i)
            if not match:
                return [], i
            keys.append(match.group())
            i = match.end()
        i = _skip_blanks(text, i)
        if i < n and text[i] == ".":
            i += 1
            continue
        return keys, i


def _decode_quoted_key(raw: str) -> str:
    # tomllib already knows every escape rule; a key that does not decode cannot be one tomllib accepted.
    try:
        return str(tomllib.loads(f"k = {raw}")["k"])
    except tomllib.TOMLDecodeError:
        return raw[1:-1]


def _skip_string(text: str, i: int) -> int:
    """The index just after the string (any of TOML's four kinds) that starts at ``i``."""
    quote = text[i]
    n = len(text)
    if text.startswith(quote * 3, i):
        j = i + 3
        while j < n:
            if quote == '"' and text[j] == "\\":
                j += 2
                continue
            if text.startswith(quote * 3, j):
                j += 3
                # Up to two quotes right before the closing three belong to the string: """say "hi"""""
                extra = 0
                while extra < 2 and j < n and text[j] == quote:
                    j += 1
                    extra += 1
                return j
            j += 1
        return n
    j = i + 1
    while j < n and text[j] != quote and text[j] != "\n":
        if quote == '"' and text[j] == "\\":
            j += 1
        j += 1
    return j + 1 if j < n and text[j] == quote else j


def _skip_value(text: str, i: int) -> int:
    """The start of the line after the value that starts at ``i`` (values may span lines)."""
    depth = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char in "\"'":
            i = _skip_string(text, i)
            continue
        if char == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "\n" and depth <= 0:
            return i + 1
        i += 1
    return n


def _line_of(lines: Mapping[KeyPath, int], path: KeyPath) -> int:
    """The line of ``path``, else of its nearest enclosing table or key (e.g. an inline table), else 0."""
    for k in range(len(path), 0, -1):
        if path[:k] in lines:
            return lines[path[:k]]
    return 0


# ---------------------------------------------------------------------------------------------------------------
# What each key accepts.


@dataclass(frozen=True)
class _Field:
    """One key's type, and optionally the values it allows (``choices``, or ``valid`` described by ``rule``)."""

    kind: type  # int, float, bool or str
    choices: tuple[str, ...] = ()
    valid: Callable[[Any], bool] | None = None
    rule: str = ""


def _at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: v >= low


_NOT_EMPTY = _Field(str, valid=lambda v: v.strip() != "", rule="a non-empty string")

TRAIN_FIELDS: dict[str, _Field] = {
    "steps": _Field(int, valid=_at_least(1), rule="at least 1"),
    "batch_size": _Field(int, valid=_at_least(1), rule="at least 1"),
    "gradient_accumulation": _Field(int, valid=_at_least(1), rule="at least 1"),
    "learning_rate": _Field(float, valid=lambda v: v > 0, rule="greater than 0"),
    "scale_lr": _Field(bool),
    "lr_scheduler": _Field(str, choices=LR_SCHEDULERS),
    "lr_warmup_steps": _Field(int, valid=_at_least(0), rule="0 or more"),
    "lr_num_cycles": _Field(int, valid=_at_least(1), rule="at least 1"),
    "resolution": _Field(
        int, valid=lambda v: v > 0 and v % 8 == 0, rule="a positive multiple of 8, e.g. 512"
    ),
    "center_crop": _Field(bool),
    "flip_p": _Field(float, valid=lambda v: 0 <= v <= 1, rule="between 0 and 1"),
    "mixed_precision": _Field(str, choices=get_args(MixedPrecision)),
    # numpy's seeding (used by the data pipeline) accepts only 0 .. 2**32 - 1.
    "seed": _Field(int, valid=lambda v: 0 <= v < 2**32, rule="between 0 and 4294967295"),
    "adam_beta1": _Field(float, valid=lambda v: 0 <= v < 1, rule="at least 0 and less than 1"),
    "adam_beta2": _Field(float, valid=lambda v: 0 <= v < 1, rule="at least 0 and less than 1"),
    "adam_weight_decay": _Field(float, valid=_at_least(0), rule="0 or more"),
    "adam_epsilon": _Field(float, valid=lambda v: v > 0, rule="greater than 0"),
    "max_grad_norm": _Field(float, valid=_at_least(0), rule="0 or more (0 turns clipping off)"),
    "gradient_checkpointing": _Field(bool),
    "compile": _Field(bool),
    "checkpoint_every": _Field(int, valid=_at_least(0), rule="0 or more (0: no intermediate checkpoints)"),
    "validation_every": _Field(int, valid=_at_least(0), rule="0 or more (0: only at the end)"),
    "num_validation_images": _Field(int, valid=_at_least(1), rule="at least 1"),
}

MODEL_FIELDS: dict[str, _Field] = {"base": _NOT_EMPTY, "revision": _NOT_EMPTY}
HUB_FIELDS: dict[str, _Field] = {"namespace": _NOT_EMPTY, "private": _Field(bool)}
CONCEPT_FIELDS: dict[str, _Field] = {
    "token": _Field(str),  # its shape is checked by _token_problem, with a message about what a token is
    "images": _NOT_EMPTY,
    "initializer": _NOT_EMPTY,
    "init": _Field(str, choices=get_args(Init)),
    "kind": _Field(str, choices=get_args(Kind)),
    "vectors": _Field(int, valid=lambda v: 1 <= v <= MAX_VECTORS, rule=f"between 1 and {MAX_VECTORS}"),
    "validation_prompt": _Field(str),
}
TOP_LEVEL = ("model", "train", "hub", "concepts")

_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _describe(value: Any) -> str:
    """A value as the user wrote it, with its TOML type: ``the string "3000"``, ``true``, ``a table``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {_quote(value)}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, (int, float)):
        return str(value)
    return f"a date/time ({value})"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _key_text(key: str) -> str:
    return key if _BARE_KEY_RE.fullmatch(key) else _quote(key)


def _table_label(path: KeyPath) -> str:
    return "[" + ".".join(_key_text(k) for k in path) + "]"


def _did_you_mean(word: str, options: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def _token_problem(token: str) -> str | None:
    """Why ``token`` cannot be a concept's placeholder, or None."""
    if len(token) < 3 or not token.startswith("<") or not token.endswith(">"):
        return f"token {_quote(token)} must look like <cat-toy>: a word between < and >"
    if any(c.isspace() for c in token):
        return f"token {_quote(token)} must not contain spaces"
    return check_token(token)


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
            self._lines = _key_lines(self.text)
        return _line_of(self._lines, path)

    def add(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(self.path, self.line(path), message))

    def table(self, data: dict[str, Any], path: KeyPath) -> dict[str, Any]:
        """``data[path[-1]]`` if it is a table; ``{}`` (with a problem when present) otherwise."""
        value = data.get(path[-1], {})
        if isinstance(value, dict):
            return value
        self.add(path, f"{_table_label(path)[1:-1]} must be a table, found {_describe(value)}")
        return {}

    def fields(
        self,
        data: dict[str, Any],
        path: KeyPath,
        fields: dict[str, _Field],
        also_known: tuple[str, ...] = (),
        misplaced: Callable[[str], str | None] = lambda key: None,
    ) -> dict[str, Any]:
        """The valid values among ``data``'s keys; a problem for every unknown key or bad value."""
        where = _table_label(path)
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in also_known:
                continue
            if key not in fields:
                note = misplaced(key) or _did_you_mean(key, [*fields, *also_known])
                self.add((*path, key), f"unknown key {_quote(key)} in {where}{note}")
                continue
            message, value = _check_value(fields[key], value)
            if message:
                self.add((*path, key), f"{where} {key}: {message}")
            else:
                values[key] = value
        return values


def _check_value(field: _Field, value: Any) -> tuple[str | None, Any]:
    """(problem, value converted to the field's type)."""
    # bool is a subclass of int in Python, but `steps = true` is a mistake, not 1.
    type_ok = isinstance(value, field.kind) and (field.kind is bool or not isinstance(value, bool))
    if field.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, type_ok = float(value), True
    if not type_ok:
        return f"expected {_TYPE_NAMES[field.kind]}, found {_describe(value)}", value
    if field.kind is float and not math.isfinite(value):
        return f"expected a finite number, found {value}", value
    if field.choices and value not in field.choices:
        options = ", ".join(_quote(c) for c in field.choices)
        return f"{_quote(value)} is not one of {options}{_did_you_mean(value, field.choices)}", value
    if field.valid is not None and not field.valid(value):
        return f"must be {field.rule}, found {_describe(value)}", value
    return None, value


def _absolute(path: Path) -> Path:
    # abspath, not resolve(): symlinks in the user's layout stay as written, only `..` is folded.
    return Path(os.path.abspath(path.expanduser()))


def _model_base(base: str, root: Path) -> str:
    """A local model folder made absolute (relative to the project file); a Hub id unchanged."""
    local = Path(base).expanduser()
    if local.is_absolute():
        return str(_absolute(local))
    # "org/name" is both a Hub id and a relative path; it means the folder only when that folder exists.
    if base.startswith(("./", "../", ".\\", "..\\")) or base in (".", "..") or (root / local).is_dir():
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
    label = _table_label(path)
    before = len(checker.problems)
    name_ok = bool(_CONCEPT_NAME_RE.match(name))
    if not name_ok:
        checker.add(
            path,
            f"concept name {_quote(name)} is not allowed: use letters, digits, '-', '_' and '.', "
            "starting with a letter or digit",
        )
    if not isinstance(data, dict):
        checker.add(path, f"concept {_quote(name)} must be a table, found {_describe(data)}")
        return None

    def misplaced(key: str) -> str | None:
        if key in TRAIN_FIELDS:
            return f"; training settings go in {_table_label((*path, 'train'))}"
        return None

    values = checker.fields(data, path, CONCEPT_FIELDS, also_known=("train",), misplaced=misplaced)
    overrides = checker.fields(checker.table(data, (*path, "train")), (*path, "train"), TRAIN_FIELDS)

    # A key that is present but already reported as invalid is not checked again with its default.
    token = values.get("token", f"<{name}>")
    if "token" in values or ("token" not in data and name_ok):
        token_problem = _token_problem(token)
        if token_problem:
            checker.add((*path, "token"), f"{label} {token_problem}")
        else:
            # Every vector's tokenizer entry must be unique, not just the first one.
            for entry in token_names(token, values.get("vectors", 1)):
                owner = token_owner.setdefault(entry, name)
                if owner != name:
                    checker.add(
                        (*path, "token"),
                        f"{label} token {_quote(entry)} is already used by concept {_quote(owner)}; "
                        "pick another token",
                    )
                    break
    init = values.get("init", None if "init" in data else "initializer")
    if init == "initializer" and "initializer" not in data:
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
    return Concept(
        name=name,
        token=token,
        images=images,
        initializer=values.get("initializer"),
        init=init,
        kind=values.get("kind", "object"),
        vectors=values.get("vectors", 1),
        validation_prompt=values.get("validation_prompt"),
        train=train.merged(overrides),
    )


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
            checker.add((key,), f"unknown table or key {_quote(key)}{_did_you_mean(key, TOP_LEVEL)}")

    model_values = checker.fields(checker.table(data, ("model",)), ("model",), MODEL_FIELDS)
    if "base" in model_values:
        model_values["base"] = _model_base(model_values["base"], root)
    train = TrainConfig(**checker.fields(checker.table(data, ("train",)), ("train",), TRAIN_FIELDS))
    hub = HubConfig(**checker.fields(checker.table(data, ("hub",)), ("hub",), HUB_FIELDS))

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
        text = raw.decode("utf-8")
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


# ---------------------------------------------------------------------------------------------------------------
# Checks that need the base model's tokenizer.


def initializer_plan(num_tokens: int, vectors: int) -> list[list[int]]:
    """For each of ``vectors`` vectors, the initializer token indices whose embeddings it starts from (mean).

    Token j goes to vector ``j % vectors``; when there are more vectors than tokens, the tokens are cycled,
    so every vector gets at least one token and every token is used.
    """
    if num_tokens < 1 or vectors < 1:
        raise ValueError(
            f"initializer_plan needs at least one token and one vector, got {num_tokens}, {vectors}"
        )
    plan: list[list[int]] = [[] for _ in range(vectors)]
    for j in range(max(vectors, num_tokens)):
        plan[j % vectors].append(j % num_tokens)
    return plan


# Either file set is a complete tokenizer: the original CLIP files, or the single file transformers >= 5 saves.
_TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",))


def initializer_ids(tokenizer: Any, initializer: str) -> list[int]:
    """Token ids of each word of ``initializer``; every word must be one token the tokenizer knows."""
    ids = []
    for word in initializer.split():
        word_ids = tokenizer.encode(word, add_special_tokens=False)
        if len(word_ids) != 1 or word_ids[0] == tokenizer.unk_token_id:
            pieces = " ".join(tokenizer.convert_ids_to_tokens(word_ids))
            raise ModelError(
                f"initializer word {word!r} is not in the base model's vocabulary (it splits into {pieces})",
                "use a common word close to the concept (e.g. toy, cat, painting), or --init random",
            )
        ids.append(word_ids[0])
    if not ids:
        raise ModelError("the initializer is empty", "use a word close to the concept, or --init random")
    return ids


def _local_tokenizer(model: ModelConfig) -> CLIPTokenizer | None:
    """The base model's tokenizer if it is on this machine (a local folder or the HF cache), else None."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    from tinv_cli.models import builtin_folder

    local = builtin_folder(model.base) or Path(model.base)
    if local.is_dir():
        folder = local / "tokenizer"
        if not any(all((folder / name).is_file() for name in names) for names in _TOKENIZER_FILES):
            return None
    else:
        for names in _TOKENIZER_FILES:
            try:
                cached = [
                    try_to_load_from_cache(model.base, f"tokenizer/{name}", revision=model.revision)
                    for name in names
                ]
            except HFValidationError:  # not a Hub id at all (e.g. a folder that does not exist)
                return None
            if all(isinstance(c, str) for c in cached):
                folder = Path(str(cached[0])).parent
                break
        else:
            return None
    # Checked by hand above because transformers >= 5 quietly builds an empty tokenizer when files are missing.
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


def check_project(project: Project) -> list[str]:
    """Check every concept's placeholder and initializer against the base model's tokenizer.

    Returns notes (including one saying the checks were skipped when the tokenizer is not on this machine);
    raises ``ProjectError`` with every problem at once.
    """
    tokenizer = _local_tokenizer(project.model)
    if tokenizer is None:
        return [f"tokenizer of {project.model.base} not available locally; token checks skipped"]
    try:
        lines = _key_lines(project.path.read_text(encoding="utf-8"))
    except OSError:
        lines = {}

    vocab = tokenizer.get_vocab()
    notes: list[str] = []
    problems: list[Problem] = []
    for name, concept in project.concepts.items():
        label = _table_label(("concepts", name))
        for entry in token_names(concept.token, concept.vectors):
            pieces = tokenizer.tokenize(entry)
            if entry in vocab or (
                len(pieces) == 1 and pieces[0] in vocab and pieces[0] != tokenizer.unk_token
            ):
                problems.append(
                    Problem(
                        project.path,
                        _line_of(lines, ("concepts", name, "token")),
                        f"{label} {entry} is already a word of the tokenizer; pick another token",
                    )
                )
                break
        if concept.init != "initializer" or concept.initializer is None:
            continue
        try:
            ids = initializer_ids(tokenizer, concept.initializer)
        except ModelError as error:
            line = _line_of(lines, ("concepts", name, "initializer"))
            problems.append(Problem(project.path, line, f"{label} {error.message}; {error.hint}"))
            continue
        if len(ids) > 1:
            n = concept.vectors
            notes.append(
                f"concept {name}: initializer {_quote(concept.initializer)} is {len(ids)} words; "
                f"with {n} vector{'s' if n > 1 else ''}, vector i starts from the mean of the initializer's "
                f"words j where j % {n} == i (words cycled when {n} > {len(ids)})"
            )
    if problems:
        raise ProjectError(
            sorted(problems, key=lambda p: p.line), "change the token or initializer and run again"
        )
    return notes
