"""Wall time of the commands people type most, beside an empty Python start, and what each one imports.

    .venv/bin/python benchmarks/cli_speed.py            # writes its section of docs/benchmarks.md
    .venv/bin/python benchmarks/cli_speed.py --no-write # prints only

Each command runs as its own process through the installed `tinv` entry point, in a fresh temporary $TINV_HOME
holding a registry of 500 concepts (1 to 4 vectors, 768 wide); the figure is the median wall time of N runs
after one untimed run. `python -c pass` is the same interpreter starting and exiting: what no command can beat.
A second run of each command under `python -c` records which ML libraries it has imported by the time it exits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import cpu_model, markers, write_section  # this folder's shared CPU name and docs writer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

START, END = markers("cli_speed")
REGISTRY_SIZE = 500
ML_MODULES = (
    "torch",
    "diffusers",
    "transformers",
    "accelerate",
    "safetensors",
    "tokenizers",
    "huggingface_hub",
    "numpy",
    "PIL",
)
# What the import check runs: the CLI's own main() with the given arguments, then the ML libraries loaded.
_PROBE = (
    "import json, sys\n"
    "watched = json.loads(sys.argv[2])\n"
    "from tinv_cli.cli import main\n"
    "sys.argv = ['tinv', *json.loads(sys.argv[1])]\n"
    "try:\n"
    "    main()\n"
    "except SystemExit:\n"
    "    pass\n"
    "sys.stdout.flush()\n"
    "loaded = [m for m in watched if m in sys.modules]\n"
    "sys.stderr.write('\\nIMPORTED ' + json.dumps(loaded) + '\\n')\n"
)


def populate(count: int) -> None:
    import torch

    from tinv_cli.embedding import Embedding
    from tinv_cli.registry.store import Registry

    registry = Registry()
    generator = torch.Generator().manual_seed(0)
    for i in range(count):
        vectors = torch.randn(1 + i % 4, 768, generator=generator) * 0.02
        registry.add(
            f"concept-{i:03d}", Embedding(f"<concept-{i:03d}>", (vectors,)), source={"type": "imported"}
        )


def timed(command: list[str], env: dict[str, str], repeats: int) -> list[float]:
    subprocess.run(command, env=env, capture_output=True, check=True)  # warm the file cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def imported(args: list[str], env: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args), json.dumps(ML_MODULES)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(line for line in done.stderr.splitlines() if line.startswith("IMPORTED "))
    return list(json.loads(line.removeprefix("IMPORTED ")))


def machine() -> str:
    """The machine without torch: this benchmark imports no ML library itself."""
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, {platform.system()}"


def section(rows: list[tuple[str, list[float], list[str] | None]], repeats: int, command: str) -> str:
    baseline = statistics.median(rows[0][1])
    lines = [
        START,
        "## CLI start-up (`benchmarks/cli_speed.py`)",
        "",
        "Wall time of each command as a new process through the installed `tinv` entry point, median of",
        f"{repeats} runs after one untimed run, with a registry of {REGISTRY_SIZE} concepts; `python -c pass` is the",
        "interpreter alone. The last column lists the ML libraries a command has imported when it exits.",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine()}",
        "",
        "| command | median (ms) | best (ms) | over `python -c pass` (ms) | ML libraries imported |",
        "|---|---:|---:|---:|---|",
    ]
    for label, times, modules in rows:
        median = statistics.median(times)
        extra = "" if modules is None else (", ".join(modules) or "none")
        over = "" if label == "python -c pass" else f"{(median - baseline) * 1000:.0f}"
        lines.append(f"| `{label}` | {median * 1000:.0f} | {min(times) * 1000:.0f} | {over} | {extra} |")
    lines += ["", f"Measured {time.strftime('%Y-%m-%d')}.", END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--no-write", action="store_true", help="print the table without updating the docs")
    args = parser.parse_args()

    tinv = shutil.which("tinv", path=str(Path(sys.executable).parent)) or shutil.which("tinv")
    if tinv is None:
        raise SystemExit("no `tinv` entry point next to this Python; pip install -e . first")
    with tempfile.TemporaryDirectory() as home:
        os.environ["TINV_HOME"] = home
        populate(REGISTRY_SIZE)
        env = {**os.environ, "TINV_HOME": home, "HF_HUB_OFFLINE": "1"}
        commands = [["--help"], ["list"], ["show", "concept-250"]]
        rows: list[tuple[str, list[float], list[str] | None]] = [
            ("python -c pass", timed([sys.executable, "-c", "pass"], env, args.repeats), None)
        ]
        for cli_args in commands:
            times = timed([tinv, *cli_args], env, args.repeats)
            rows.append(("tinv " + " ".join(cli_args), times, imported(cli_args, env)))

    command = "python " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]])
    text = section(rows, args.repeats, command)
    print(text)
    if not args.no_write:
        write_section(ROOT / "docs" / "benchmarks.md", "cli_speed", text)


if __name__ == "__main__":
    main()
