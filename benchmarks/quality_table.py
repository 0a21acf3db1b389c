"""The tables of ``docs/quality.md`` from ``learning.py``'s results (JSON lines, one per training run).

Every figure is a mean over the set's concepts and the seeds run; "steps to X" is the first snapshot step at
which that mean reaches X, so it is one of the snapshot steps (25, 50, 100, ...), not an interpolation.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Any

from learning import BUDGETS, RECIPES, SETS


def steps_run(row: dict[str, Any]) -> int:
    """The steps a run took: an early-stopped run's last validation step, else its configured steps."""
    early = row.get("early_stop") or {}
    if early.get("stopped_early") and early.get("history"):
        return int(early["history"][-1][0])
    return int(row["steps_run"])


def load(results: Path, set_name: str) -> list[dict[str, Any]]:
    names = {s.name for s in SETS[set_name]}
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["concept"] in names]


def curve(rows: list[dict[str, Any]], metric: str) -> dict[int, float]:
    """Snapshot step -> mean of ``metric`` over the runs that reached that step."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        for step, values in row["scores"].items():
            if step != "final":
                by_step[int(step)].append(values[metric])
    return {step: mean(values) for step, values in sorted(by_step.items())}


def first_at(points: dict[int, float], bar: float) -> int | None:
    return next((step for step, value in points.items() if value >= bar - 1e-9), None)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f} %"


def _settings(recipe: str) -> str:
    from learning import PAPER

    changed = {k: v for k, v in RECIPES[recipe].items() if PAPER.get(k) != v}
    return ", ".join(f"`{k} = {json.dumps(v)}`" for k, v in changed.items()) or "the diffusers example's"


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per recipe: its curves, final figures, steps to 90 % and wall time."""
    by_recipe: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_recipe[row["recipe"]].append(row)
    out = {}
    for recipe, mine in by_recipe.items():
        recon, edit = curve(mine, "reconstruction"), curve(mine, "editability")
        out[recipe] = {
            "runs": len(mine),
            "recon": recon,
            "edit": edit,
            "final_recon": mean(r["scores"]["final"]["reconstruction"] for r in mine),
            "final_edit": mean(r["scores"]["final"]["editability"] for r in mine),
            "steps_to_90": first_at(recon, 0.9),
            "steps_run": mean(steps_run(r) for r in mine),
            "wall": mean(r["wall_time_s"] for r in mine),
            "threads": {r.get("threads") for r in mine},
        }
    return out


def render(results: Path, set_name: str, machine: str, command: str, order: list[str] | None = None) -> str:
    """The set's tables, one row per recipe in ``order`` (the results file's order for the rest)."""
    rows = load(results, set_name)
    unordered = summary(rows)
    rank = {name: n for n, name in enumerate(order or [])}
    table = dict(sorted(unordered.items(), key=lambda item: rank.get(item[0], len(rank))))
    seeds = sorted({r["seed"] for r in rows})
    concepts = sorted({r["concept"] for r in rows})
    budgets = [b for b in BUDGETS if any(b in t["recon"] for t in table.values())]
    lines = [
        f"<!-- learning-{set_name}:start -->",
        f"Command: `.venv/bin/python benchmarks/learning.py {command}`",
        "",
        f"Machine: {machine}",
        "",
        f"Set `{set_name}`: {', '.join(f'`{c}`' for c in concepts)}; seeds {seeds} (the runs column counts each recipe's). "
        "Means over concepts and seeds.",
        "",
        "#### Reconstruction (samples of the concept's own prompt that show the concept)",
        "",
        "| recipe | settings | runs | "
        + " | ".join(str(b) for b in budgets)
        + " | registered | steps to 90 % |",
        "|---|---|---:|" + "---:|" * (len(budgets) + 2),
    ]
    for recipe, t in table.items():
        cells = [_pct(t["recon"].get(b)) for b in budgets]
        lines.append(
            f"| {recipe} | {_settings(recipe)} | {t['runs']} | "
            + " | ".join(cells)
            + f" | {_pct(t['final_recon'])} | {t['steps_to_90'] or 'not reached'} |"
        )
    lines += [
        "",
        "#### Editability (samples of prompts adding an attribute that show the concept and the attribute)",
        "",
        "| recipe | "
        + " | ".join(str(b) for b in budgets)
        + " | registered | wall time per run (s) | steps run |",
        "|---|" + "---:|" * (len(budgets) + 3),
    ]
    for recipe, t in table.items():
        cells = [_pct(t["edit"].get(b)) for b in budgets]
        lines.append(
            f"| {recipe} | "
            + " | ".join(cells)
            + f" | {_pct(t['final_edit'])} | {t['wall']:.0f} | {t['steps_run']:.0f} |"
        )
    lines += ["", *early_stop_lines(rows), f"<!-- learning-{set_name}:end -->"]
    return "\n".join(lines)


def early_stop_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per early-stopped run: where it stopped and which step it kept, against where accuracy settled."""
    stopped = sorted(
        (r for r in rows if r.get("early_stop")), key=lambda r: (r["recipe"], r["concept"], r["seed"])
    )
    if not stopped:
        return []
    lines = [
        "#### Early stopping",
        "",
        "| recipe | concept | seed | stopped at | kept step | first snapshot at its kept accuracy | kept accuracy |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in stopped:
        early = r["early_stop"]
        final = r["scores"]["final"]["reconstruction"]
        points = {int(s): v["reconstruction"] for s, v in r["scores"].items() if s != "final"}
        lines.append(
            f"| {r['recipe']} | {r['concept']} | {r['seed']} | {steps_run(r)} | {early.get('best_step')} | "
            f"{first_at(dict(sorted(points.items())), final) or 'not reached'} | {_pct(final)} |"
        )
    return [*lines, ""]
