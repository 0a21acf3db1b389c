"""Sharing concepts on the Hugging Face Hub: push a registry entry, pull a repository or one file, search.

Everything goes through huggingface_hub's public API (``HfApi``, ``snapshot_download``), so the client's own
handling of ``HF_TOKEN`` and the saved login, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and the Hugging Face cache
applies unchanged. The client's exceptions become tinv errors in one place, ``_hub_errors``, whose messages
never carry a token.

A repository is laid out like the public concepts library (``sd-concepts-library/*``), which is also how a
registry entry is laid out, so pushing uploads an entry's files and pulling reads a downloaded snapshot with
``formats.read`` like any local folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from tinv_cli.errors import FormatError, HubError, NotFoundError, TinvError

if TYPE_CHECKING:
    from huggingface_hub.hf_api import RepoSibling

    from tinv_cli.registry import Entry, Registry

DEFAULT_AUTHOR = "sd-concepts-library"

# What push uploads: exactly the concepts library files. tinv.json (provenance, local paths) stays local.
EMBEDDINGS = "learned_embeds.safetensors"
PUSHED_FILES = (
    EMBEDDINGS,
    "learned_embeds.bin",
    "token_identifier.txt",
    "type_of_concept.txt",
    # SDXL entries: diffusers' learned_embeds / learned_embeds_2 pair, beside the {clip_l, clip_g} file.
    "diffusers/learned_embeds.safetensors",
    "diffusers/learned_embeds_2.safetensors",
)
IMAGES_DIR = "concept_images"
README = "README.md"

# What pull fetches from a whole repository: the concept, never the checkpoints or logs that may sit beside it.
# The list is fixed (not chosen from the remote listing) so an offline pull asks the cache for the same files.
PULL_PATTERNS = (
    "learned_embeds.safetensors",
    "learned_embeds.bin",
    "learned_embeds_2.safetensors",
    "token_identifier.txt",
    "type_of_concept.txt",
    f"{IMAGES_DIR}/*",
)
EMBEDDING_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_REPO_ID_RE = re.compile(rf"\A(?:{_PART}/)?{_PART}\Z")
_REF_RE = re.compile(rf"\A(?P<repo>(?:{_PART}/)?{_PART})(?:@(?P<revision>[^:\s]+))?(?::(?P<path>\S.*))?\Z")
# A web address of a repository or a file in it, as copied from the browser.
_URL_RE = re.compile(
    rf"\Ahttps?://[^/]+/(?P<repo>{_PART}/{_PART})(?:/(?:blob|resolve|tree)/(?P<revision>[^/]+)(?:/(?P<path>.+))?)?/?\Z"
)
_COMMIT_RE = re.compile(r"\A[0-9a-f]{40}\Z")
# Hugging Face user tokens; a server message that echoes one must not reach the terminal.
_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{6,}")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RepoRef:
    """What ``tinv pull`` was asked for: ``REPO_ID[@REVISION][:PATH]``."""

    repo_id: str
    revision: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        text = self.repo_id + (f"@{self.revision}" if self.revision else "")
        return text + (f":{self.path}" if self.path else "")


@dataclass(frozen=True)
class PushResult:
    entry: Entry
    repo: str
    url: str
    commit: str
    changed: tuple[str, ...]  # files added or replaced by the commit
    deleted: tuple[str, ...]  # concept files the entry no longer has, removed from the repository
    private: bool | None

    @property
    def up_to_date(self) -> bool:
        return not self.changed and not self.deleted


@dataclass(frozen=True)
class PullResult:
    entry: Entry
    repo: str
    commit: str
    path: str | None
    format: str
    offline: bool  # served from the Hugging Face cache because HF_HUB_OFFLINE is set
    already: bool  # the registry already held this very commit under this name: nothing was added


@dataclass(frozen=True)
class SearchHit:
    repo_id: str
    downloads: int | None
    likes: int | None
    updated: str | None
    private: bool


def parse_repo_ref(text: str) -> RepoRef:
    """``sd-concepts-library/cat-toy``, ``...@REVISION``, ``...:path/in/repo.pt``, or the repository's URL."""
    text = text.strip()
    match = _URL_RE.match(text) or _REF_RE.match(text)
    if match is None:
        raise TinvError(
            f"{text!r} is not a Hub repository",
            "write NAMESPACE/NAME, optionally with @REVISION and :path/in/repo.pt, "
            "e.g. sd-concepts-library/cat-toy",
        )
    path = match.group("path")
    if path is not None:
        parts = PurePosixPath(path).parts
        if path.startswith("/") or ".." in parts or not parts:
            raise TinvError(
                f"{path!r} is not a file path inside a repository", "write it relative to the repo root"
            )
    return RepoRef(match.group("repo"), match.group("revision") or None, path or None)


