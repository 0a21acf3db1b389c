"""What a Hub command names: ``REPO_ID[@REVISION][:PATH]`` (or a copied web address), and repository ids."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from tinv_cli.errors import TinvError

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_REPO_ID_RE = re.compile(rf"\A(?:{_PART}/)?{_PART}\Z")
_REF_RE = re.compile(rf"\A(?P<repo>(?:{_PART}/)?{_PART})(?:@(?P<revision>[^:\s]+))?(?::(?P<path>\S.*))?\Z")
# A web address of a repository or a file in it, as copied from the browser.
_URL_RE = re.compile(
    rf"\Ahttps?://[^/]+/(?P<repo>{_PART}/{_PART})(?:/(?:blob|resolve|tree)/(?P<revision>[^/]+)(?:/(?P<path>.+))?)?/?\Z"
)
COMMIT_RE = re.compile(r"\A[0-9a-f]{40}\Z")

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


def check_repo_id(repo: str) -> None:
    """Raise TinvError unless ``repo`` is a repository id (``NAMESPACE/NAME`` or ``NAME``)."""
    if not _REPO_ID_RE.match(repo):
        raise TinvError(
            f"{repo!r} is not a repository id", "write NAMESPACE/NAME with letters, digits, '-', '_' and '.'"
        )
