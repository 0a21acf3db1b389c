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


def _row(recipe: str, seed: int, accuracy: float) -> dict[str, object]:
    scores = {"25": {"reconstruction": accuracy, "editability": accuracy}}
    return {
        "recipe": recipe, "concept": "test-green-cross", "kind": "object", "seed": seed, "steps_run": 25,
        "wall_time_s": 1.0, "train_loop_s": 1.0, "early_stop": None, "threads": 1,
        "scores": {**scores, "final": scores["25"]},
    }  # fmt: skip


def test_table_puts_the_asked_recipes_first_and_names_every_seed_run(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    rows = [_row("min-snr", 0, 0.5), _row("paper", 0, 1.0), _row("paper", 1, 0.75)]
    results.write_text("".join(json.dumps(row) + "\n" for row in rows))
    text = quality_table.render(results, "test", "a machine", "--set test", order=["paper", "min-snr"])
    recipes = [
        line.split(" | ")[0]
        for line in text.splitlines()
        if line.startswith("| paper") or line.startswith("| min-snr")
    ]
    assert recipes[:2] == ["| paper", "| min-snr"]
    assert "seeds [0, 1]" in text
    assert "| paper | the diffusers example's | 2 | 88 % | 88 % |" in text  # the mean of both paper seeds