def git_blob_id(data: bytes) -> str:
    """The git object id the Hub reports for a regular (non-LFS) file with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# Errors


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection failures of the HTTP library huggingface_hub uses (httpx2 in 2.x, httpx in 1.x)."""
    import importlib

    found: list[type[BaseException]] = []
    for module in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            found.append(importlib.import_module(module).TransportError)
    return tuple(found)


def _clean(text: str, token: str | None) -> str:
    """``text`` (a server message) with any token in it blanked out, cut to its first line."""
    from huggingface_hub import get_token

    for secret in (token, get_token()):
        if secret:
            text = text.replace(secret, "***")
    text = _TOKEN_RE.sub("hf_***", text)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _login_hint(token: str | None) -> str:
    from huggingface_hub import get_token

    if token or get_token():
        return "check the repository name, and that your token can read it"
    return "check the name; if the repository is private or gated, log in with `hf auth login`, set HF_TOKEN or pass --token"


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


@contextlib.contextmanager
def _hub_errors(
    action: str, repo: str | None, token: str | None, ref: RepoRef | None = None
) -> Iterator[None]:
    """Turn huggingface_hub's exceptions raised inside the block into one-line tinv errors."""
    from huggingface_hub import errors as hf
    from huggingface_hub import is_offline_mode

    where = f" {repo}" if repo else ""
    try:
        yield
    except hf.GatedRepoError:
        raise HubError(
            f"{repo} is gated: its files are shared only with people who accepted its conditions",
            f"accept them on {_endpoint()}/{repo} with your account, then pull with your token (HF_TOKEN or --token)",
        ) from None
    except hf.RepositoryNotFoundError:
        raise NotFoundError(f"repository {repo} not found on {_endpoint()}", _login_hint(token)) from None
    except hf.RevisionNotFoundError:
        revision = ref.revision if ref else None
        raise NotFoundError(
            f"{repo} has no revision {revision!r}", "use a branch, tag or commit id of the repository"
        ) from None
    except hf.RemoteEntryNotFoundError:
        path = ref.path if ref else None
        raise NotFoundError(f"{repo} has no file {path!r}", "check the path inside the repository") from None
    except hf.OfflineModeIsEnabled:
        raise HubError(
            f"cannot {action}{where}: HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE (or set it to 0)"
        ) from None
    except hf.LocalEntryNotFoundError as e:
        # The client looked in the cache because the Hub could not be asked (offline or unreachable).
        if is_offline_mode():
            raise HubError(
                f"HF_HUB_OFFLINE is set and {ref or repo} is not in the Hugging Face cache",
                "pull it once with the Hub reachable, or unset HF_HUB_OFFLINE",
            ) from None
        raise HubError(
            f"cannot reach the Hub at {_endpoint()}, and {ref or repo} is not in the Hugging Face cache",
            "check your connection (and HF_ENDPOINT if you set it), then try again",
        ) from e
    except hf.LocalTokenNotFoundError:
        raise HubError(
            f"cannot {action}{where}: no Hugging Face token",
            "log in with `hf auth login`, set HF_TOKEN or pass --token",
        ) from None
    except hf.HFValidationError as e:
        raise TinvError(f"{repo!r} is not a valid repository id ({_clean(str(e), token)})") from None
    except hf.HfHubHTTPError as e:
        raise _http_error(e, action, where, token) from None
    except _network_errors() as e:
        raise HubError(
            f"cannot reach the Hub at {_endpoint()} ({type(e).__name__})",
            "check your connection (and HF_ENDPOINT if you set it), then try again",
        ) from None


