"""Hostile and failing Hubs: a server that accepts and never answers, one that stalls mid-file, 403 / 429 / 500
answers, and the partial downloads a killed pull leaves in the Hugging Face cache.

tinv runs in a subprocess, as in test_hub.py: huggingface_hub reads HF_ENDPOINT and HF_HOME when it is imported.
Every server here runs in a daemon thread on 127.0.0.1 and stops by itself (``LIFETIME``), so a test that fails
cannot leave anything waiting.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.hubserver import LocalHub

TOKEN = "hf_aliceSecretToken0001"
LIMIT = 2.0  # TINV_HUB_TIMEOUT for these tests, in seconds
# What a command may take beyond LIMIT: starting Python and importing huggingface_hub and torch on a loaded
# 2-core machine. Without the bound, the commands below wait until the server goes away (LIFETIME).
MARGIN = 12.0
LIFETIME = 40.0  # every server here closes by itself after this long


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    seconds: float

    @property
    def errors(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("Error:")]


def tinv(*args: str, timeout: float = LIFETIME, **env: str) -> Run:
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "tinv_cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert TOKEN not in result.stdout + result.stderr
    return Run(result.returncode, result.stdout, result.stderr, time.monotonic() - start)


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Online, with a fresh cache, the test's bound and a token; returns HF_HOME."""
    hf_home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("TINV_HUB_TIMEOUT", f"{LIMIT:g}")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN_PATH", "TINV_PROJECT", "TINV_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return hf_home


# Servers


class SilentServer:
    """Accepts every connection, reads what the client sends, and never writes a byte."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        host, port = self._socket.getsockname()[:2]
        self.endpoint = f"http://{host}:{port}"

    def _serve(self) -> None:
        held: list[socket.socket] = []
        deadline = time.monotonic() + LIFETIME
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            connection.settimeout(0)
            held.append(connection)
        for connection in held:
            connection.close()
        self._socket.close()

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.answer()

    def do_HEAD(self) -> None:
        self.answer()

    def do_POST(self) -> None:
        self.answer()

    def answer(self) -> None:
        raise NotImplementedError


@dataclass
class Serving:
    server: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(Handler)`` runs a handler class on a free port until the test ends (or LIFETIME passes)."""
    running: list[Serving] = []

    def start(handler: type[BaseHTTPRequestHandler]) -> Serving:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        thread.start()
        serving = Serving(server, thread)
        timer = threading.Timer(LIFETIME, serving.stop)
        timer.daemon = True
        timer.start()
        running.append(serving)
        return serving

    yield start
    for serving in running:
        serving.stop()


def status_handler(status: int, message: str) -> type[BaseHTTPRequestHandler]:
    """Every request answered with ``status`` and the Hub's error headers."""

    class Handler(_Quiet):
        def answer(self) -> None:
            body = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Error-Message", message)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


