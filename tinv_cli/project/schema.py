"""What each key of ``concepts.toml`` accepts, declared once and read by everything that needs it.

A setting is a field of a ``config.py`` dataclass made with ``setting()``: its default, its one help text
and its rule live in the field, its type (and for a ``Literal``, its choices) in the annotation.
``table_settings`` lists a table's settings; from them come the file's validator (``load.py``), the template
``tinv init`` writes (``template.py``) and the options of ``tinv train`` (``cli/train_cmd.py``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

from tinv_cli.embedding import check_token
from tinv_cli.project.toml_lines import BARE_KEY_RE, KeyPath

_METADATA_KEY = "tinv"


@dataclasses.dataclass(frozen=True)
class Rule:
    """A test a value must pass, and its wording: a value failing it "must be {text}"."""

    test: Callable[[Any], bool]
    text: str


def at_least(low: int) -> Rule:
    return Rule(lambda v: v >= low, "0 or more" if low == 0 else f"at least {low}")


def more_than(low: int) -> Rule:
    return Rule(lambda v: v > low, f"greater than {low}")


def between(low: int, high: int) -> Rule:
    return Rule(lambda v: low <= v <= high, f"between {low} and {high}")


NON_EMPTY = Rule(lambda v: v.strip() != "", "a non-empty string")


@dataclasses.dataclass(frozen=True)
class _Declared:
    """What ``setting()`` stores in the field's metadata; ``table_settings`` adds the rest from the field."""

    help: str
    rule: Rule | None
    example: Any


def setting(default: Any, help: str, rule: Rule | None = None, *, example: Any = None) -> Any:
    """A dataclass field that is a key of the project file; ``default`` is ``dataclasses.MISSING`` for none.

    ``help`` is written once for the template's comment and the option's ``--help``; ``example`` is the value
    the template shows where the default cannot be written (a key with no default, or a default of None).
    """
    declared = _Declared(help, rule, example)
    return dataclasses.field(default=default, metadata={_METADATA_KEY: declared})


@dataclasses.dataclass(frozen=True)
class Setting:
    """One key of a table: its name, TOML type, default (``dataclasses.MISSING``: none), help and rule."""

    name: str
    kind: type  # int, float, bool or str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    rule: Rule | None = None
    example: Any = None

    @property
    def writes_default(self) -> bool:
        """Whether the default is a value the file can hold (TOML has no None)."""
        return self.default is not None and self.default is not dataclasses.MISSING

    @property
    def shown(self) -> Any:
        """The value the template writes: the default, or the example where there is no default to write."""
        return self.default if self.writes_default else self.example

    @property
    def comment(self) -> str:
        """The help with its choices, as the template's comment shows it."""
        return self.help + (f" ({' | '.join(self.choices)})" if self.choices else "")

    @property
    def help_text(self) -> str:
        """The help as a sentence, and the rule in brackets as click shows a range: a command-line option's."""
        sentence = self.comment[:1].upper() + self.comment[1:] + "."
        return sentence + (f"  [{self.rule.text}]" if self.rule else "")


# How each annotation of a config field is written in TOML: a path is a string in the file.
_KINDS: dict[Any, type] = {int: int, float: float, bool: bool, str: str, Path: str}


def _kind(annotation: Any) -> tuple[type, tuple[str, ...]]:
    """The TOML type and choices of a field annotated ``annotation``; ``X | None`` is an X (None: not set)."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return str, tuple(typing.get_args(annotation))
    return _KINDS[annotation], ()


@functools.cache
def table_settings(table: type) -> Mapping[str, Setting]:
    """The settings of a config dataclass, in field order: the keys its table accepts."""
    hints = typing.get_type_hints(table)
    found: dict[str, Setting] = {}
    for f in dataclasses.fields(table):
        declared = f.metadata.get(_METADATA_KEY)
        if declared is None:  # not a key of the file (a concept's name is its table's name)
            continue
        kind, choices = _kind(hints[f.name])
        found[f.name] = Setting(
            f.name, kind, f.default, declared.help, choices, declared.rule, declared.example
        )
    return types.MappingProxyType(found)  # read-only: every caller shares this one


# ---------------------------------------------------------------------------------------------------------------
# The wording of problems.

_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def describe_value(value: Any) -> str:
    """A value as the user wrote it, with its TOML type: ``the string "3000"``, ``true``, ``a table``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {quote(value)}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, (int, float)):
        return str(value)
    return f"a date/time ({value})"


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _key_text(key: str) -> str:
    return key if BARE_KEY_RE.fullmatch(key) else quote(key)


def table_label(path: KeyPath) -> str:
    return "[" + ".".join(_key_text(k) for k in path) + "]"


def did_you_mean(word: str, options: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be a concept's placeholder, or None."""
    if len(token) < 3 or not token.startswith("<") or not token.endswith(">"):
        return f"token {quote(token)} must look like <cat-toy>: a word between < and >"
    if any(c.isspace() for c in token):
        return f"token {quote(token)} must not contain spaces"
    return check_token(token)


def check_value(setting: Setting, value: Any, *, on_command_line: bool = False) -> tuple[str | None, Any]:
    """(problem, value converted to the setting's type). The file and the command line share these rules;
    ``on_command_line`` words the problem for an option's value, which the user typed unquoted."""
    # bool is a subclass of int in Python, but `steps = true` is a mistake, not 1.
    kind = setting.kind
    type_ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, type_ok = float(value), True
    if not type_ok:
        return f"expected {_TYPE_NAMES[kind]}, found {describe_value(value)}", value
    if kind is float and not math.isfinite(value):
        return f"expected a finite number, found {value}", value
    if setting.choices and value not in setting.choices:
        close = did_you_mean(value, setting.choices)
        if on_command_line:
            return f"choose one of {', '.join(setting.choices)}{close}", value
        options = ", ".join(quote(c) for c in setting.choices)
        return f"{quote(value)} is not one of {options}{close}", value
    if setting.rule is not None and not setting.rule.test(value):
        found = "" if on_command_line else f", found {describe_value(value)}"
        return f"must be {setting.rule.text}{found}", value
    return None, value
