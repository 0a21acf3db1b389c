"""The process around a training run: the run folder's lock, stop signals, the step rate, peak memory, and how
data-parallel processes join on a machine without CUDA."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli import atomic
from tinv_cli.errors import TinvError

if TYPE_CHECKING:
    import torch

LOCK_FILE = "run.lock"  # in the run folder; locked (an OS lock) by the process training that concept
HOLDER_FILE = "run.lock.json"  # beside it: who holds it, for the message a second run prints


def cpu_processes() -> bool:
    """True for a data-parallel launch on a machine without CUDA: accelerate then needs ``cpu=True`` to join the
    processes over gloo (``accelerate launch --cpu`` says so itself; ``torchrun`` does not)."""
    import os

    import torch

    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        return True
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def peak_memory(device: torch.device) -> int | None:
    """Peak accelerator memory on CUDA; elsewhere the process's peak resident memory (None if unknown)."""
    import sys

    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, kilobytes on Linux


class RunLock:
    """One training run per concept at a time: an OS lock on ``run.lock`` in the run folder, which the kernel
    releases however the holder ends (SIGKILL included), so a dead run never blocks the next one.

    Two runs of one concept would share the checkpoint, interleave ``metrics.jsonl`` and register two versions;
    the second is refused, naming the holder (pid, host, since when) from ``run.lock.json``.
    """

    def __init__(self, run_dir: Path, name: str) -> None:
        self.run_dir, self.name = run_dir, name
        self._lock = atomic.Lock(run_dir / LOCK_FILE)

    def acquire(self) -> None:
        if not self._lock.acquire(wait=False):
            raise TinvError(f"{self.name} is being trained by {self._holder()}", self._hint())
        atomic.write_json(
            self.run_dir / HOLDER_FILE,
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )

    def release(self) -> None:
        """Unlock; a run folder left holding nothing but the lock (a run refused before it started) is removed,
        so such a run leaves no trace."""
        if not self._lock.held:
            return
        # The note first, while the lock still keeps the next holder from writing its own.
        (self.run_dir / HOLDER_FILE).unlink(missing_ok=True)
        if os.listdir(self.run_dir) == [LOCK_FILE]:
            self._lock.remove_and_release()
            with contextlib.suppress(OSError):  # another run has just made its lock file in it
                self.run_dir.rmdir()
                self.run_dir.parent.rmdir()  # runs/, when this was its only run folder
        else:
            self._lock.release()

    def _read_holder(self) -> dict[str, Any]:
        try:
            holder = json.loads((self.run_dir / HOLDER_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # it is being written this instant, or was lost
        return holder if isinstance(holder, dict) else {}

    def _holder(self) -> str:
        holder = self._read_holder()
        if not holder:
            return f"another process (it holds {self.run_dir / LOCK_FILE})"
        return f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"

    def _hint(self) -> str:
        pid = self._read_holder().get("pid")
        stop = (
            f"stop it (`kill {pid}` saves its checkpoint)" if pid else "stop it (Ctrl-C saves its checkpoint)"
        )
        return f"wait for that run to end, or {stop} and run `tinv train {self.name}` to resume it here"


class Stopped(BaseException):
    """Raised by ``StopSignal`` inside ``immediately()``; a BaseException, so no ``except Exception`` in a
    library on the way (model loading) swallows it."""


class StopSignal:
    """SIGINT/SIGTERM handlers that only raise a flag; the loop checks it between optimizer steps.

    A second Ctrl-C raises KeyboardInterrupt at once, for when saving the checkpoint is not wanted. Inside
    ``immediately()`` (set-up, where there is nothing to save and loading a model can take minutes) a signal
    raises ``Stopped`` at once instead. Handlers can only be installed from the main thread; elsewhere the flag
    simply never rises.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._immediate = False
        self._previous: dict[int, Any] = {}

    @property
    def name(self) -> str:
        """The signal received, as in ``SIGTERM`` ("" when none)."""
        return "" if self.received is None else signal.Signals(self.received).name

    @contextlib.contextmanager
    def immediately(self) -> Iterator[None]:
        self._immediate = True
        try:
            yield
        finally:
            self._immediate = False

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self._immediate:
            self.received = signum
            raise Stopped(signum)
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


class StepRate:
    """Optimizer steps per second over the last few steps."""

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self.times: list[float] = []

    def tick(self) -> float | None:
        self.times = [*self.times[-self.window :], time.perf_counter()]
        if len(self.times) < 2:
            return None
        return (len(self.times) - 1) / max(self.times[-1] - self.times[0], 1e-9)
