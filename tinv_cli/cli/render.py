"""Output helpers: data to stdout, messages to stderr. Rich is imported only when a table is drawn."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import typer


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def sentence(message: str) -> str:
    """``message`` with its first letter capitalised when it starts with a word ("loading ..." -> "Loading ..."),
    and as it is when it starts with a name ("my-sd15.safetensors: ..." keeps the file's spelling)."""
    first = message.split(" ", 1)[0]
    return message[:1].upper() + message[1:] if first.isalpha() and first.islower() else message


def note(message: str) -> None:
    """A message for the person at the terminal (stderr, so stdout stays data)."""
    typer.echo(message, err=True)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Left-aligned columns two spaces apart, the header in bold on a terminal.

    Drawn by hand rather than with rich's Table, which spends about two seconds measuring 500 rows: `tinv list`
    should take a fraction of a second with a large registry. Widths count terminal cells, so wide characters
    in a token line up too; long lines are left to the terminal to wrap.
    """
    import sys

    from rich.cells import cell_len

    cells = [[str(column) for column in columns]]
    cells += [["" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(cell_len(line[i]) for line in cells) for i in range(len(columns))]

    def line(values: list[str]) -> str:
        padded = [
            value + " " * (width - cell_len(value)) for value, width in zip(values, widths, strict=True)
        ]
        return "  ".join(padded).rstrip()

    header = line(cells[0])
    typer.echo(typer.style(header, bold=True) if sys.stdout.isatty() else header)
    for values in cells[1:]:
        typer.echo(line(values))


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """A two-column list of labelled values."""
    width = max(len(label) for label, _ in pairs)
    for label, value in pairs:
        typer.echo(f"{label:<{width}}  {'' if value is None else value}")
