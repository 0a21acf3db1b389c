"""`tinv init` and `tinv check`: create and validate the project file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tinv_cli.cli.app import app
from tinv_cli.cli.options import Json, ProjectPath
from tinv_cli.cli.render import emit_json, note
from tinv_cli.project.config import Concept
from tinv_cli.project.schema import table_settings

# The concept options say what the keys they write say in the template, and take their defaults.
_TOKEN, _INITIALIZER, _KIND, _VECTORS = (
    table_settings(Concept)[key] for key in ("token", "initializer", "kind", "vectors")
)


@app.command()
def init(
    project: ProjectPath = None,
    concept: Annotated[
        str | None, typer.Option("--concept", help="Add a concept with this name to the project file.")
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Folder of the concept's training images (with --concept)."),
    ] = None,
    token: Annotated[str | None, typer.Option("--token", help=_TOKEN.help_text)] = None,
    initializer: Annotated[str | None, typer.Option("--initializer", help=_INITIALIZER.help_text)] = None,
    # No min/max for click: the new table is checked with the file's rules, as every table is.
    kind: Annotated[str, typer.Option("--kind", help=_KIND.help_text)] = _KIND.default,
    vectors: Annotated[int, typer.Option("--vectors", help=_VECTORS.help_text)] = _VECTORS.default,
) -> None:
    """Write a commented concepts.toml here, or add a concept to an existing one (--concept NAME --images DIR).

    Adding a concept appends it to the file and keeps every comment and line as it was.
    """
    from tinv_cli.errors import TinvError
    from tinv_cli.project.edit import add_concept, init_project
    from tinv_cli.project.load import PROJECT_FILE

    path = (project or Path(PROJECT_FILE)).resolve()
    if concept is None:
        if images is not None or token is not None or initializer is not None:
            raise TinvError("--images, --token and --initializer describe a concept", "add --concept NAME")
        init_project(path)
        note(f"Wrote {path}. Add a concept with: tinv init --concept NAME --images DIR --initializer WORD")
        return
    if images is None:
        raise TinvError("--concept needs --images DIR, the folder of its training images")
    created = not path.exists()
    if created:
        init_project(path)
    try:
        added = add_concept(
            path, concept, images, token=token, initializer=initializer, kind=kind, vectors=vectors
        )
    except TinvError:
        if created:  # leave the folder as it was: no half-made project
            path.unlink()
        raise
    if created:
        note(f"Wrote {path}")
    note(f"Added concept {added.name} ({added.token}) to {path}. Train it with: tinv train {added.name}")


@app.command()
def check(project: ProjectPath = None, json: Json = False) -> None:
    """Validate the project file, its image folders and tokens, and report every problem at once."""
    from tinv_cli.project.load import find_project, load_project
    from tinv_cli.project.tokens import check_project

    loaded = load_project(project.resolve() if project else find_project())
    notes = check_project(loaded)
    if json:
        emit_json(
            {
                "project": str(loaded.path),
                "ok": True,
                "concepts": sorted(loaded.concepts),
                "notes": notes,
            }
        )
        return
    for line in notes:
        note(f"Note: {line}")
    count = len(loaded.concepts)
    typer.echo(f"{loaded.path}: OK ({count} concept{'s' if count != 1 else ''})")
