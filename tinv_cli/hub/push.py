"""``tinv push``: upload a registry entry to a Hub repository in the concepts library layout.

The upload is planned against the repository's listing, so an unchanged entry makes no commit."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tinv_cli.errors import FormatError, HubError, NotFoundError

if TYPE_CHECKING:
    from huggingface_hub.hf_api import RepoSibling

    from tinv_cli.registry.entry import Entry
    from tinv_cli.registry.store import Registry
from tinv_cli.formats.layout import (
    BIN_NAME,
    DIFFUSERS_DIR,
    IMAGES_DIR,
    KIND_FILE,
    README_FILE,
    SAFE_NAME,
    SECOND_NAME,
    TOKEN_FILE,
)
from tinv_cli.hub.errors import hub_errors, redact
from tinv_cli.hub.refs import Progress, check_repo_id

# What push uploads: exactly the concepts library files, plus the model card. The entry's INFO_FILE
# (provenance, local paths) stays local.
PUSHED_FILES = (
    SAFE_NAME,
    BIN_NAME,
    TOKEN_FILE,
    KIND_FILE,
    # SDXL entries: diffusers' learned_embeds / learned_embeds_2 pair, beside the {clip_l, clip_g} file.
    f"{DIFFUSERS_DIR}/{SAFE_NAME}",
    f"{DIFFUSERS_DIR}/{SECOND_NAME}",
)


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


def git_blob_id(data: bytes) -> str:
    """The git object id the Hub reports for a regular (non-LFS) file with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# Push


def _entry_files(entry: Entry, repo_id: str) -> dict[str, bytes]:
    """The repository content for ``entry``: its concepts library files and a model card naming ``repo_id``."""
    from tinv_cli.formats.contained import contained, contained_folder
    from tinv_cli.registry.modelcard import model_card

    # Only regular files really inside the entry are uploaded: a link (symbolic or hard) planted in the registry
    # would otherwise publish whatever it leads to. `contained` refuses it, naming the file.
    files: dict[str, bytes] = {}
    for name in PUSHED_FILES:
        path = entry.path / name
        if path.is_symlink() or path.exists():
            files[name] = contained(path, entry.path).read_bytes()
    if SAFE_NAME not in files:
        raise NotFoundError(
            f"{entry.ref}: {entry.path / SAFE_NAME} is missing",
            "the entry is incomplete; import it again",
        )
    images_dir = entry.path / IMAGES_DIR
    images = (
        sorted(p for p in images_dir.iterdir() if not p.name.startswith("."))
        if contained_folder(images_dir, entry.path) is not None
        else []
    )
    for image in images:
        files[f"{IMAGES_DIR}/{image.name}"] = contained(image, entry.path).read_bytes()
    # The card is rebuilt rather than copied so its usage snippets load from the repository it is pushed to;
    # it depends only on tinv.json and the image names, so an unchanged entry gives an identical card.
    info = {**entry.info, "hub": {"repo": repo_id}}
    files[README_FILE] = model_card(info, [f"{IMAGES_DIR}/{p.name}" for p in images]).encode("utf-8")
    return files


def _is_concept_file(path: str) -> bool:
    return path in PUSHED_FILES or path == README_FILE or path.startswith(f"{IMAGES_DIR}/")


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
    check_repo_id(repo_id)
    files = _entry_files(entry, repo_id)

    with hub_errors("push to", repo_id, token):
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
                    f"the Hub refused the model card of {entry.ref}: {redact(str(e).split(chr(10), 1)[-1], token)}",
                    f"check {entry.path / README_FILE}'s front matter",
                ) from None
            commit = done.oid
    entry = registry.update_info(entry, hub={"repo": repo_id, "revision": commit, "url": url})
    return PushResult(entry, repo_id, url, commit, tuple(changed), tuple(stale), info.private)


def _whoami(api: Any, token: str | None) -> str:
    with hub_errors("look up your user name", None, token):
        return str(api.whoami()["name"])