def stalling_proxy(upstream: str, stalled: threading.Event) -> type[BaseHTTPRequestHandler]:
    """Forwards to ``upstream``, except a file download (GET .../resolve/...), whose headers and first half it
    sends before going silent until ``stalled`` is set or LIFETIME passes."""
    target = urlsplit(upstream)

    class Handler(_Quiet):
        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            connection = http.client.HTTPConnection(target.hostname or "", target.port, timeout=10)
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            connection.close()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("connection", "transfer-encoding", "server", "date"):
                    self.send_header(key, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            if self.command == "GET" and "/resolve/" in self.path:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                stalled.wait(LIFETIME)
                self.close_connection = True
                return
            self.wfile.write(data)

    return Handler


# Content


def _safetensors_repo(hub: LocalHub, repo_id: str, token: str) -> str:
    import torch
    from safetensors.torch import save

    hub.add_user("alice", TOKEN)
    hub.create_repo(repo_id)
    data = save({token: torch.randn(1, 32, generator=torch.Generator().manual_seed(5))})
    return hub.commit(repo_id, {"learned_embeds.safetensors": data, "token_identifier.txt": token.encode()})


def _add_entry(name: str, token: str) -> None:
    import torch

    from tinv_cli.embedding import Embedding
    from tinv_cli.registry.store import Registry

    Registry(Path(os.environ["TINV_HOME"])).add(
        name, Embedding(token, (torch.randn(1, 32),)), kind="object", source={"type": "imported"}
    )


def _assert_bounded(run: Run, *words: str) -> None:
    assert run.code == 1, run.err
    assert len(run.errors) == 1, run.err
    assert all(word in run.errors[0] for word in words), run.errors[0]
    assert run.seconds < LIMIT + MARGIN, f"took {run.seconds:.1f} s"
    assert "Traceback" not in run.err


# Class 2: every Hub call has a bounded wait


def test_pull_search_and_push_end_within_the_bound_on_a_hub_that_never_answers(online: Path) -> None:
    _add_entry("quiet-kite", "<quiet-kite>")
    with SilentServer() as silent:
        env = {"HF_ENDPOINT": silent.endpoint}
        host = silent.endpoint
        calls = {
            "pull": ("pull", "someone/cat-toy"),
            "pull one file": ("pull", "someone/cat-toy:learned_embeds.safetensors"),
            "search": ("search", "cat"),
            "search, any author": ("search", "cat", "--any-author"),
            "pull --search": ("pull", "--search", "cat", "--yes"),
            "push": ("push", "quiet-kite", "--repo", "alice/quiet-kite"),
            "push, whoami first": ("push", "quiet-kite"),
        }
        runs = {label: tinv(*args, **env) for label, args in calls.items()}
    for label, run in runs.items():
        _assert_bounded(run, f"the Hub at {host} did not answer within {LIMIT:g} s")
        assert "TINV_HUB_TIMEOUT=" in run.err, label
    assert "HF_HUB_OFFLINE=1" in runs["pull"].err  # the cache is the way round a silent Hub
    assert runs["push, whoami first"].errors[0].endswith("when asked to look up your user name")
    assert runs["push"].errors[0].endswith("when asked to push to alice/quiet-kite")


def test_a_download_that_stalls_mid_file_ends_within_the_bound(online: Path, serve: Any) -> None:
    stalled = threading.Event()
    with LocalHub() as hub:
        _safetensors_repo(hub, "someone/stalled", "<stalled>")
        proxy = serve(stalling_proxy(hub.endpoint, stalled))
        try:
            run = tinv("pull", "someone/stalled", HF_ENDPOINT=proxy.endpoint)
        finally:
            stalled.set()
    # snapshot_download fetches the files side by side: whichever stalls first is named.
    _assert_bounded(run, "stopped answering while sending ", f"nothing arrived for {LIMIT:g} s")
    assert any(
        f"sending {name}:" in run.errors[0] for name in ("learned_embeds.safetensors", "token_identifier.txt")
    )
    assert run.errors[0].startswith(f"Error: the Hub at {proxy.endpoint} ")


def test_the_bound_can_be_lengthened_and_a_bad_value_is_refused(online: Path) -> None:
    with SilentServer() as silent:
        longer = tinv("search", "cat", HF_ENDPOINT=silent.endpoint, TINV_HUB_TIMEOUT="4")
        bad = tinv("search", "cat", HF_ENDPOINT=silent.endpoint, TINV_HUB_TIMEOUT="soon")
        zero = tinv("pull", "a/b", HF_ENDPOINT=silent.endpoint, TINV_HUB_TIMEOUT="0")
    assert longer.code == 1 and "did not answer within 4 s" in longer.err
    assert longer.seconds >= 4
    for run in (bad, zero):
        assert run.code == 1 and len(run.errors) == 1 and "TINV_HUB_TIMEOUT must be a number" in run.err
    assert "Hint:" in bad.err


def test_the_bound_does_not_cut_a_hub_that_answers(online: Path, tmp_path: Path) -> None:
    with LocalHub() as hub:
        commit = _safetensors_repo(hub, "someone/answered", "<answered>")
        run = tinv("pull", "someone/answered", HF_ENDPOINT=hub.endpoint, TINV_HUB_TIMEOUT="0.5")
    assert run.code == 0, run.err
    assert f"someone/answered@{commit[:12]}" in run.err


def test_a_base_model_download_from_a_silent_hub_is_one_model_error(online: Path) -> None:
    # Timed inside the child: importing torch and diffusers alone can take longer than the bound here.
    script = (
        "import time\n"
        "from tinv_cli.errors import ModelError\n"
        "from tinv_cli.models.loading import load_pipeline\n"
        "start = time.monotonic()\n"
        "try:\n    load_pipeline('someone/sd-model')\n"
        "except ModelError as e:\n    print(e.message); print(e.hint)\n"
        "print(time.monotonic() - start)\n"
    )
    with SilentServer() as silent:
        result = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "HF_ENDPOINT": silent.endpoint},
            capture_output=True,
            text=True,
            timeout=LIFETIME,
        )
    assert len(result.stdout.splitlines()) == 3, result.stdout + result.stderr
    message, hint, seconds = result.stdout.splitlines()
    assert message == (
        f"the Hub at {silent.endpoint} did not answer within {LIMIT:g} s while downloading someone/sd-model"
    )
    assert "TINV_HUB_TIMEOUT=" in hint and "HF_HUB_OFFLINE=1" in hint
    assert float(seconds) < LIMIT + MARGIN


# Class 11: what the Hub answered, not "cannot reach the Hub"


