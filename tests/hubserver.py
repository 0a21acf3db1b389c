"""A local Hugging Face Hub: the part of the Hub's HTTP protocol that `tinv push`, `pull` and `search` use.

Tests run the real ``huggingface_hub`` client (through tinv, in a subprocess) against this server; nothing in
the client is patched. The answers follow what the client reads, checked against huggingface_hub 2.4.0
(``CLIENT_VERSION``; its httpx2 client) in ``hf_api.py``, ``_commit_api.py``, ``file_download.py``,
``_snapshot_download.py``, ``utils/_http.py`` (``hf_raise_for_status``) and ``utils/_pagination.py``:

======================================================  =============================================
``GET  /api/whoami-v2``                                 ``HfApi.whoami``
``POST /api/repos/create``                              ``create_repo`` (409 when it exists: exist_ok)
``POST /api/validate-yaml``                             ``create_commit`` of a README.md
``POST /api/models/NS/NAME/preupload/REV``              ``_fetch_upload_modes``: always "regular"
``POST /api/models/NS/NAME/commit/REV``                 ``_send_commit`` (NDJSON)
``GET  /api/models/NS/NAME[/revision/REV]``             ``model_info`` / ``repo_info`` (``blobs=true``)
``GET  /api/models/NS/NAME/tree/REV[/PATH]``            ``list_repo_tree`` (Link-header pages)
``HEAD|GET /NS/NAME/resolve/REV/PATH``                  ``hf_hub_download``: X-Repo-Commit, ETag, size
``GET  /api/models?search=&author=&limit=``             ``list_models`` (Link-header pages)
======================================================  =============================================

Storage is in memory and git-less: a commit is a full snapshot ``{path: bytes}`` whose id is a sha1 hex,
and a file's ETag and ``oid`` are its git blob sha1, as for regular (non-LFS) files on the Hub. Preupload
always answers ``"regular"`` and resolve responses carry no ``X-Xet-*`` headers or ``xet-auth`` links, so
the client never takes the LFS or Xet upload and download paths; an ``lfsFile`` commit line is refused.

Errors carry ``X-Error-Code`` / ``X-Error-Message`` as the Hub sends them: an unknown or private repository
is ``RepoNotFound`` (401 without a token, 404 with one), a gated repository's files are ``GatedRepo``
(401 / 403), a bad token is 401 "Invalid credentials in Authorization header", a missing revision or file
is ``RevisionNotFound`` / ``EntryNotFound``. Token values are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import yaml

CLIENT_VERSION = "2.4.0"

_NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,95}\Z")
_OID_RE = re.compile(r"\A[0-9a-f]{40}\Z")
_FRONT_MATTER_RE = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|\Z)", re.DOTALL)
_GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
)
_BAD_TOKEN = "Invalid credentials in Authorization header"


def git_blob_oid(data: bytes) -> str:
    """The git object id of a file's content: what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Commit:
    oid: str
    parent: str | None
    title: str
    date: str
    files: Mapping[str, bytes]


@dataclass
class Repo:
    repo_id: str
    private: bool
    gated: bool
    created_at: str
    granted: set[str] = field(default_factory=set)
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)


@dataclass(frozen=True)
class User:
    name: str
    orgs: tuple[str, ...]

    def can_write(self, namespace: str) -> bool:
        return namespace == self.name or namespace in self.orgs


