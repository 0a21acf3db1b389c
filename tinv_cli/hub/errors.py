"""huggingface_hub's exceptions, turned into one-line tinv errors whose messages never carry a token.

One map for every Hub call tinv makes: ``classify`` says what went wrong (a gated repository, no such repository,
revision or file, offline, not in the cache, no token, an invalid id, an HTTP status, no network), read from the
exception and the ones it was raised from. The words then depend on what tinv was doing: ``hub_errors`` says it
for ``tinv push``, ``pull`` and ``search`` (HubError, NotFoundError), ``model_download_error`` for downloading a
base model (ModelError). ``hub_errors`` and ``model_downloads`` are also where every Hub call gets its bounded wait
(``hub.http``), so no call can hang on a Hub that accepts the connection and never answers.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tinv_cli.errors import HubError, ModelError, NotFoundError, TinvError
from tinv_cli.hub.http import TIMEOUT_ENV, HubTimeout, bound_hub_requests
from tinv_cli.models.refs import _LOCAL_HINT

if TYPE_CHECKING:
    from tinv_cli.hub.refs import RepoRef

# Hugging Face user tokens; a server message that echoes one must not reach the terminal.
_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{6,}")
_NETWORK_HINT = "check your connection (and HF_ENDPOINT if you set it), then try again"


class Failure(enum.Enum):
    """What went wrong on the way to the Hub, in the order ``classify`` looks for it."""

    GATED = "gated"
    NO_REVISION = "no revision"
    NO_REPO = "no repository"
    NO_FILE = "no file"
    OFFLINE_NOT_CACHED = "offline, not cached"  # HF_HUB_OFFLINE is set and the cache lacks the files
    OFFLINE = "offline"  # HF_HUB_OFFLINE is set and a request was about to be made
    NO_TOKEN = "no token"
    INVALID_ID = "invalid id"
    TIMEOUT = "timeout"  # the Hub sent nothing for TINV_HUB_TIMEOUT seconds (hub.http)
    HTTP = "http"  # the Hub answered with an error status
    UNREACHABLE_NOT_CACHED = (
        "unreachable, not cached"  # the Hub could not be asked and the cache lacks the files
    )
    NETWORK = "network"  # the connection itself failed


@dataclass(frozen=True)
class HubFailure:
    kind: Failure
    error: BaseException  # the exception that shows it, somewhere in the chain of the one raised
    status: int | None = None  # the Hub's HTTP status, when it answered


def _network_errors(name: str = "TransportError") -> tuple[type[BaseException], ...]:
    """Connection failures (or the kind ``name``) of the HTTP library huggingface_hub uses (httpx2 in 2.x, httpx
    in 1.x)."""
    import importlib

    found: list[type[BaseException]] = []
    for module in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            found.append(getattr(importlib.import_module(module), name))
    return tuple(found)


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def classify(exc: BaseException) -> HubFailure | None:
    """What ``exc`` says went wrong with the Hub, or None when it is not a Hub, cache or network problem.

    The whole chain counts: diffusers wraps the Hub's error in its own OSError (sometimes twice), and
    huggingface_hub raises a cache miss from the HTTP or connection error that made it look in the cache. The
    first kind of ``Failure`` (in its order) that any exception of the chain shows wins, so a Hub that answered
    500 is reported as that, not as the cache miss it led to.
    """
    from huggingface_hub import errors as hf
    from huggingface_hub import is_offline_mode

    chain = _chain(exc)
    offline = is_offline_mode()
    rules: list[tuple[Failure, tuple[type[BaseException], ...]]] = [
        (Failure.GATED, (hf.GatedRepoError,)),
        (Failure.NO_REVISION, (hf.RevisionNotFoundError,)),
        (Failure.NO_REPO, (hf.RepositoryNotFoundError,)),
        (Failure.NO_FILE, (hf.RemoteEntryNotFoundError,)),
        (Failure.OFFLINE_NOT_CACHED, (hf.LocalEntryNotFoundError,) if offline else ()),
        (Failure.OFFLINE, (hf.OfflineModeIsEnabled,)),
        (Failure.NO_TOKEN, (hf.LocalTokenNotFoundError,)),
        (Failure.INVALID_ID, (hf.HFValidationError,)),
        (Failure.TIMEOUT, (HubTimeout,)),
        (Failure.HTTP, (hf.HfHubHTTPError,)),
        # Without network the client falls back to the cache and raises this when the file is not there,
        # whichever HTTP library reported the failure underneath.
        (Failure.UNREACHABLE_NOT_CACHED, (hf.LocalEntryNotFoundError,)),
        (Failure.NETWORK, (ConnectionError, TimeoutError, *_network_errors())),
    ]
    for kind, types in rules:
        found = next((e for e in chain if types and isinstance(e, types)), None)
        if found is not None:
            response = getattr(found, "response", None) if isinstance(found, hf.HfHubHTTPError) else None
            return HubFailure(kind, found, response.status_code if response is not None else None)
    return None


def redact(text: str, token: str | None) -> str:
    """``text`` (a server message) with any token in it blanked out, cut to its first line."""
    from huggingface_hub import get_token

    for secret in (token, get_token()):
        if secret:
            text = text.replace(secret, "***")
    text = _TOKEN_RE.sub("hf_***", text)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def endpoint() -> str:
    """The Hub tinv talks to: huggingface.co, or HF_ENDPOINT."""
    from huggingface_hub import constants

    return constants.ENDPOINT


# Words for push, pull and search


def _login_hint(token: str | None) -> str:
    from huggingface_hub import get_token

    if token or get_token():
        return "check the repository name, and that your token can read it"
    return "check the name; if the repository is private or gated, log in with `hf auth login`, set HF_TOKEN or pass --token"


def timeout_message(timeout: HubTimeout) -> str:
    """What a ``HubTimeout`` says happened: no answer at all, or an answer that stopped mid-file."""
    if timeout.path:
        return (
            f"the Hub at {timeout.host} stopped answering while sending {timeout.path}: "
            f"nothing arrived for {timeout.seconds:g} s"
        )
    return f"the Hub at {timeout.host} did not answer within {timeout.seconds:g} s"


def _longer(timeout: HubTimeout) -> str:
    return f"{TIMEOUT_ENV}={max(120.0, 4 * timeout.seconds):g} waits longer (now {timeout.seconds:g} s)"


def _http_error(failure: HubFailure, action: str, where: str, token: str | None) -> HubError:
    status = failure.status
    detail = redact(str(getattr(failure.error, "server_message", None) or ""), token)
    said = f": {detail}" if detail else ""
    if status == 401:
        return HubError(
            f"the Hub refused the token (401 {detail or 'unauthorized'})",
            "check HF_TOKEN or --token, or log in again with `hf auth login --force`",
        )
    if status == 403:
        if action.startswith("push"):
            hint = "use a token with write access to that namespace, or push to your own with --repo NAMESPACE/NAME"
        else:
            hint = "your token may not have access: check HF_TOKEN or --token (`hf auth whoami` shows whose it is)"
        return HubError(f"the Hub refused to {action}{where} (403 forbidden{said})", hint)
    if status == 429:
        return HubError(
            f"the Hub is limiting requests (429 too many requests) and did not {action}{where}{said}",
            "wait a few minutes, then try again",
        )
    if status is not None and status >= 500:
        return HubError(
            f"the Hub at {endpoint()} had a server error ({status}) when asked to {action}{where}{said}",
            "the fault is on the Hub's side: trying again later may help; TINV_DEBUG=1 shows the full error",
        )
    return HubError(
        f"the Hub answered {status} when asked to {action}{where}{said}",
        "try again later; TINV_DEBUG=1 shows the full error",
    )


def _hub_command_error(
    failure: HubFailure, action: str, repo: str | None, token: str | None, ref: RepoRef | None
) -> TinvError:
    """The error ``tinv push/pull/search`` reports for ``failure`` while it tried to ``action`` ``repo``."""
    where = f" {repo}" if repo else ""
    kind = failure.kind
    if kind is Failure.GATED:
        return HubError(
            f"{repo} is gated: its files are shared only with people who accepted its conditions",
            f"accept them on {endpoint()}/{repo} with your account, then pull with your token (HF_TOKEN or --token)",
        )
    if kind is Failure.NO_REPO:
        return NotFoundError(f"repository {repo} not found on {endpoint()}", _login_hint(token))
    if kind is Failure.NO_REVISION:
        revision = ref.revision if ref else None
        return NotFoundError(
            f"{repo} has no revision {revision!r}", "use a branch, tag or commit id of the repository"
        )
    if kind is Failure.NO_FILE:
        path = ref.path if ref else None
        return NotFoundError(f"{repo} has no file {path!r}", "check the path inside the repository")
    if kind is Failure.OFFLINE:
        return HubError(
            f"cannot {action}{where}: HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE (or set it to 0)"
        )
    if kind is Failure.OFFLINE_NOT_CACHED:
        return HubError(
            f"HF_HUB_OFFLINE is set and {ref or repo} is not in the Hugging Face cache",
            "pull it once with the Hub reachable, or unset HF_HUB_OFFLINE",
        )
    if kind is Failure.UNREACHABLE_NOT_CACHED:
        return HubError(
            f"cannot reach the Hub at {endpoint()}, and {ref or repo} is not in the Hugging Face cache",
            _NETWORK_HINT,
        )
    if kind is Failure.NO_TOKEN:
        return HubError(
            f"cannot {action}{where}: no Hugging Face token",
            "log in with `hf auth login`, set HF_TOKEN or pass --token",
        )
    if kind is Failure.INVALID_ID:
        return TinvError(f"{repo!r} is not a valid repository id ({redact(str(failure.error), token)})")
    if kind is Failure.TIMEOUT and isinstance(failure.error, HubTimeout):
        cache = "; HF_HUB_OFFLINE=1 pulls from the Hugging Face cache" if action == "pull" else ""
        return HubError(
            f"{timeout_message(failure.error)} when asked to {action}{where}",
            f"try again later; {_longer(failure.error)}{cache}",
        )
    if kind is Failure.HTTP:
        return _http_error(failure, action, where, token)
    if isinstance(failure.error, _network_errors("RemoteProtocolError")):
        # Reached, but it hung up (or spoke something other than HTTP): not the user's connection.
        return HubError(
            f"the Hub at {endpoint()} closed the connection without answering when asked to {action}{where}",
            "try again later; check HF_ENDPOINT if you set it",
        )
    return HubError(f"cannot reach the Hub at {endpoint()} ({type(failure.error).__name__})", _NETWORK_HINT)


@contextlib.contextmanager
def hub_errors(
    action: str, repo: str | None, token: str | None, ref: RepoRef | None = None
) -> Iterator[None]:
    """Turn huggingface_hub's exceptions raised inside the block into one-line tinv errors.

    ``action`` completes "cannot ..." ("pull", "push to"); tinv's own errors and anything that is not a Hub
    problem pass through unchanged. The Hub's exception stays the cause, for ``TINV_DEBUG=1`` tracebacks.
    Requests in the block wait at most ``TINV_HUB_TIMEOUT`` seconds for the Hub (``hub.http``).
    """
    bound_hub_requests()
    _quiet_client()
    try:
        yield
    except TinvError:
        raise
    except Exception as exc:
        failure = classify(exc)
        if failure is None:
            raise
        raise _hub_command_error(failure, action, repo, token, ref) from exc


def _quiet_client() -> None:
    """Keep huggingface_hub's retry notices ("HTTP Error 500 thrown while requesting ...", one per try) off the
    terminal: the command ends with its own one-line error. ``TINV_DEBUG=1`` leaves them on."""
    if os.environ.get("TINV_DEBUG") == "1":
        return
    from huggingface_hub.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


# Words for a base model's download


def model_download_error(base: str, revision: str | None, exc: BaseException) -> ModelError | None:
    """The ModelError that explains a failed download of model ``base``, or None when ``exc`` is not a Hub,
    cache or network problem (the caller re-raises it then)."""
    failure = classify(exc)
    if failure is None:
        return None
    page = f"https://huggingface.co/{base}"
    kind = failure.kind
    if kind is Failure.GATED:
        return ModelError(
            f"{base} is a gated model and this Hugging Face account has not been granted access",
            f"accept the licence on {page} while logged in, then run `hf auth login` (or set HF_TOKEN)",
        )
    if kind is Failure.NO_REVISION:
        return ModelError(
            f"{base} has no revision {revision!r}", f"check the revision against {page}/tree/main"
        )
    if kind is Failure.NO_REPO:
        return ModelError(
            f"no model {base!r} on the Hugging Face Hub (or it is private and this account cannot see it)",
            f"check the id; for a private model run `hf auth login`; {_LOCAL_HINT}",
        )
    if kind in (Failure.OFFLINE, Failure.OFFLINE_NOT_CACHED):
        return ModelError(
            f"{base} is not in the Hugging Face cache and HF_HUB_OFFLINE is set, so it cannot be downloaded",
            f"unset HF_HUB_OFFLINE to download it once (it is cached afterwards), {_LOCAL_HINT}",
        )
    if kind is Failure.NO_TOKEN:
        return ModelError(
            f"downloading {base} needs a Hugging Face token", "run `hf auth login` (or set HF_TOKEN)"
        )
    if kind is Failure.INVALID_ID:
        return ModelError(f"{base!r} is not a Hugging Face model id", f"write ORG/NAME, {_LOCAL_HINT}")
    if kind is Failure.TIMEOUT and isinstance(failure.error, HubTimeout):
        return ModelError(
            f"{timeout_message(failure.error)} while downloading {base}",
            f"try again later; {_longer(failure.error)}; HF_HUB_OFFLINE=1 loads it from the cache if it is there",
        )
    if kind in (Failure.HTTP, Failure.NO_FILE):  # a missing file is the Hub's 404
        if failure.status in (401, 403):
            return ModelError(
                f"the Hugging Face Hub refused access to {base} (HTTP {failure.status})",
                f"run `hf auth login` with a token that can read it, and accept its licence on {page}",
            )
        if failure.status is not None and failure.status >= 500:
            return ModelError(
                f"the Hugging Face Hub had a server error (HTTP {failure.status}) while {base} was downloaded",
                "the fault is on the Hub's side: trying again later may help",
            )
        return ModelError(
            f"the Hugging Face Hub answered HTTP {failure.status} for {base}", "try again later"
        )
    return ModelError(
        f"could not reach the Hugging Face Hub to download {base}, and it is not in the cache",
        f"check the network connection (and HF_ENDPOINT if set), {_LOCAL_HINT}",
    )


@contextlib.contextmanager
def model_downloads(base: str, revision: str | None) -> Iterator[None]:
    """Download base model ``base`` inside the block: each request bounded by ``TINV_HUB_TIMEOUT``, and a Hub,
    cache or network failure raised as the ModelError ``model_download_error`` words for it."""
    bound_hub_requests()
    try:
        yield
    except TinvError:
        raise
    except Exception as exc:
        error = model_download_error(base, revision, exc)
        if error is None:
            raise
        raise error from exc
