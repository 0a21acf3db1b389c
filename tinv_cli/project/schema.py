"""What each key of ``concepts.toml`` accepts: its type and its allowed values, and the wording of problems."""

from __future__ import annotations

import difflib
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_args

from tinv_cli.embedding import MAX_VECTORS, check_token
from tinv_cli.project.config import (
    LR_SCHEDULERS,
    Init,
    Kind,
    MixedPrecision,
)

if sys.version_info >= (3, 11):
    pass
else:
    pass

from tinv_cli.project.toml_lines import _BARE_KEY_RE, KeyPath

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
