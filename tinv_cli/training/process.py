"""The process around a training run: stop signals, the step rate, peak memory, and how data-parallel
processes join on a machine without CUDA."""

from __future__ import annotations

import signal
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


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


class StopSignal:
    """SIGINT/SIGTERM handlers that only raise a flag; the loop checks it between optimizer steps.

    A second Ctrl-C raises KeyboardInterrupt at once, for when saving the checkpoint is not wanted.
    Handlers can only be installed from the main thread; elsewhere the flag simply never rises.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
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
