"""What every benchmark here shares: the machine it ran on, and writing its own section of a docs page.

A section sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``; a run replaces only its own section
and keeps the rest of the page (other benchmarks' sections and the text written by hand) as it is.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return cpu


def machine(threads: str = "") -> str:
    """The CPU, how many threads torch uses (or ``threads``: how the work was spread, where the measuring
    processes are not this one), and the Python and torch versions."""
    import torch

    threads = threads or f"torch uses {torch.get_num_threads()} threads"
    return (
        f"{cpu_model()}, {os.cpu_count()} logical CPUs visible ({threads}), "
        f"Python {platform.python_version()}, torch {torch.__version__}, {platform.system()} {platform.release()}"
    )


def write_section(
    path: Path, name: str, text: str, *, heading: str = "", title: str = "# Benchmarks"
) -> None:
    """Put ``text`` (the section, markers included) in place of section ``name`` of ``path``, keeping every
    other part of the page. A page without the section gets it at the end, after ``heading``; a missing page
    starts with ``title``."""
    start, end = markers(name)
    old = path.read_text(encoding="utf-8") if path.exists() else title + "\n"
    if start in old and end in old:
        before, rest = old.split(start, 1)
        new = before + text + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + heading + text + "\n"
    path.write_text(new, encoding="utf-8")


def cpu_flags() -> list[str]:
    """The CPU's feature flags (from /proc/cpuinfo; empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