@pytest.mark.parametrize(
    ("status", "words", "hint"),
    [
        (403, "refused to {action} (403 forbidden: no access here)", "token may not have access"),
        (429, "limiting requests (429 too many requests)", "wait a few minutes"),
        (500, "had a server error (500) when asked to {action}", "trying again later may help"),
        (503, "had a server error (503) when asked to {action}", "trying again later may help"),
    ],
)
def test_refusals_and_server_errors_say_what_the_hub_answered(
    online: Path, serve: Any, status: int, words: str, hint: str
) -> None:
    server = serve(status_handler(status, "no access here"))
    env = {"HF_ENDPOINT": server.endpoint, "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}
    # huggingface_hub retries 429 and 5xx answers to a search with back-off (about 25 s); a pull asks once.
    runs = {"pull someone/cat-toy": tinv("pull", "someone/cat-toy", **env)}
    if status == 403:
        runs["search"] = tinv("search", "cat", **env)
    for action, run in runs.items():
        assert run.code == 1, run.err
        assert len(run.errors) == 1, run.err
        assert words.format(action=action) in run.errors[0], run.errors[0]
        assert "cannot reach" not in run.err
        assert hint in run.err
        assert "write access" not in run.err  # the push hint, once given for every 403
        assert len(run.err.strip().splitlines()) <= 3  # Fetching..., Error:, Hint:; no retry notices


class _HangsUp(_Quiet):
    def answer(self) -> None:
        self.close_connection = True  # reads the request, then closes without a byte of answer


def test_a_hub_that_hangs_up_is_not_called_unreachable(online: Path, serve: Any) -> None:
    server = serve(_HangsUp)
    run = tinv("pull", "someone/cat-toy", HF_ENDPOINT=server.endpoint)
    _assert_bounded(
        run, f"the Hub at {server.endpoint} closed the connection without answering when asked to pull"
    )


@pytest.mark.slow
def test_a_search_answered_500_is_a_server_error_after_the_clients_retries(online: Path, serve: Any) -> None:
    server = serve(status_handler(500, "down for maintenance"))
    run = tinv("search", "cat", HF_ENDPOINT=server.endpoint)
    assert run.code == 1 and len(run.errors) == 1
    assert "had a server error (500) when asked to search: down for maintenance" in run.errors[0]
    assert "HTTP Error 500 thrown" not in run.err  # huggingface_hub's retry notices stay off the terminal


# Class 9: partial downloads a killed pull left in the Hugging Face cache


def _repo_cache(hf_home: Path, repo_id: str) -> Path:
    return hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))


def test_a_pull_sweeps_the_partial_downloads_no_live_process_writes(online: Path) -> None:
    from filelock import FileLock

    repo_id = "someone/partial"
    blobs = _repo_cache(online, repo_id) / "blobs"
    locks = online / "hub" / ".locks" / ("models--" + repo_id.replace("/", "--"))
    blobs.mkdir(parents=True)
    # Left by killed downloads of files the repository no longer has, so the client would never resume them.
    stale = [blobs / ("a" * 40 + ".incomplete"), blobs / ("b" * 64 + ".1f2e3d4c.incomplete")]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    busy = blobs / ("c" * 40 + ".incomplete")  # a download another process is writing right now
    busy.write_bytes(b"\0" * 10)
    other = _repo_cache(online, "someone/other") / "blobs" / ("d" * 40 + ".incomplete")
    other.parent.mkdir(parents=True)
    other.write_bytes(b"\0")
    writer = FileLock(locks / ("c" * 40 + ".lock"))
    with LocalHub() as hub:
        _safetensors_repo(hub, repo_id, "<partial>")
        with writer:
            run = tinv("pull", repo_id, HF_ENDPOINT=hub.endpoint)
    assert run.code == 0, run.err
    assert "Removed 2 partial download(s) of someone/partial" in run.err
    assert not any(path.exists() for path in stale)
    assert busy.exists() and other.exists()
    assert sorted(p.name for p in blobs.glob("*.incomplete")) == [busy.name]


def test_a_pull_killed_mid_download_leaves_nothing_after_the_next_pull(online: Path, serve: Any) -> None:
    repo_id = "someone/killed"
    stalled = threading.Event()
    with LocalHub() as hub:
        _safetensors_repo(hub, repo_id, "<killed>")
        proxy = serve(stalling_proxy(hub.endpoint, stalled))
        env = {**os.environ, "HF_ENDPOINT": proxy.endpoint, "TINV_HUB_TIMEOUT": str(LIFETIME)}
        killed = subprocess.Popen(
            [sys.executable, "-m", "tinv_cli", "pull", repo_id],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        blobs = _repo_cache(online, repo_id) / "blobs"
        deadline = time.monotonic() + LIFETIME
        while not list(blobs.glob("*.incomplete")) and time.monotonic() < deadline and killed.poll() is None:
            time.sleep(0.1)
        partial = list(blobs.glob("*.incomplete"))
        writing = killed.poll() is None
        if writing:
            os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=10)
        stalled.set()
        assert writing and partial, "the pull never started writing its download"
        # The repository moved on meanwhile: the killed download's file is not part of it any more.
        _safetensors_repo_update(hub, repo_id)
        again = tinv("pull", repo_id, HF_ENDPOINT=hub.endpoint)
    assert again.code == 0, again.err
    assert not list(blobs.glob("*.incomplete"))


def _safetensors_repo_update(hub: LocalHub, repo_id: str) -> None:
    import torch
    from safetensors.torch import save

    data = save({"<killed>": torch.randn(1, 32, generator=torch.Generator().manual_seed(6))})
    hub.commit(repo_id, {"learned_embeds.safetensors": data}, message="New vectors")
