"""Option definitions shared by commands, so a flag means the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON to stdout.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
ProjectPath = Annotated[
    Path | None,
    typer.Option(
        "--project",
        "-p",
        help="The project file (default: concepts.toml here or in a parent folder, or $TINV_PROJECT).",
        dir_okay=False,
    ),
]
EntryRef = Annotated[
    str, typer.Argument(help="A registry entry: NAME, or NAME@VERSION for an earlier version.")
]
