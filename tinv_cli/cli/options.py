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

# How --model is read; the same flags on train, sample and eval.
Revision = Annotated[str | None, typer.Option("--revision", help="Hub revision of --model.")]
ModelConfigDir = Annotated[
    Path | None,
    typer.Option(
        "--model-config",
        file_okay=False,
        help="How a single-file --model is read: a diffusers-layout folder of its configs and tokenizers (no "
        "weights needed), for a checkpoint of an architecture tinv ships no configs for.",
    ),
]
Prediction = Annotated[
    str | None,
    typer.Option(
        "--prediction",
        help="What a single-file --model predicts: auto (a NAME.yaml beside it, a v_pred key, else SD 2.x "
        "v_prediction and SD 1.x/SDXL epsilon), epsilon or v_prediction.",
    ),
]
