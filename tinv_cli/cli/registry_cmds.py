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
        "family_label": entry.family_label,
        "source": entry.source_type,
        "created": entry.created,
        "path": str(entry.path),
    }


def _a1111_hash(entry: Any) -> str | None:
    """The short hash A1111 shows for the entry's file (12 hex digits), or None for an embedding A1111 cannot
    load (a layout of a model it does not run)."""
    from tinv_cli.errors import TinvError
    from tinv_cli.registry.transfer import a1111_hash

    try:
        return a1111_hash(entry)
    except TinvError:
        return None


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
                e.family_label or "?",
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
    short_hash = _a1111_hash(entry)
    if json:
        emit_json({**entry.info, "path": str(entry.path), "versions": versions, "a1111_hash": short_hash})
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
        ("family", entry.family_label or "?"),
        ("trained for", describe_widths(entry.widths)),
        ("source", ", ".join(f"{k}={v}" for k, v in source.items() if k != "meta" and v is not None)),
        ("base model", info.get("base_model")),
        ("sha256", entry.sha256),
        ("a1111 hash", short_hash),
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


_IMPORT_HELP = """Import an embedding file, a concepts library folder, or every embedding in a folder.

A file or a concepts library folder becomes one entry (or the next version of one); a LoRA file that bundles
embeddings becomes one entry each. Formats are told from the contents: diffusers ({token: tensor}, .bin or
.safetensors; an SDXL pair NAME.safetensors + NAME_2.safetensors), the concepts library layout,
AUTOMATIC1111 (.pt, and .png/.webp image embeddings: a1111-png), kohya (emb_params; modelspec metadata
read), SDXL (clip_l/clip_g), OneTrainer (emp_params, clip_l/clip_g), Flux (clip_l/t5) and LoRA-bundled
embeddings (bundle_emb.*).

Any other folder is a UI's embeddings folder (stable-diffusion-webui/embeddings, ComfyUI/models/embeddings,
...): every .pt, .bin, .safetensors, .png and .webp file under it is imported, subfolders too, each entry
named after its file stem (the UI's trigger word). Files that are not embeddings by name (notes, configs,
NAME.preview.png, hidden files) are skipped and counted; a file that cannot be read is reported with its
reason and the rest are imported (exit 1 at the end); a file already in the registry counts as unchanged.

Pickled files are opened with torch's weights-only loader: a file that would need to run code is refused.
"""


@app.command("import", help=_IMPORT_HELP)
def import_(
    path: Annotated[
        Path, typer.Argument(help="An embedding file, a concepts library folder, or a folder of embeddings.")
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="Registry name (default: from the token); one file only.")
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="Use this token instead of the file's; one file only.")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="object, style or negative (default: the file's, else object)."),
    ] = None,
    json: Json = False,
) -> None:
    from tinv_cli.families import describe_widths
    from tinv_cli.registry.folder_import import is_one_concept
    from tinv_cli.registry.store import Registry
    from tinv_cli.registry.transfer import import_file

    if path.is_dir() and not is_one_concept(path):
        _import_folder(path, name=name, token=token, kind=kind, json=json)
        return
    first = import_file(Registry(), path, name=name, token=token, kind=kind)
    # A LoRA file bundling several embeddings adds one entry each: the first, then the rest.
    results = [first, *first.also]
    for result in results:
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
        described = [
            {
                **_summary(result.entry),
                "format": result.format,
                "shared_with": [other.ref for other in result.shared_with],
                "a1111_hash": _a1111_hash(result.entry),
            }
            for result in results
        ]
        emit_json({**described[0], "also": described[1:]} if len(described) > 1 else described[0])
        return
    for result in results:
        entry = result.entry
        typer.echo(entry.ref)
        short_hash = _a1111_hash(entry)
        note(
            f"Imported {entry.token} ({result.format}, {entry.num_vectors} vector"
            f"{'s' if entry.num_vectors != 1 else ''}, {describe_widths(entry.widths)}) as "
            f"{entry.ref}" + (f"; A1111 hash {short_hash}" if short_hash else "")
        )