class HubHTTPError(Exception):
    """An error answer: status, message, and the X-Error-Code the client dispatches on."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})  # more fields of the JSON body


def _repo_not_found(user: User | None) -> HubHTTPError:
    # The Hub answers an anonymous caller 401 for a repository it may not see, missing or private alike.
    return HubHTTPError(401 if user is None else 404, "Repository not found", "RepoNotFound")


class LocalHub:
    """The in-memory Hub and its HTTP server on 127.0.0.1 (a free port), run in a thread.

    ``with LocalHub() as hub:`` starts it; ``hub.endpoint`` is what HF_ENDPOINT should be. Tests seed content
    directly with ``add_user``, ``create_repo`` and ``commit``, and read it back with ``files`` and ``head``.
    """

    def __init__(self, *, page_size: int = 50) -> None:
        self.page_size = page_size
        self._lock = threading.RLock()
        self._users: dict[str, User] = {}
        self._repos: dict[str, Repo] = {}
        self._counter = 0
        # (method, path, authenticated) for every request; tokens themselves are never kept.
        self.requests: list[tuple[str, str, bool]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle

    def start(self) -> LocalHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("the local hub is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # Seeding and inspection (no HTTP)

    def add_user(self, name: str, token: str, orgs: tuple[str, ...] = ()) -> None:
        with self._lock:
            self._users[token] = User(name, tuple(orgs))

    def create_repo(
        self, repo_id: str, *, private: bool = False, gated: bool = False, granted: tuple[str, ...] = ()
    ) -> Repo:
        """A new repository whose first commit holds a .gitattributes, as on the Hub."""
        with self._lock:
            if repo_id in self._repos:
                raise ValueError(f"{repo_id} exists")
            repo = Repo(repo_id, private, gated, _now(), set(granted))
            self._repos[repo_id] = repo
            self._commit(repo, "main", {".gitattributes": _GITATTRIBUTES}, "initial commit")
            return repo

    def commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        *,
        deletes: tuple[str, ...] = (),
        message: str = "Upload files",
        branch: str = "main",
    ) -> str:
        """Add or replace ``files`` and remove ``deletes`` in one commit on ``branch``; the new commit id."""
        with self._lock:
            repo = self._repos[repo_id]
            head = repo.commits[repo.branches[branch]]
            snapshot = {k: v for k, v in head.files.items() if k not in deletes}
            snapshot.update(files)
            return self._commit(repo, branch, snapshot, message).oid

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        with self._lock:
            commit = self._repos[repo_id].resolve(revision)
            if commit is None:
                raise KeyError(revision)
            return dict(commit.files)

    def head(self, repo_id: str, branch: str = "main") -> str:
        with self._lock:
            return self._repos[repo_id].branches[branch]

    def commit_count(self, repo_id: str) -> int:
        with self._lock:
            return len(self._repos[repo_id].commits)

    def has_repo(self, repo_id: str) -> bool:
        with self._lock:
            return repo_id in self._repos

    def is_private(self, repo_id: str) -> bool:
        with self._lock:
            return self._repos[repo_id].private

    def _commit(self, repo: Repo, branch: str, files: Mapping[str, bytes], title: str) -> Commit:
        self._counter += 1
        parent = repo.branches.get(branch)
        listing = sorted((path, git_blob_oid(data)) for path, data in files.items())
        digest = json.dumps([repo.repo_id, parent, title, self._counter, listing]).encode()
        commit = Commit(hashlib.sha1(digest).hexdigest(), parent, title, _now(), dict(files))
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit

    # Access rules

    def user_for(self, authorization: str | None) -> User | None:
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        user = self._users.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HubHTTPError(401, _BAD_TOKEN)
        return user

    def readable(self, repo_id: str, user: User | None) -> Repo:
        repo = self._repos.get(repo_id)
        if repo is None or (repo.private and (user is None or not user.can_write(repo.namespace))):
            raise _repo_not_found(user)
        return repo

    def check_files_access(self, repo: Repo, user: User | None) -> None:
        """Gated repositories show their metadata to everyone but their files only to granted users."""
        if not repo.gated:
            return
        if user is None:
            raise HubHTTPError(
                401, f"Access to model {repo.repo_id} is restricted. You must be authenticated.", "GatedRepo"
            )
        if user.name not in repo.granted and not user.can_write(repo.namespace):
            raise HubHTTPError(
                403,
                f"Access to model {repo.repo_id} is restricted and you are not in the authorized list.",
                "GatedRepo",
            )

    def writable(self, repo_id: str, user: User | None) -> Repo:
        if user is None:
            raise _repo_not_found(None)
        repo = self.readable(repo_id, user)
        if not user.can_write(repo.namespace):
            raise HubHTTPError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    # Endpoints (called with the lock held)

    def whoami(self, user: User | None) -> dict[str, Any]:
        if user is None:
            raise HubHTTPError(401, _BAD_TOKEN)
        return {
            "type": "user",
            "id": hashlib.sha1(user.name.encode()).hexdigest()[:24],
            "name": user.name,
            "fullname": user.name,
            "isPro": False,
            "orgs": [{"type": "org", "name": org, "roleInOrg": "write"} for org in user.orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}},
        }

    def create_repo_http(self, body: Mapping[str, Any], user: User | None) -> dict[str, Any]:
        if user is None:
            raise HubHTTPError(401, "You must be authenticated to create a repository")
        if body.get("type", "model") != "model":
            raise HubHTTPError(400, "the local hub only has model repositories")
        name = str(body.get("name") or "")
        namespace = str(body.get("organization") or user.name)
        if not _NAME_RE.match(name) or not _NAME_RE.match(namespace):
            raise HubHTTPError(400, f"Invalid repository name {namespace}/{name}")
        if not user.can_write(namespace):
            raise HubHTTPError(
                403, f"You don't have the rights to create a model under the namespace {namespace}"
            )
        repo_id = f"{namespace}/{name}"
        url = f"{self.endpoint}/{repo_id}"
        if repo_id in self._repos:
            # create_repo(exist_ok=True) reads the url from this 409 body.
            raise HubHTTPError(409, "You already created this model repo", extra={"url": url})
        private = body.get("visibility", "private" if body.get("private") else "public") == "private"
        self.create_repo(repo_id, private=private)
        return {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]}

    def validate_yaml(self, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        content = str(body.get("content") or "")
        match = _FRONT_MATTER_RE.match(content)
        if match is None:
            return 200, {
                "errors": [],
                "warnings": [{"message": "empty or missing yaml metadata in repo card"}],
            }
        try:
            metadata = yaml.safe_load(match.group(1))
        except yaml.YAMLError as e:
            return 400, {"errors": [{"message": f"Invalid YAML in the metadata: {e}"}], "warnings": []}
        errors = _metadata_errors(metadata)
        return (400 if errors else 200), {"errors": [{"message": m} for m in errors], "warnings": []}

    def preupload(self, repo: Repo, revision: str, body: Mapping[str, Any]) -> dict[str, Any]:
        head = self._branch_head(repo, revision)
        files = body.get("files")
        if not isinstance(files, list):
            raise HubHTTPError(400, "files must be a list")
        answer = []
        for item in files:
            path = _checked_path(item.get("path"))
            existing = head.files.get(path)
            answer.append(
                {
                    "path": path,
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_oid(existing) if existing is not None else None,
                }
            )
        return {"files": answer, "commitOid": head.oid}

    def commit_http(self, repo: Repo, revision: str, payload: bytes) -> dict[str, Any]:
        head = self._branch_head(repo, revision)
        lines = [json.loads(line) for line in payload.decode("utf-8").splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubHTTPError(400, "the first NDJSON line must be the commit header")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and parent != head.oid:
            raise HubHTTPError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubHTTPError(400, "file content must be base64")
                files[_checked_path(value.get("path"))] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                path = _checked_path(value.get("path"))
                if path not in files:
                    raise HubHTTPError(404, "A file with this name doesn't exist", "EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                prefix = _checked_path(value.get("path")).rstrip("/") + "/"
                files = {k: v for k, v in files.items() if not k.startswith(prefix)}
            elif key == "lfsFile":
                raise HubHTTPError(400, "the local hub takes regular uploads only (preupload said 'regular')")
            else:
                raise HubHTTPError(400, f"unknown commit operation {key!r}")
        commit = self._commit(repo, revision, files, str(header.get("summary") or "commit"))
        return {
            "success": True,
            "commitOid": commit.oid,
            "commitUrl": f"{self.endpoint}/{repo.repo_id}/commit/{commit.oid}",
            "hookOutput": "",
            "pullRequestUrl": None,
        }

    def model_info(self, repo: Repo, revision: str, blobs: bool) -> dict[str, Any]:
        commit = self._revision(repo, revision)
        card = _card_data(commit.files.get("README.md"))
        siblings = []
        for path in sorted(commit.files):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                data = commit.files[path]
                sibling.update(size=len(data), blobId=git_blob_oid(data))
            siblings.append(sibling)
        info = self._listing_item(repo, commit, card)
        info.update(
            disabled=False,
            gated="manual" if repo.gated else False,
            cardData=card,
            siblings=siblings,
            spaces=[],
            usedStorage=sum(len(d) for d in commit.files.values()),
        )
        return info

    def _listing_item(self, repo: Repo, commit: Commit, card: Mapping[str, Any]) -> dict[str, Any]:
        tags = [str(t) for t in card.get("tags") or [] if isinstance(t, str)]
        if isinstance(card.get("license"), str):
            tags.append(f"license:{card['license']}")
        return {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.namespace,
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "downloads": 0,
            "likes": 0,
            "library_name": card.get("library_name"),
            "tags": [*tags, "region:us"],
        }

    def tree(self, repo: Repo, revision: str, path: str, recursive: bool) -> list[dict[str, Any]]:
        commit = self._revision(repo, revision)
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in commit.files):
            raise HubHTTPError(
                404, f"{path} does not exist on {revision}", "EntryNotFound", {"X-Repo-Commit": commit.oid}
            )
        entries: dict[str, dict[str, Any]] = {}
        for file_path, data in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            rest = file_path[len(prefix) :].split("/")
            for depth in range(1, len(rest)):
                folder = prefix + "/".join(rest[:depth])
                entries.setdefault(folder, {"type": "directory", "oid": _tree_oid(commit, folder), "size": 0})
                if not recursive:
                    break
            else:
                entries[file_path] = {"type": "file", "oid": git_blob_oid(data), "size": len(data)}
        return [{**value, "path": key} for key, value in sorted(entries.items())]

    def list_models(self, query: Mapping[str, list[str]], user: User | None) -> list[dict[str, Any]]:
        search = (query.get("search") or [""])[0].lower()
        author = (query.get("author") or [None])[0]
        filters = query.get("filter") or []
        found = []
        for repo in sorted(self._repos.values(), key=lambda r: r.repo_id):
            if repo.private and (user is None or not user.can_write(repo.namespace)):
                continue
            if author and repo.namespace != author:
                continue
            if search and search not in repo.repo_id.lower():
                continue
            commit = repo.commits[repo.branches["main"]]
            item = self._listing_item(repo, commit, _card_data(commit.files.get("README.md")))
            if all(f in item["tags"] or f == item["library_name"] for f in filters):
                found.append(item)
        return found

    def resolve(self, repo: Repo, revision: str, path: str) -> tuple[Commit, bytes]:
        commit = self._revision(repo, revision)
        data = commit.files.get(path)
        if data is None:
            raise HubHTTPError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        return commit, data

    def _revision(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubHTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _branch_head(self, repo: Repo, revision: str) -> Commit:
        if revision not in repo.branches:
            raise HubHTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[repo.branches[revision]]


def _tree_oid(commit: Commit, folder: str) -> str:
    inside = sorted((p, git_blob_oid(d)) for p, d in commit.files.items() if p.startswith(folder + "/"))
    return hashlib.sha1(json.dumps(inside).encode()).hexdigest()


def _checked_path(path: Any) -> str:
    if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
        raise HubHTTPError(400, f"Invalid path {path!r}")
    if path.split("/")[0] == ".git":
        raise HubHTTPError(400, "Paths under .git/ are not allowed")
    return path


def _card_data(readme: bytes | None) -> dict[str, Any]:
    if readme is None:
        return {}
    match = _FRONT_MATTER_RE.match(readme.decode("utf-8", errors="replace"))
    if match is None:
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _metadata_errors(metadata: Any) -> list[str]:
    """The checks the Hub's metadata validation makes that a model card can get wrong."""
    if metadata is None:
        return []
    if not isinstance(metadata, dict):
        return ["The metadata must be a YAML mapping"]
    errors = []
    if "license" in metadata and not isinstance(metadata["license"], str):
        errors.append('"license" must be a string')
    for key in ("tags", "base_model"):
        value = metadata.get(key)
        if value is not None and not (
            isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            errors.append(f'"{key}" must be a string or a list of strings')
    return errors


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    headers: Mapping[str, str]


def _json_answer(status: int, data: Any, headers: Mapping[str, str] | None = None) -> _Answer:
    return _Answer(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})


