"""``tinv pull``: a concepts library or diffusers textual inversion repository, or one embedding file of any
repository, into the registry.

Everything goes through huggingface_hub's public API (``snapshot_download``), so the client's own handling of
``HF_TOKEN`` and the saved login, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and the Hugging Face cache applies
unchanged. A repository is laid out like a registry entry, so a downloaded snapshot is read with
``detect.read`` like any local folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli.errors import HubError, NotFoundError

if TYPE_CHECKING:
    from tinv_cli.registry.entry import Entry
    from tinv_cli.registry.store import Registry
from tinv_cli.formats.layout import BIN_NAME, IMAGES_DIR, KIND_FILE, SAFE_NAME, SECOND_NAME, TOKEN_FILE
from tinv_cli.hub.errors import endpoint, hub_errors
from tinv_cli.hub.refs import COMMIT_RE, Progress, RepoRef, parse_repo_ref

# What pull fetches from a whole repository: the concept, never the checkpoints or logs that may sit beside it.
# The list is fixed (not chosen from the remote listing) so an offline pull asks the cache for the same files.
PULL_PATTERNS = (SAFE_NAME, BIN_NAME, SECOND_NAME, TOKEN_FILE, KIND_FILE, f"{IMAGES_DIR}/*")
EMBEDDING_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class PullResult:
    entry: Entry
    repo: str
    commit: str
    path: str | None
    format: str
    offline: bool  # served from the Hugging Face cache because HF_HUB_OFFLINE is set
    already: bool  # the registry already held this very commit under this name: nothing was added


# Pull


def sweep_partial_downloads(repo_id: str) -> int:
    """Delete the ``*.incomplete`` files a killed download left in ``repo_id``'s Hugging Face cache folder, and
    return how many.

    huggingface_hub writes a file to ``blobs/<etag>[.<random>].incomplete`` while it holds the OS file lock
    ``.locks/<repo folder>/<etag>.lock``; the OS lets go of that lock when the process dies, even by SIGKILL. A
    file whose lock can be taken at once therefore has no live writer. Taking the lock also keeps a download
    that starts meanwhile from writing under the sweep.
    """
    from filelock import FileLock, Timeout
    from huggingface_hub import constants

    folder = "models" + constants.REPO_ID_SEPARATOR + repo_id.replace("/", constants.REPO_ID_SEPARATOR)
    cache = Path(constants.HF_HUB_CACHE)
    swept = 0
    for partial in sorted((cache / folder / "blobs").glob("*.incomplete")):
        etag = partial.name.split(".", 1)[0]
        lock = FileLock(cache / ".locks" / folder / f"{etag}.lock")
        try:
            lock.acquire(blocking=False)
        except Timeout:
            continue  # a live download holds it
        except OSError:
            continue  # the locks folder is not writable here: leave the file to whoever can lock it
        try:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
                swept += 1
        finally:
            lock.release()
    return swept


def _candidates(repo_id: str, commit: str) -> list[str]:
    """Embedding-like files of the repository, from the listing the client cached while downloading."""
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    try:
        tree = get_cached_repo_tree(repo_id, revision=commit)
    except CachedRepoTreeNotFoundError:
        return []
    return sorted(f.path for f in tree if f.path.lower().endswith(EMBEDDING_SUFFIXES))


def _no_embedding(ref: RepoRef, commit: str) -> NotFoundError:
    found = [p for p in _candidates(ref.repo_id, commit) if p != ref.path]
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        hint = f"it holds {shown}; pull one file with `tinv pull {ref.repo_id}:{found[0]}`"
    else:
        hint = "pull a textual inversion repository, or one embedding file with REPO_ID:path/in/repo.pt"
    if ref.path:
        return NotFoundError(f"{ref.repo_id} has no file {ref.path!r} at {commit[:12]}", hint)
    return NotFoundError(
        f"no embedding in {ref.repo_id} at {commit[:12]}: it has no {SAFE_NAME} or {BIN_NAME}",
        hint,
    )


def _already_pulled(registry: Registry, name: str, source: Mapping[str, Any]) -> Entry | None:
    with contextlib.suppress(NotFoundError):
        current = registry.get(name)
        held = current.info.get("source") or {}
        if all(held.get(key) == source[key] for key in ("type", "repo", "revision", "path")):
            return current
    return None


def pull(
    registry: Registry,
    ref: str | RepoRef,
    *,
    name: str | None = None,
    token: str | None = None,
    progress: Progress | None = None,
) -> PullResult:
    """Download a concepts library or diffusers textual inversion repository, or one embedding file of any
    repository, validate it and add it to the registry with its provenance (repository and commit id).

    With ``HF_HUB_OFFLINE`` set the files come from the Hugging Face cache. Nothing is added when anything
    fails; pulling the same commit under the same name again adds nothing either.
    """
    from huggingface_hub import is_offline_mode, snapshot_download

    from tinv_cli.formats import detect
    from tinv_cli.names import name_from_token

    report = progress or (lambda _text: None)
    target = parse_repo_ref(ref) if isinstance(ref, str) else ref
    offline = is_offline_mode()
    patterns = [target.path] if target.path else list(PULL_PATTERNS)
    swept = sweep_partial_downloads(target.repo_id)
    if swept:
        report(f"Removed {swept} partial download(s) of {target.repo_id} left in the Hugging Face cache")
    report(f"Fetching {target}" + (" from the Hugging Face cache (HF_HUB_OFFLINE)" if offline else ""))
    with hub_errors("pull", target.repo_id, token, target):
        folder = Path(
            snapshot_download(target.repo_id, revision=target.revision, allow_patterns=patterns, token=token)
        )
    # The cache keeps each commit's files in snapshots/<commit id>/, whatever revision named it.
    commit = folder.name
    if not COMMIT_RE.match(commit):
        raise HubError(
            f"unexpected Hugging Face cache layout at {folder}", "update huggingface_hub and try again"
        )
    source_path = folder / target.path if target.path else folder
    if target.path and not source_path.is_file():
        raise _no_embedding(target, commit)
    if not target.path and not any((folder / n).is_file() for n in (SAFE_NAME, BIN_NAME)):
        raise _no_embedding(target, commit)

    # The snapshot's files are symlinks into the repository's own cache folder (models--OWNER--NAME/blobs):
    # legitimate there, and nowhere else.
    imported = detect.read(source_path, root=folder.parent.parent)
    entry_name = name or name_from_token(imported.embedding.token)
    source = {
        "type": "pulled",
        "repo": target.repo_id,
        "revision": commit,
        "path": target.path,
        "format": imported.format,
        "meta": imported.meta,
    }
    held = _already_pulled(registry, entry_name, source)
    if held is not None:
        return PullResult(held, target.repo_id, commit, target.path, imported.format, offline, True)
    entry = registry.add(
        entry_name,
        imported.embedding,
        kind=imported.kind or "object",
        source=source,
        images=imported.images,
        hub={"repo": target.repo_id, "revision": commit, "url": f"{endpoint()}/{target.repo_id}"},
    )
    return PullResult(entry, target.repo_id, commit, target.path, imported.format, offline, False)
