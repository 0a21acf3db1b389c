"""huggingface_hub's exceptions, turned into one-line tinv errors whose messages never carry a token."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from tinv_cli.errors import HubError, ModelError, NotFoundError, TinvError
from tinv_cli.models.refs import _LOCAL_HINT

if TYPE_CHECKING:
    from tinv_cli.hub.refs import RepoRef

# Hugging Face user tokens; a server message that echoes one must not reach the terminal.
_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{6,}")


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


def _hub_error(base: str, revision: str | None, exc: BaseException) -> ModelError | None:
    """The ModelError that explains a failed Hub download, or None when ``exc`` is not a Hub/cache problem."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # diffusers wraps the Hub's error in its own OSError (sometimes twice); the cause says what happened.
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__

    def first(kind: type[BaseException]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, kind)), None)

    page = f"https://huggingface.co/{base}"
    if first(GatedRepoError):
        return ModelError(
            f"{base} is a gated model and this Hugging Face account has not been granted access",
            f"accept the licence on {page} while logged in, then run `hf auth login` (or set HF_TOKEN)",
        )
    if first(RevisionNotFoundError):
        return ModelError(
            f"{base} has no revision {revision!r}", f"check the revision against {page}/tree/main"
        )
    if first(RepositoryNotFoundError):
        return ModelError(
            f"no model {base!r} on the Hugging Face Hub (or it is private and this account cannot see it)",
            f"check the id; for a private model run `hf auth login`; {_LOCAL_HINT}",
        )
    if first(OfflineModeIsEnabled) or (first(LocalEntryNotFoundError) and _offline()):
        return ModelError(
            f"{base} is not in the Hugging Face cache and HF_HUB_OFFLINE is set, so it cannot be downloaded",
            f"unset HF_HUB_OFFLINE to download it once (it is cached afterwards), {_LOCAL_HINT}",
        )
    http = first(HfHubHTTPError)
    if isinstance(http, HfHubHTTPError) and http.response is not None:
        status = http.response.status_code
        if status in (401, 403):
            return ModelError(
                f"the Hugging Face Hub refused access to {base} (HTTP {status})",
                f"run `hf auth login` with a token that can read it, and accept its licence on {page}",
            )
        return ModelError(f"the Hugging Face Hub answered HTTP {status} for {base}", "try again later")
    # Without network, huggingface_hub falls back to the cache and raises LocalEntryNotFoundError when the file is
    # not there, whichever HTTP library (httpx, httpx2, requests) reported the failure underneath.
    if first(LocalEntryNotFoundError) or first(ConnectionError) or first(TimeoutError):
        return ModelError(
            f"could not reach the Hugging Face Hub to download {base}, and it is not in the cache",
            f"check the network connection (and HF_ENDPOINT if set), {_LOCAL_HINT}",
        )
    return None


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)
