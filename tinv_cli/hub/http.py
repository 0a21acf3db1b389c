"""A bounded wait for every request tinv makes to the Hub: ``TINV_HUB_TIMEOUT`` seconds (default 30).

huggingface_hub's shared HTTP client has no timeout of its own, and many of its calls (``repo_info``,
``model_info``, ``create_repo``, ``list_models``) pass ``timeout=None``: a server that accepts the connection and
never answers keeps ``tinv pull``, ``push`` and ``search`` waiting forever. ``bound_hub_requests`` installs a
client factory (``huggingface_hub.set_client_factory``, public) whose client gives each request the same limit for
connecting, sending, and each wait for the next bytes of an answer, a streamed download included; the limit
applies to silence, not to a whole transfer, so a slow but steady download is never cut.

A request that hits the limit raises ``HubTimeout``, which is deliberately not an httpx error: huggingface_hub
retries its timeouts (up to six tries with back-off sleeps, ``6 x limit + 23 s`` for a search) and resumes a
stalled download up to five times, so a silent Hub would still take minutes. ``HubTimeout`` passes through all
of that, and the command ends after one limit with ``hub.errors`` saying which host did not answer. The cost:
huggingface_hub no longer falls back to its cache when the Hub times out (it still does when the connection is
refused); ``HF_HUB_OFFLINE=1`` serves the cache, and the error's hint says so.

Xet transfers (``hf_xet``, for large files on huggingface.co) do not go through this client and keep their own
limits.
"""

from __future__ import annotations

import importlib
import math
import os
import threading
from collections.abc import Iterator
from typing import Any

from tinv_cli.errors import TinvError

TIMEOUT_ENV = "TINV_HUB_TIMEOUT"
DEFAULT_TIMEOUT = 30.0  # seconds; the Hub's slowest answers (a commit's server-side checks) take a few


class HubTimeout(Exception):
    """The Hub at ``host`` sent nothing for ``seconds``; ``path`` is set when that happened mid-download."""

    def __init__(self, host: str, seconds: float, path: str | None = None) -> None:
        where = f" while sending {path}" if path else ""
        super().__init__(f"{host} sent nothing for {seconds:g} s{where}")
        self.host = host
        self.seconds = seconds
        self.path = path


def hub_timeout() -> float:
    """``TINV_HUB_TIMEOUT`` in seconds, or the default when it is unset or empty."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise TinvError(
            f"{TIMEOUT_ENV} must be a number of seconds above 0, not {raw!r}",
            f"for example {TIMEOUT_ENV}=120, or unset it for the default {DEFAULT_TIMEOUT:g}",
        )
    return seconds


_lock = threading.Lock()
_installed: float | None = None  # the limit of the factory this process installed, if any


def bound_hub_requests() -> float:
    """Make every request of huggingface_hub's shared client wait at most ``hub_timeout()`` seconds; returns it.

    Cheap to call before each Hub call: the factory is installed again only when the limit changed. It replaces
    any factory set before (a Python API caller's own, too), keeping the client's event hooks, through which
    huggingface_hub checks ``HF_HUB_OFFLINE`` and tags its requests.
    """
    global _installed
    seconds = hub_timeout()
    with _lock:
        if _installed == seconds:
            return seconds
        from huggingface_hub import close_session, get_session, set_client_factory

        # The client the current factory makes tells which HTTP library huggingface_hub uses (httpx2 in 2.x,
        # httpx in 1.x) and carries its request hooks; tinv's clients are made like it.
        probe = get_session()
        library = importlib.import_module(type(probe).__module__.split(".")[0])
        hooks = {kind: list(found) for kind, found in probe.event_hooks.items()}
        close_session()

        def factory() -> Any:
            client = library.Client(event_hooks=hooks, follow_redirects=True, timeout=seconds)
            client.send = _bounded_send(client.send, library, seconds)
            return client

        set_client_factory(factory)
        _installed = seconds
    return seconds


def _bounded_send(send: Any, library: Any, seconds: float) -> Any:
    """``Client.send`` with ``seconds`` as every part of the request's timeout, whatever the caller asked for
    (huggingface_hub's ``timeout=None`` included), and the library's timeouts raised as ``HubTimeout``."""
    limits = {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}

    class BoundedStream(library.SyncByteStream):
        """A streamed answer whose stalls mid-body end in ``HubTimeout`` instead of huggingface_hub's resumes."""

        def __init__(self, inner: Any, host: str, path: str) -> None:
            self.inner = inner
            self.host = host
            self.path = path

        def __iter__(self) -> Iterator[bytes]:
            try:
                yield from self.inner
            except library.TimeoutException as exc:
                raise HubTimeout(self.host, seconds, self.path) from exc

        def close(self) -> None:
            self.inner.close()

    def send_bounded(request: Any, **kwargs: Any) -> Any:
        request.extensions = {**request.extensions, "timeout": limits}
        host = f"{request.url.scheme}://{request.url.netloc.decode('ascii')}"
        try:
            response = send(request, **kwargs)
        except library.TimeoutException as exc:
            raise HubTimeout(host, seconds) from exc
        if isinstance(response.stream, library.SyncByteStream):
            response.stream = BoundedStream(response.stream, host, request.url.path.rsplit("/", 1)[-1])
        return response

    return send_bounded
