"""Measures the shapes model: prompt fidelity, and concept recovery by `tinv train` + `tinv eval`.

    .venv/bin/python benchmarks/shapes_quality.py [--per-prompt 16] [--seeds 0 1 2 3 4] [--no-write]
    .venv/bin/python benchmarks/shapes_quality.py --model build/shapes-model   # a model rebuilt from scratch

Prompt fidelity: ``a photo of a COLOUR SHAPE`` for every one of the 30 in-vocabulary pairs, sampled as
``tinv sample`` samples (DPM++ 2M, 20 steps, guidance 7.5), each sample read by the judge. Concept recovery: the
demo project's concept trained with its own defaults (``concepts.toml``), once per seed, through the real CLI
(its wall time is what a user waits), then scored by ``tinv eval`` against the initializer word alone.
Writes ``docs/shapes.md`` and this benchmark's section of ``docs/benchmarks.md``; with ``--model FOLDER`` (the
output of ``python -m tinv_cli.shapes.build``) it measures that model instead, with the same bars, and writes
only the rebuild's section of ``docs/shapes.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import machine, markers, write_section  # this folder's shared machine line and docs writer

ROOT = Path(__file__).resolve().parent.parent
START, END = markers("shapes_quality")
REBUILD_START, REBUILD_END = markers("shapes_rebuild")
STEPS, GUIDANCE = 20, 7.5
TINV = [sys.executable, "-m", "tinv_cli"]


def model_folder(model: str) -> Path:
    from tinv_cli.models.refs import builtin_folder

    folder = builtin_folder(model) if model.startswith("builtin:") else Path(model).resolve()
    if folder is None or not (folder / "judge" / "judge.json").is_file():
        raise SystemExit(f"{model}: not a shapes model folder (no judge/judge.json)")
    return folder


def fidelity(model: str, per_prompt: int) -> list[dict[str, object]]:
    from tinv_cli.models.loading import load_pipeline
    from tinv_cli.shapes.judge import load_judge
    from tinv_cli.shapes.measure import prompt_fidelity

    pipe = load_pipeline(model)
    judge = load_judge(model_folder(model) / "judge")
    scores = prompt_fidelity(pipe, judge, per_prompt=per_prompt, steps=STEPS, guidance=GUIDANCE, seed=0)
    return [vars(score) for score in scores]


def recovery(model: str, concept: str, seeds: list[int], picture: Path | None) -> list[dict[str, object]]:
    rows = []
    model_flag = [] if model == "builtin:shapes" else ["--model", model]
    for seed in seeds:
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "TINV_HOME": home, "HF_HUB_OFFLINE": "1"}
            begin = time.monotonic()
            subprocess.run(
                [
                    *TINV,
                    "train",
                    concept,
                    "--seed",
                    str(seed),
                    "--project",
                    str(ROOT / "concepts.toml"),
                    *model_flag,
                ],
                env=env,
                check=True,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
            )
            wall = time.monotonic() - begin
            out = Path(home) / "eval.png"
            result = json.loads(
                subprocess.run(
                    [
                        *TINV,
                        "eval",
                        concept,
                        "--json",
                        "--samples",
                        "32",
                        "--seed",
                        "1000",
                        "--out",
                        str(out),
                    ],
                    env=env,
                    check=True,
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            info = json.loads(next((Path(home) / "registry" / concept).glob("*/tinv.json")).read_text())
            if picture is not None and seed == seeds[0]:
                picture.write_bytes(out.read_bytes())
        rows.append(
            {
                "seed": seed,
                "wall_s": wall,
                "train_s": info["training"]["wall_time_s"],
                "steps": info["training"].get("steps"),
                **result["scores"],
                "target": result["target"],
                "prompt": result["prompt"],
                "baseline_prompt": result["baseline_prompt"],
            }
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def fidelity_table(rows: list[dict[str, object]]) -> list[str]:
    total = sum(int(r["samples"]) for r in rows)  # type: ignore[call-overload]
    correct = sum(int(r["correct"]) for r in rows)  # type: ignore[call-overload]
    colour = sum(int(r["colour_correct"]) for r in rows)  # type: ignore[call-overload]
    shape = sum(int(r["shape_correct"]) for r in rows)  # type: ignore[call-overload]
    lines = [
        f"**Prompt fidelity: {_pct(correct / total)}** ({correct} of {total} samples show the prompt's colour and "
        f"shape; colour alone {_pct(colour / total)}, shape alone {_pct(shape / total)}).",
        "",
        "| prompt | colour and shape | colour | shape |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        n = int(r["samples"])  # type: ignore[call-overload]
        lines.append(
            f"| {r['prompt']} | {r['correct']}/{n} | {r['colour_correct']}/{n} | {r['shape_correct']}/{n} |"
        )
    return lines


def recovery_table(rows: list[dict[str, object]]) -> list[str]:
    lines = [
        "| seed | `tinv train` wall time (s) | training loop (s) | concept accuracy | initializer alone |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {float(r['wall_s']):.0f} | {float(r['train_s']):.0f} | "  # type: ignore[arg-type]
            f"{_pct(float(r['concept_accuracy']))} | {_pct(float(r['baseline_accuracy']))} |"
        )  # type: ignore[arg-type]
    mean = sum(float(r["concept_accuracy"]) for r in rows) / len(rows)  # type: ignore[arg-type]
    base = sum(float(r["baseline_accuracy"]) for r in rows) / len(rows)  # type: ignore[arg-type]
    lines.append(f"| mean | | | {_pct(mean)} | {_pct(base)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-prompt", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--concept", default="violet-kite")
    parser.add_argument(
        "--model", default="builtin:shapes", help="a shapes model folder (default: the shipped one)"
    )
    parser.add_argument("--no-write", action="store_true", help="print the tables without updating the docs")
    args = parser.parse_args()

    shipped = args.model == "builtin:shapes"
    if not shipped:
        args.model = str(Path(args.model).resolve())
    folder = model_folder(args.model)
    build = json.loads((folder / "build.json").read_text())
    judge_info = json.loads((folder / "judge" / "judge.json").read_text())
    fid = fidelity(args.model, args.per_prompt)
    print("\n".join(fidelity_table(fid)[:1]), file=sys.stderr)
    picture = ROOT / "docs" / "shapes-demo.png" if shipped and not args.no_write else None
    rec = recovery(args.model, args.concept, args.seeds, picture)
    command = (
        "`.venv/bin/python benchmarks/shapes_quality.py"
        + (f" --per-prompt {args.per_prompt}" if args.per_prompt != 16 else "")
        + ("" if shipped else f" --model {os.path.relpath(args.model, ROOT)}")
        + "`"
    )
    held = judge_info["held_out"]
    measured = [
        f"Command: {command}",
        "",
        f"Machine: {machine()}",
        "",
        (
            "Model: `builtin:shapes` as shipped (built by `python -m tinv_cli.shapes.build`, "
            if shipped
            else f"Model: `{os.path.relpath(args.model, ROOT)}`, rebuilt from nothing by "
            f"`python -m tinv_cli.shapes.build --out {os.path.relpath(args.model, ROOT)} --threads 1` ("
        )
        + f"{build['seconds_this_run'] / 60:.0f} minutes on this machine). Sampling: DPM++ 2M, {STEPS} steps, "
        f"guidance {GUIDANCE}. Judge accuracy on {held['images']} held-out renders (seed {held['seed']}): colour and "
        f"shape {_pct(held['accuracy']['colour+shape'])}, background {_pct(held['accuracy']['background'])}.",
        "",
        f"### Prompt fidelity ({args.per_prompt} samples per prompt)",
        "",
        *fidelity_table(fid),
        "",
        f"### Concept recovery (`{args.concept}`, demo defaults, {len(rec)} seeds)",
        "",
        f"`tinv train {args.concept} --seed S`, then `tinv eval {args.concept} --samples 32`: the fraction of "
        f"samples of `{rec[0]['prompt']}` that the judge reads as the concept ({rec[0]['target']}), against "
        f"`{rec[0]['baseline_prompt']}` (the initializer alone, same seeds).",
        "",
        *recovery_table(rec),
        "",
        f"Measured {time.strftime('%Y-%m-%d')}.",
    ]
    if args.no_write:
        print("\n".join(measured))
        return
    doc = ROOT / "docs" / "shapes.md"
    if not shipped:
        # The rebuild's own section, kept apart from the shipped model's figures; text outside it is by hand.
        text = REBUILD_START + "\n" + "\n".join(measured) + "\n" + REBUILD_END
        write_section(doc, "shapes_rebuild", text, heading="## The model rebuilt from scratch\n\n")
        return
    # The text around the markers is written by hand; only the measured part is replaced.
    text = START + "\n" + "\n".join(measured) + "\n" + END
    write_section(doc, "shapes_quality", text, title="# The shapes model")
    summary_fid = sum(int(r["correct"]) for r in fid) / sum(int(r["samples"]) for r in fid)  # type: ignore[call-overload]
    write_section(
        ROOT / "docs" / "benchmarks.md",
        "shapes_quality",
        "\n".join(
            [
                START,
                "## Shapes model quality (`benchmarks/shapes_quality.py`)",
                "",
                f"Prompt fidelity of `builtin:shapes` over all 30 colour+shape prompts: {_pct(summary_fid)}. Concept "
                f"recovery of the demo concept `{args.concept}` with its default settings (full tables in docs/shapes.md):",
                "",
                *recovery_table(rec),
                "",
                f"Command: {command}",
                "",
                f"Machine: {machine()}",
                "",
                f"Measured {time.strftime('%Y-%m-%d')}.",
                END,
            ]
        ),
    )


if __name__ == "__main__":
    main()