class _Handler(BaseHTTPRequestHandler):
    """Routes a request to LocalHub under its lock, then writes the answer outside it."""

    hub: LocalHub
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects

    def log_message(self, format: str, *args: Any) -> None:
        pass  # LocalHub.requests is the log; the default would print every request to stderr

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        parts = [unquote(p) for p in split.path.split("/")[1:]]
        query = parse_qs(split.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        authorization = self.headers.get("Authorization")
        hub = self.hub
        try:
            with hub._lock:
                hub.requests.append((method, split.path, bool(authorization)))
                user = hub.user_for(authorization)
                answer = self._route(method, split.path, parts, query, body, user)
        except HubHTTPError as e:
            headers = {"X-Error-Message": e.message, **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            answer = _json_answer(e.status, {"error": e.message, **e.extra}, headers)
        self.send_response(answer.status)
        self.send_header("Content-Length", str(len(answer.body)))
        for key, value in answer.headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(answer.body)

    def _route(
        self,
        method: str,
        path: str,
        parts: list[str],
        query: dict[str, list[str]],
        body: bytes,
        user: User | None,
    ) -> _Answer:
        hub = self.hub
        if parts[:1] == ["api"]:
            rest = parts[1:]
            if method == "GET" and rest == ["agent-harnesses"]:
                # Fetched once a day by the client's agent detection; an empty registry detects nothing.
                return _json_answer(200, {"standardEnvVars": [], "harnesses": {}})
            if method == "GET" and rest == ["whoami-v2"]:
                return _json_answer(200, hub.whoami(user))
            if method == "POST" and rest == ["repos", "create"]:
                return _json_answer(200, hub.create_repo_http(json.loads(body or b"{}"), user))
            if method == "POST" and rest == ["validate-yaml"]:
                return _json_answer(*hub.validate_yaml(json.loads(body or b"{}")))
            if method == "GET" and rest == ["models"]:
                return self._page(path, hub.list_models(query, user), query)
            if len(rest) >= 3 and rest[0] == "models":
                repo_id = f"{rest[1]}/{rest[2]}"
                return self._route_repo(method, path, repo_id, rest[3:], query, body, user)
            raise HubHTTPError(404, "Not found")
        if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
            repo = hub.readable(f"{parts[0]}/{parts[1]}", user)
            hub.check_files_access(repo, user)
            commit, data = hub.resolve(repo, parts[3], "/".join(parts[4:]))
            return self._file(commit, data)
        raise HubHTTPError(404, "Not found")

    def _route_repo(
        self,
        method: str,
        path: str,
        repo_id: str,
        rest: list[str],
        query: dict[str, list[str]],
        body: bytes,
        user: User | None,
    ) -> _Answer:
        hub = self.hub
        blobs = _true(query.get("blobs"))
        if method == "GET" and not rest:
            return _json_answer(200, hub.model_info(hub.readable(repo_id, user), "main", blobs))
        if method == "GET" and len(rest) == 2 and rest[0] == "revision":
            return _json_answer(200, hub.model_info(hub.readable(repo_id, user), rest[1], blobs))
        if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
            repo = hub.readable(repo_id, user)
            entries = hub.tree(repo, rest[1], "/".join(rest[2:]), _true(query.get("recursive")))
            return self._page(path, entries, query)
        if method == "POST" and len(rest) == 2 and rest[0] in ("preupload", "commit"):
            if query.get("create_pr"):
                raise HubHTTPError(400, "the local hub has no pull requests")
            repo = hub.writable(repo_id, user)
            if rest[0] == "preupload":
                return _json_answer(200, hub.preupload(repo, rest[1], json.loads(body or b"{}")))
            return _json_answer(200, hub.commit_http(repo, rest[1], body))
        raise HubHTTPError(404, "Not found")

    def _page(self, path: str, items: list[dict[str, Any]], query: dict[str, list[str]]) -> _Answer:
        """One page of a listing, with a Link header to the next page, as the client's paginate() follows."""
        if query.get("limit"):
            items = items[: int(query["limit"][0])]
        cursor = int((query.get("cursor") or ["0"])[0])
        end = cursor + self.hub.page_size
        headers = {}
        if end < len(items):
            rest = {k: v for k, v in query.items() if k != "cursor"}
            rest["cursor"] = [str(end)]
            headers["Link"] = f'<{self.hub.endpoint}{path}?{urlencode(rest, doseq=True)}>; rel="next"'
        return _json_answer(200, items[cursor:end], headers)

    def _file(self, commit: Commit, data: bytes) -> _Answer:
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{git_blob_oid(data)}"',
            "X-Repo-Commit": commit.oid,
        }
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and 0 < int(match.group(1)) < len(data):
            start = int(match.group(1))
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return _Answer(206, data[start:], headers)
        return _Answer(200, data, headers)


def _true(values: list[str] | None) -> bool:
    return bool(values) and values[0].lower() in ("1", "true")
