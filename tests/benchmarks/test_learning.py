"""benchmarks/learning.py end to end at toy scale on builtin:scenes: a run's snapshots are scored, its line is
written, a rerun with the same results file trains nothing again, and the table reads the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import quality_table  # noqa: E402 - from the benchmarks folder put on the path above


@pytest.mark.slow
def test_learning_benchmark_scores_snapshots_and_resumes(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    command = [
        sys.executable,
        str(BENCHMARKS / "learning.py"),
        "--set", "test", "--concepts", "test-green-cross", "--recipes", "early-stop", "--seeds", "3",
        "--cap-steps", "50", "--results", str(results), "--no-write",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert row["steps_run"] == 50 and set(row["scores"]) == {"25", "50", "final"}
    assert all(0 <= v <= 1 for scores in row["scores"].values() for v in scores.values())
    assert row["early_stop"]["history"][0][0] == 50
    assert "| early-stop |" in done.stdout and "#### Early stopping" in done.stdout

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and len(results.read_text().splitlines()) == 1  # nothing trained twice
    table = quality_table.summary(quality_table.load(results, "test"))
    assert table["early-stop"]["runs"] == 1 and set(table["early-stop"]["recon"]) == {25, 50}
