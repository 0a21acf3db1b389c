"""benchmarks/step_profile.py at toy scale: tinv's step and the floor profiled op by op; the heavy ops match."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "step_profile.py"


@pytest.mark.slow
def test_tinv_step_runs_the_floors_heavy_ops_and_little_else() -> None:
    command = [sys.executable, str(SCRIPT), "--model", "tiny", "--resolution", "64", "--steps", "2",
               "--warmup", "1", "--no-write"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "The same heavy ops with the same calls: yes." in done.stdout
    assert "`Optimizer.step#AdamW.step`" in done.stdout  # what tinv adds is listed: its optimizer step
    assert done.stdout.rstrip().endswith("<!-- step_profile:end -->")