def _http_error(error: Any, action: str, where: str, token: str | None) -> HubError:
    status = error.response.status_code if error.response is not None else None
    detail = _clean(str(error.server_message or ""), token)
    if status == 401:
        return HubError(
            f"the Hub refused the token (401 {detail or 'unauthorized'})",
            "check HF_TOKEN or --token, or log in again with `hf auth login --force`",
        )
    if status == 403:
        return HubError(
            f"the Hub refused to {action}{where} (403 forbidden{': ' + detail if detail else ''})",
            "use a token with write access to that namespace, or push to your own with --repo NAMESPACE/NAME",
        )
    return HubError(
        f"the Hub answered {status} when asked to {action}{where}{': ' + detail if detail else ''}",
        "try again later; TINV_DEBUG=1 shows the full error",
    )


# Push


def _entry_files(entry: Entry, repo_id: str) -> dict[str, bytes]:
    """The repository content for ``entry``: its concepts library files and a model card naming ``repo_id``."""
    from tinv_cli.modelcard import model_card

    files: dict[str, bytes] = {}
    for name in PUSHED_FILES:
        path = entry.path / name
        if path.is_file():
            files[name] = path.read_bytes()
    if EMBEDDINGS not in files:
        raise NotFoundError(
            f"{entry.ref}: {entry.path / EMBEDDINGS} is missing",
            "the entry is incomplete; import it again",
        )
    images_dir = entry.path / IMAGES_DIR
    images = (
        sorted(p for p in images_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        if images_dir.is_dir()
        else []
    )
    for image in images:
        files[f"{IMAGES_DIR}/{image.name}"] = image.read_bytes()
    # The card is rebuilt rather than copied so its usage snippets load from the repository it is pushed to;
    # it depends only on tinv.json and the image names, so an unchanged entry gives an identical card.
    info = {**entry.info, "hub": {"repo": repo_id}}
    files[README] = model_card(info, [f"{IMAGES_DIR}/{p.name}" for p in images]).encode("utf-8")
    return files


def _is_concept_file(path: str) -> bool:
    return path in PUSHED_FILES or path == README or path.startswith(f"{IMAGES_DIR}/")


def _same(data: bytes, remote: RepoSibling) -> bool:
    # The Hub gives an LFS file's sha256 and a regular file's git blob id; compare whichever it has.
    if remote.lfs is not None:
        return remote.lfs.sha256 == hashlib.sha256(data).hexdigest()
    return remote.blob_id == git_blob_id(data)


def plan_push(files: Mapping[str, bytes], remote: Mapping[str, RepoSibling]) -> tuple[list[str], list[str]]:
    """(files to upload, concept files to delete) to make a repository holding ``remote`` match ``files``."""
    changed = [path for path, data in files.items() if path not in remote or not _same(data, remote[path])]
    stale = sorted(path for path in remote if _is_concept_file(path) and path not in files)
    return changed, stale


def _check_repo_id(repo: str) -> None:
    if not _REPO_ID_RE.match(repo):
        raise TinvError(
            f"{repo!r} is not a repository id", "write NAMESPACE/NAME with letters, digits, '-', '_' and '.'"
        )


def push(
    registry: Registry,
    ref: str,
    *,
    repo: str | None = None,
    namespace: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    message: str | None = None,
    progress: Progress | None = None,
) -> PushResult:
    """Upload registry entry ``ref`` to ``repo`` (default ``NAMESPACE/NAME``, the namespace defaulting to
    the logged-in user), creating the repository if needed, and record repo, commit and URL in its tinv.json.

    An entry already on the Hub unchanged makes no commit. ``private`` applies when the repository is created;
    asking for a private push into an existing public repository is refused rather than published.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token, is_offline_mode

    report = progress or (lambda _text: None)
    entry = registry.get(ref)
    if is_offline_mode():
        raise HubError(
            "cannot push: HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE (or set it to 0) to reach the Hub"
        )
    if not (token or get_token()):
        raise HubError(
            "pushing needs a Hugging Face token with write access",
            "log in with `hf auth login`, set HF_TOKEN, or pass --token",
        )
    api = HfApi(token=token)
    if repo is not None and "/" in repo:
        repo_id = repo
    else:
        repo_id = f"{namespace or _whoami(api, token)}/{repo or entry.name}"
    _check_repo_id(repo_id)
    files = _entry_files(entry, repo_id)

    with _hub_errors("push to", repo_id, token):
        url = str(api.create_repo(repo_id, private=private, exist_ok=True))
        info = api.model_info(repo_id, files_metadata=True)
        if private and info.private is False:
            raise HubError(
                f"{repo_id} already exists and is public; --private would not make this push private",
                "make the repository private on the Hub first, or push without --private",
            )
        remote = {sibling.rfilename: sibling for sibling in info.siblings or []}
        changed, stale = plan_push(files, remote)
        commit = str(info.sha)
        if changed or stale:
            report(
                f"Uploading {len(changed)} file(s) to {repo_id}"
                + (f", removing {len(stale)}" if stale else "")
            )
            operations: list[Any] = [CommitOperationAdd(path, files[path]) for path in changed]
            operations += [CommitOperationDelete(path) for path in stale]
            try:
                done = api.create_commit(
                    repo_id,
                    operations,
                    commit_message=message or f"Upload {entry.token} ({entry.ref}) with tinv",
                    parent_commit=commit,
                )
            except ValueError as e:
                # huggingface_hub checks README.md metadata with the Hub before uploading anything.
                if "metadata" not in str(e).lower():
                    raise
                raise FormatError(
                    f"the Hub refused the model card of {entry.ref}: {_clean(str(e).split(chr(10), 1)[-1], token)}",
                    f"check {entry.path / README}'s front matter",
                ) from None
            commit = done.oid
    entry = registry.update_info(entry, hub={"repo": repo_id, "revision": commit, "url": url})
    return PushResult(entry, repo_id, url, commit, tuple(changed), tuple(stale), info.private)


def _whoami(api: Any, token: str | None) -> str:
    with _hub_errors("find your user name on", None, token):
        return str(api.whoami()["name"])


# Pull


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
        f"no embedding in {ref.repo_id} at {commit[:12]}: it has no learned_embeds.safetensors or learned_embeds.bin",
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

    from tinv_cli import formats
    from tinv_cli.registry import name_from_token

    report = progress or (lambda _text: None)
    target = parse_repo_ref(ref) if isinstance(ref, str) else ref
    offline = is_offline_mode()
    patterns = [target.path] if target.path else list(PULL_PATTERNS)
    report(f"Fetching {target}" + (" from the Hugging Face cache (HF_HUB_OFFLINE)" if offline else ""))
    with _hub_errors("pull", target.repo_id, token, target):
        folder = Path(
            snapshot_download(target.repo_id, revision=target.revision, allow_patterns=patterns, token=token)
        )
    # The cache keeps each commit's files in snapshots/<commit id>/, whatever revision named it.
    commit = folder.name
    if not _COMMIT_RE.match(commit):
        raise HubError(
            f"unexpected Hugging Face cache layout at {folder}", "update huggingface_hub and try again"
        )
    source_path = folder / target.path if target.path else folder
    if target.path and not source_path.is_file():
        raise _no_embedding(target, commit)
    if not target.path and not any((folder / n).is_file() for n in (formats.SAFE_NAME, formats.BIN_NAME)):
        raise _no_embedding(target, commit)

    imported = formats.read(source_path)
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
        hub={"repo": target.repo_id, "revision": commit, "url": f"{_endpoint()}/{target.repo_id}"},
    )
    return PullResult(entry, target.repo_id, commit, target.path, imported.format, offline, False)


# Search


def search(
    text: str, *, author: str | None = DEFAULT_AUTHOR, limit: int = 20, token: str | None = None
) -> list[SearchHit]:
    """Models whose id contains ``text``, by ``author`` (None: anyone), most relevant first as the Hub ranks."""
    from huggingface_hub import HfApi, is_offline_mode

    if is_offline_mode():
        raise HubError("cannot search: HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE (or set it to 0)")
    api = HfApi(token=token)
    with _hub_errors("search", None, token):
        models = list(api.list_models(search=text or None, author=author or None, limit=limit))
    hits = []
    for model in models:
        when = model.last_modified or model.created_at
        hits.append(
            SearchHit(
                model.id,
                model.downloads,
                model.likes,
                when.strftime("%Y-%m-%d") if when else None,
                bool(model.private),
            )
        )
    return hits
