"""Output helpers: data to stdout, messages to stderr. Rich is imported only when a table is drawn."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import typer


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def note(message: str) -> None:
    """A message for the person at the terminal (stderr, so stdout stays data)."""
    typer.echo(message, err=True)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    grid = Table(*columns, title=title, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    Console(soft_wrap=True).print(grid)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """A two-column list of labelled values."""
    width = max(len(label) for label, _ in pairs)
    for label, value in pairs:
        typer.echo(f"{label:<{width}}  {'' if value is None else value}")
