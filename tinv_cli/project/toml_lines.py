"""Where each key of a TOML file is: a scanner for the subset of TOML structure that decides line numbers.

tomllib gives no positions, and every problem ``tinv check`` reports names its line."""

from __future__ import annotations

import re
import sys
from bisect import bisect_right
from collections.abc import Mapping

KeyPath = tuple[str, ...]
BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


# ---------------------------------------------------------------------------------------------------------------
# Where each key is: a scanner for the subset of TOML structure that decides line numbers.


def key_lines(text: str) -> dict[KeyPath, int]:
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
            match = BARE_KEY_RE.match(text, i)
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
    # Imported here: `tinv --help` imports this module (through the schema) but never scans a file.
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib

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


def line_of(lines: Mapping[KeyPath, int], path: KeyPath) -> int:
    """The line of ``path``, else of its nearest enclosing table or key (e.g. an inline table), else 0."""
    for k in range(len(path), 0, -1):
        if path[:k] in lines:
            return lines[path[:k]]
    return 0