def _import_folder(
    folder: Path, *, name: str | None, token: str | None, kind: str | None, json: bool
) -> None:
    from tinv_cli.errors import RegistryError
    from tinv_cli.registry import folder_import as fi
    from tinv_cli.registry.store import Registry

    if name is not None or token is not None:
        raise RegistryError(
            f"--name and --token name one entry; {folder} is a folder of embeddings",
            "import the files one at a time to name them, or leave the names to the file stems",
        )

    def rel(path: Path) -> str:
        return path.relative_to(folder).as_posix() if path != folder else "."

    def heard(result: fi.FileResult) -> None:
        # As each file is done: the entries on stdout (data), the failures on stderr.
        if result.status == fi.FAILED:
            note(f"Failed {rel(result.path)}: {fi.reason(result)}")
        elif result.status == fi.IMPORTED and result.entry is not None and not json:
            typer.echo(result.entry.ref)

    report = fi.import_folder(Registry(), folder, kind=kind, on_result=heard)
    for result in report.results:
        if result.shared_with and result.entry is not None:
            note(
                f"Note: token {result.entry.token} of {result.entry.ref} is also the token of "
                f"{', '.join(result.shared_with)}; write <{result.entry.name}> for this one"
            )
    if json:
        emit_json(
            {
                "folder": str(folder),
                **{
                    status: report.count(status)
                    for status in (fi.IMPORTED, fi.UNCHANGED, fi.FAILED, fi.SKIPPED)
                },
                "results": [
                    {
                        "path": rel(r.path),
                        "status": r.status,
                        "entry": r.entry.ref if r.entry is not None else None,
                        "a1111_hash": _a1111_hash(r.entry) if r.entry is not None else None,
                        "format": r.format,
                        "reason": fi.reason(r) if r.status == fi.FAILED else None,
                        "files": [rel(p) for p in r.files],
                        "shared_with": list(r.shared_with),
                    }
                    for r in report.results
                ],
            }
        )
    counts = [f"Imported {report.count(fi.IMPORTED)}"]
    if report.count(fi.UNCHANGED):
        counts.append(f"unchanged {report.count(fi.UNCHANGED)} (already in the registry)")
    counts += [f"failed {report.count(fi.FAILED)}", f"skipped {report.count(fi.SKIPPED)} (not embeddings)"]
    note(", ".join(counts))
    if report.failed:
        note(
            "Hint: fix or remove the files that failed and run the import again; the rest are in the registry"
        )
        raise typer.Exit(1)


_EXPORT_HELP = """Write a registry entry in another tool's format, or every entry into a UI's embeddings folder.

tinv export NAME -f FORMAT [-o PATH] writes one entry: diffusers, a1111 (NAME.safetensors; -o NAME.pt for
A1111's pickle), a1111-png (an image embedding), kohya or concepts-library; safetensors files carry modelspec
metadata.

tinv export --all --to DIR --for a1111|forge|comfyui|invokeai writes the current version of every entry into
DIR as NAME.safetensors (emb_params for SD 1.x/2.x, clip_l/clip_g for SDXL), the file stem being the trigger
word: AUTOMATIC1111 and Forge prompts write NAME, ComfyUI's embedding:NAME, InvokeAI's <NAME>. A manifest in DIR
(.tinv-export.json) records what tinv wrote, so a second run writes only what changed, removes the files of
entries removed from the registry, and never touches a file tinv did not write or one changed since: those are
reported (exit 1), as are two entries whose names differ only in case.
"""


