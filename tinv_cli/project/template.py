"""The commented ``concepts.toml`` that ``tinv init`` writes, built from the settings of ``config.py``.

Every key appears with its default (or, where it has none to write, commented out with its example) and its
help as the comment, so the template cannot drift from what the loader accepts. Only the layout, the
comments about whole tables and the example concept's ``[train]`` override are written here.
"""

from __future__ import annotations

import math

from tinv_cli.project.config import Concept, HubConfig, ModelConfig, TrainConfig
from tinv_cli.project.schema import table_settings

# The column where the comments start, as in a hand-aligned file; a longer line gets its comment one space on.
_COMMENT_COLUMN = 30


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


def _float_text(value: float) -> str:
    """A float as a person writes it: ``0.5``, ``0.999``, and small values as ``5.0e-4``, not 0.0005."""
    if not math.isfinite(value):
        raise ValueError(f"{value} has no place in a template")
    if value == 0 or abs(value) >= 0.1:
        return repr(value)
    for digits in range(1, 17):  # the shortest mantissa that reads back as the same float
        mantissa, exponent = f"{value:.{digits}e}".split("e")
        if float(f"{mantissa}e{exponent}") == value:
            break
    return f"{mantissa}e{int(exponent)}"


def toml_value(value: object) -> str:
    """A setting's value as TOML text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, str):
        return toml_string(value)
    raise TypeError(f"no TOML text for {value!r}")


def _line(assignment: str, comment: str) -> str:
    return f"{assignment:<{_COMMENT_COLUMN}} # {comment}"


def _table_lines(table: type, *, commented: bool = False) -> list[str]:
    """One line per setting of ``table``; a key with no default to write is commented out (all when asked)."""
    lines = []
    for name, setting in table_settings(table).items():
        if setting.shown is None:
            raise ValueError(f"setting {table.__name__}.{name} has no default: give it an example")
        prefix = "# " if commented or not setting.writes_default else ""
        lines.append(_line(f"{prefix}{name} = {toml_value(setting.shown)}", setting.comment))
    return lines


def _template() -> str:
    return "\n".join(
        [
            "# tinv project file. Train a concept with `tinv train NAME`; check this file with `tinv check`.",
            "# Paths are relative to this file. Unknown keys are errors, so a misspelled setting is never ignored.",
            "",
            "[model]",
            *_table_lines(ModelConfig),
            "",
            "# Defaults for every concept: the diffusers textual inversion example's cat-toy recipe.",
            "# A concept overrides any of them in its own [concepts.NAME.train] table.",
            "[train]",
            *_table_lines(TrainConfig),
            "",
            "[hub]",
            *_table_lines(HubConfig),
            "",
            "# One table per concept; add one with `tinv init --concept NAME --images FOLDER --initializer WORD`.",
            "#",
            "# [concepts.cat-toy]",
            *_table_lines(Concept, commented=True),
            "#",
            _line("# [concepts.cat-toy.train]", "overrides of [train] for this concept"),
            "# steps = 2000",
            "",
        ]
    )


TEMPLATE = _template()
