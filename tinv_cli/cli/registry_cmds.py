"""Registry commands: home, list, show, rm, import, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tinv_cli.cli.app import app
from tinv_cli.cli.options import EntryRef, Json, Yes
from tinv_cli.cli.render import emit_json, fields, note, table


def _summary(entry: Any) -> dict[str, Any]:
    return {
        "name": entry.name,
        "version": entry.version,
        "token": entry.token,
        "kind": entry.kind,
        "vectors": entry.num_vectors,
        "widths": list(entry.widths),
        "family": entry.family,
        "source": entry.source_type,
        "created": entry.created,
        "path": str(entry.path),
    }


@app.command()
def home(json: Json = False) -> None:
    """Print where tinv keeps its registry ($TINV_HOME)."""
    from tinv_cli.registry.store import Registry

    paths = Registry().home_paths()
    if json:
        emit_json({key: str(value) for key, value in paths.items()})
    else:
        typer.echo(str(paths["home"]))


@app.command("list")
def list_entries(json: Json = False) -> None:
    """List the concepts in the registry (current version of each)."""
    from tinv_cli.registry.store import Registry

    registry = Registry()
    entries = registry.list()
    for ref in registry.unreadable():
        note(f"Note: {ref} is not listed: its tinv.json cannot be read (remove it with `tinv rm {ref}`)")
    if json:
        emit_json([_summary(entry) for entry in entries])
        return
    if not entries:
        note("The registry is empty. Add concepts with `tinv import FILE` (or train or pull them).")
        return
    table(
        ["name", "ver", "token", "kind", "vectors", "family", "source", "created"],
        [
            (
                e.name,
                e.version,
                e.token,
                e.kind,
                e.num_vectors,
                e.family or "?",
                e.source_type,
                (e.created or "")[:16],
            )
            for e in entries
        ],
    )


@app.command()
def show(ref: EntryRef, json: Json = False) -> None:
    """Show one registry entry: token, vectors, model family, provenance and files."""
    from tinv_cli.registry.store import Registry, parse_ref

    registry = Registry()
    entry = registry.get(ref)
    versions = [v.version for v in registry.versions(parse_ref(ref)[0])]
    if json:
        emit_json({**entry.info, "path": str(entry.path), "versions": versions})
        return
    from tinv_cli.families import describe_widths

    info = entry.info
    source = info.get("source") or {}
    rows: list[tuple[str, Any]] = [
        ("name", f"{entry.name}@{entry.version}"),
        ("versions", ", ".join(str(v) for v in versions)),
        ("token", entry.token),
        ("kind", entry.kind),
        ("vectors", entry.num_vectors),
        ("trained for", describe_widths(entry.widths)),
        ("source", ", ".join(f"{k}={v}" for k, v in source.items() if k != "meta" and v is not None)),
        ("base model", info.get("base_model")),
        ("sha256", entry.sha256),
        ("created", entry.created),
        ("images", info.get("images", 0)),
        ("path", entry.path),
    ]
    training = info.get("training")
    if training:
        rows += [(f"training.{k}", v) for k, v in training.items() if not isinstance(v, dict)]
    hub = info.get("hub")
    if hub:
        rows += [(f"hub.{k}", v) for k, v in hub.items()]
    fields(rows)


@app.command()
def rm(ref: EntryRef, yes: Yes = False) -> None:
    """Remove a concept (every version), or one version with NAME@VERSION."""
    from tinv_cli.registry.store import Registry, parse_ref

    registry = Registry()
    name, version = parse_ref(ref)
    # Versions whose tinv.json is unreadable are removable too: they are what `tinv list` warns about.
    broken = [b for b in registry.unreadable(name) if version is None or b == f"{name}@{version}"]
    readable = (
        [e.ref for e in registry.versions(name) if version is None or e.version == version]
        if registry.root.joinpath(name).is_dir()
        else []
    )
    doomed = sorted(readable + broken, key=lambda r: int(r.rpartition("@")[2]))
    if not doomed:
        registry.get(ref)  # raises the not-found error with its did-you-mean
    what = ", ".join(f"{r} (unreadable)" if r in broken else r for r in doomed)
    if not yes and not typer.confirm(f"Remove {what}?", default=False, err=True):
        note("Nothing removed.")
        return
    registry.remove(ref)
    note(f"Removed {', '.join(doomed)}")


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="An embedding file or a concepts library folder.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Registry name (default: from the token).")
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="Use this token instead of the file's.")
    ] = None,
    kind: Annotated[
        str | None, typer.Option("--kind", help="object or style (default: the file's, else object).")
    ] = None,
    json: Json = False,
) -> None:
    """Import an embedding: diffusers, concepts library, AUTOMATIC1111, kohya or SDXL (clip_l/clip_g) files.

    The format is detected from the file's contents. Pickled files are opened with torch's weights-only
    loader: a file that would need to run code is refused.
    """
    from tinv_cli.families import describe_widths
    from tinv_cli.registry.store import Registry
    from tinv_cli.registry.transfer import import_file

    result = import_file(Registry(), path, name=name, token=token, kind=kind)
    entry = result.entry
    if result.shared_with and result.resolves_to is not None:
        # On stderr with --json too: the clash changes what later prompts mean.
        others = ", ".join(other.ref for other in result.shared_with)
        used = result.resolves_to
        mine = "this entry" if used.name == entry.name else f"{used.ref}, not this one"
        note(
            f"Note: token {entry.token} is also the token of {others}; in a prompt {entry.token} now means "
            f"{mine}; write <{entry.name}> for this one, or import it with --token to rename it"
        )
    if json:
        emit_json(
            {
                **_summary(entry),
                "format": result.format,
                "shared_with": [other.ref for other in result.shared_with],
            }
        )
        return
    typer.echo(f"{entry.name}@{entry.version}")
    note(
        f"Imported {entry.token} ({result.format}, {entry.num_vectors} vector"
        f"{'s' if entry.num_vectors != 1 else ''}, {describe_widths(entry.widths)}) as "
        f"{entry.name}@{entry.version}"
    )


@app.command()
def export(
    ref: EntryRef,
    format: Annotated[
        str, typer.Option("--format", "-f", help="diffusers, a1111, kohya or concepts-library.")
    ] = "diffusers",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (or folder) to write (default: ./NAME.<ext>).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output.")] = False,
    json: Json = False,
) -> None:
    """Write a registry entry in another tool's format."""
    from tinv_cli.registry.store import Registry
    from tinv_cli.registry.transfer import export_entry

    entry = Registry().get(ref)
    written = export_entry(entry, format, output, force=force)
    if json:
        emit_json(
            {"entry": f"{entry.name}@{entry.version}", "format": format, "files": [str(p) for p in written]}
        )
        return
    for path in written:
        typer.echo(str(path))