@app.command(help=_EXPORT_HELP)
def export(
    ref: Annotated[
        str | None,
        typer.Argument(help="A registry entry: NAME, or NAME@VERSION for an earlier version."),
    ] = None,
    format: Annotated[
        str | None,
        typer.Option(
            "--format", "-f", help="diffusers (default), a1111, a1111-png, kohya or concepts-library."
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (or folder) to write (default: ./NAME.<ext>).")
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Every entry (its current version), into --to for --for.")
    ] = False,
    to: Annotated[Path | None, typer.Option("--to", help="With --all: the UI's embeddings folder.")] = None,
    for_: Annotated[
        str | None, typer.Option("--for", help="With --all: a1111, forge, comfyui or invokeai.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing output; with --all, rewrite tinv's own files."),
    ] = False,
    json: Json = False,
) -> None:
    from tinv_cli.errors import RegistryError
    from tinv_cli.registry.store import Registry
    from tinv_cli.registry.transfer import export_entry

    if all_ or to is not None or for_ is not None:
        if not all_ or ref is not None or format is not None or output is not None:
            raise RegistryError(
                "--to and --for go with --all (every entry), without NAME, -f or -o",
                "run tinv export --all --to DIR --for a1111, or tinv export NAME -f FORMAT -o PATH",
            )
        if to is None or for_ is None:
            raise RegistryError(
                "--all needs --to (the UI's embeddings folder) and --for (which UI)",
                "e.g. tinv export --all --to stable-diffusion-webui/embeddings --for a1111",
            )
        _export_to_ui(to, for_, force=force, json=json)
        return
    if ref is None:
        raise RegistryError("name the entry to export, or pass --all", "see tinv export --help")
    fmt = format or "diffusers"
    entry = Registry().get(ref)
    written = export_entry(entry, fmt, output, force=force)
    if json:
        emit_json(
            {"entry": f"{entry.name}@{entry.version}", "format": fmt, "files": [str(p) for p in written]}
        )
        return
    for path in written:
        typer.echo(str(path))


def _export_to_ui(folder: Path, ui_id: str, *, force: bool, json: bool) -> None:
    from tinv_cli.registry import ui_export as ux
    from tinv_cli.registry.store import Registry

    report = ux.export_to_ui(Registry(), folder, ux.ui_named(ui_id), force=force)
    if json:
        emit_json(
            {
                "folder": str(folder),
                "ui": report.ui.id,
                "files": [
                    {
                        "file": o.file,
                        "entry": o.entry,
                        "action": o.action,
                        "message": o.message,
                        "sha256": o.sha256,
                        # What A1111 and Forge show as the embedding's hash (and write in "TI hashes").
                        "short_hash": o.sha256[:12] if o.sha256 else None,
                    }
                    for o in report.outcomes
                ],
            }
        )
    for outcome in report.outcomes:
        if outcome.action in (ux.WRITTEN, ux.UPDATED) and not json:
            typer.echo(str(folder / outcome.file))
        elif outcome.action == ux.REMOVED:
            note(f"Removed {outcome.file} ({outcome.entry} is no longer in the registry)")
        elif outcome.action == ux.LEFT:
            note(f"Left {outcome.file}: {outcome.message} ({outcome.entry} is no longer in the registry)")
        elif outcome.action in ux.CONFLICTS:
            note(f"Skipped {outcome.file} ({outcome.entry}): {outcome.message}")
    done = [
        f"{report.count(action)} {action}"
        for action in (ux.WRITTEN, ux.UPDATED, ux.REMOVED)
        if report.count(action)
    ]
    up_to_date = f"{report.count(ux.UP_TO_DATE)} up to date"
    note(f"{', '.join(done)}, {up_to_date}" if done else f"Nothing written: {up_to_date}")
    named = next((o.entry for o in report.outcomes if o.action not in ux.CONFLICTS and o.entry), None)
    if named and not report.conflicts:
        example = named.rpartition("@")[0]
        note(f"In {report.ui.label} prompts, write {report.ui.prompt.format(name=example)}")
    if report.conflicts:
        note(
            f"Hint: {len(report.conflicts)} file(s) were not written; rename or move the files named, "
            "or the entries (tinv import --name), and run the export again"
        )
        raise typer.Exit(1)
