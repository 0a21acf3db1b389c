"""Hub commands: push, pull, search. Tokens come from --token, HF_TOKEN or the saved `hf auth login`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from tinv_cli.cli.app import app, report
from tinv_cli.cli.options import EntryRef, Json, Yes
from tinv_cli.cli.render import emit_json, fields, note, table
from tinv_cli.errors import TinvError
from tinv_cli.hub.http import DEFAULT_TIMEOUT, TIMEOUT_ENV
from tinv_cli.hub.search import DEFAULT_AUTHOR

if TYPE_CHECKING:
    from tinv_cli.hub.pull import PullResult
    from tinv_cli.hub.search import SearchHit

Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="Hugging Face token (default: HF_TOKEN, else the one saved by `hf auth login`).",
        show_default=False,
    ),
]
Author = Annotated[str, typer.Option("--author", help="Only concepts by this user or organization.")]
AnyAuthor = Annotated[bool, typer.Option("--any-author", help="Search every author's models.")]
Limit = Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many results.")]
# The one bound on every Hub request (tinv_cli/hub/http.py), shown under each Hub command's help.
HUB_EPILOG = (
    f"Each request waits at most {TIMEOUT_ENV} seconds (default {DEFAULT_TIMEOUT:g}) for the Hub to answer "
    f"or send more; set {TIMEOUT_ENV}=120 on a slow link."
)


def _project_hub() -> tuple[str | None, bool]:
    """The [hub] namespace and private setting of the project file here, if there is one."""
    from tinv_cli.errors import NotFoundError
    from tinv_cli.project.load import find_project, load_project

    try:
        path = find_project()
    except NotFoundError:
        return None, False
    project = load_project(path, check_images=False)
    return project.hub.namespace, project.hub.private


@app.command(epilog=HUB_EPILOG)
def push(
    ref: EntryRef,
    repo: Annotated[
        str | None,
        typer.Option(
            "--repo",
            help="Target repository NAMESPACE/NAME (default: the project's [hub] namespace, else your user, "
            "and the entry's name).",
        ),
    ] = None,
    private: Annotated[
        bool | None,
        typer.Option(
            "--private/--public",
            help="Visibility of a repository this push creates (default: the project's [hub] private, else public).",
            show_default=False,
        ),
    ] = None,
    token: Token = None,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Commit message.")] = None,
    json: Json = False,
) -> None:
    """Publish a registry entry to the Hugging Face Hub in the concepts library layout.

    Uploads learned_embeds.safetensors, learned_embeds.bin, token_identifier.txt, type_of_concept.txt,
    concept_images/ and a README.md model card; provenance (tinv.json) stays local. Creates the repository if
    needed. Pushing an entry that is already there unchanged makes no commit.
    """
    from tinv_cli.hub.push import push as push_entry
    from tinv_cli.registry.store import Registry

    namespace, project_private = (None, False) if repo and "/" in repo else _project_hub()
    if private is None and project_private:
        private = True
    result = push_entry(
        Registry(),
        ref,
        repo=repo,
        namespace=namespace,
        private=private,
        token=token,
        message=message,
        progress=note,
    )
    if json:
        emit_json(
            {
                "entry": result.entry.ref,
                "repo": result.repo,
                "url": result.url,
                "commit": result.commit,
                "changed": list(result.changed),
                "deleted": list(result.deleted),
                "up_to_date": result.up_to_date,
                "private": result.private,
            }
        )
        return
    if result.up_to_date:
        note(f"{result.repo} is already up to date at {result.commit}; nothing pushed.")
    else:
        note(f"Pushed {result.entry.ref} to {result.repo} ({len(result.changed)} file(s) uploaded).")
    fields([("url", result.url), ("commit", result.commit)])


def _pull_summary(result: PullResult) -> dict[str, Any]:
    entry = result.entry
    return {
        "entry": entry.ref,
        "token": entry.token,
        "kind": entry.kind,
        "repo": result.repo,
        "commit": result.commit,
        "path": result.path,
        "format": result.format,
        "added": not result.already,
        "path_in_registry": str(entry.path),
    }


def _show_hits(hits: list[SearchHit]) -> None:
    table(
        ["repo", "downloads", "likes", "updated"],
        [(h.repo_id + (" (private)" if h.private else ""), h.downloads, h.likes, h.updated) for h in hits],
    )


@app.command(epilog=HUB_EPILOG)
def pull(
    refs: Annotated[
        list[str] | None,
        typer.Argument(
            help="REPO_ID, REPO_ID@REVISION, or REPO_ID:path/in/repo.pt for one embedding file of any repository.",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Registry name (default: from the token); one REPO_ID only.")
    ] = None,
    token: Token = None,
    search_text: Annotated[
        str | None,
        typer.Option("--search", help="Pull the concepts `tinv search TEXT` lists, after confirming."),
    ] = None,
    author: Author = DEFAULT_AUTHOR,
    any_author: AnyAuthor = False,
    limit: Limit = 10,
    yes: Yes = False,
    json: Json = False,
) -> None:
    """Fetch concepts from the Hugging Face Hub into the registry.

    Reads concepts library repositories, diffusers textual inversion repositories (learned_embeds.safetensors)
    and single AUTOMATIC1111, kohya or SDXL files. With HF_HUB_OFFLINE=1, pulls are served from the
    Hugging Face cache.
    """
    from tinv_cli.hub import pull, search
    from tinv_cli.registry.store import Registry

    wanted = list(refs or [])
    if search_text is not None:
        if wanted:
            raise TinvError("pass REPO_IDs or --search TEXT, not both")
        hits = search.search(search_text, author=None if any_author else author, limit=limit, token=token)
        if not hits:
            note(f"No concepts match {search_text!r}; nothing pulled.")
            return
        _show_hits(hits)
        if not yes and not typer.confirm(f"Pull these {len(hits)} concept(s)?", default=False, err=True):
            note("Nothing pulled.")
            return
        wanted = [h.repo_id for h in hits]
    if not wanted:
        raise TinvError(
            "nothing to pull", "pass a REPO_ID such as sd-concepts-library/cat-toy, or --search TEXT"
        )
    if name is not None and len(wanted) > 1:
        raise TinvError(
            "--name names one concept, but several repositories were given", "pull them one by one"
        )

    registry = Registry()
    results: list[PullResult] = []
    failed = 0
    for ref in wanted:
        try:
            result = pull.pull(registry, ref, name=name, token=token, progress=note)
        except TinvError as error:
            if len(wanted) == 1:
                raise
            report(error)
            failed += 1
            continue
        results.append(result)
        entry = result.entry
        where = f"{result.repo}@{result.commit[:12]}" + (f":{result.path}" if result.path else "")
        if result.already:
            note(f"{entry.ref} already holds {where}; nothing added.")
        else:
            note(f"Pulled {entry.token} ({result.format}) from {where} as {entry.ref}")
        if not json:
            typer.echo(entry.ref)
    if json:
        emit_json([_pull_summary(r) for r in results])
    if failed:
        raise TinvError(f"{failed} of {len(wanted)} pulls failed (see above)")


@app.command(epilog=HUB_EPILOG)
def search(
    text: Annotated[str, typer.Argument(help="Words in the repository name, e.g. cat.")] = "",
    author: Author = DEFAULT_AUTHOR,
    any_author: AnyAuthor = False,
    limit: Limit = 20,
    token: Token = None,
    json: Json = False,
) -> None:
    """List concepts on the Hugging Face Hub (by default in the sd-concepts-library organization)."""
    from tinv_cli.hub.search import search as search_hub

    hits = search_hub(text, author=None if any_author else author, limit=limit, token=token)
    if json:
        emit_json(
            [
                {"repo": h.repo_id, "downloads": h.downloads, "likes": h.likes, "updated": h.updated}
                for h in hits
            ]
        )
        return
    if not hits:
        note(f"No concepts match {text!r}" + ("" if any_author else f" by {author}") + ".")
        return
    _show_hits(hits)
