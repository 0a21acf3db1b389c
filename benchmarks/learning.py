"""How fast a recipe learns a concept, and what the concept still lets a prompt change: the learning benchmark.

    .venv/bin/python benchmarks/learning.py --set test --seeds 0 1 --jobs 2 --results build/learning.jsonl
    .venv/bin/python benchmarks/learning.py --set tuning --recipes paper min-snr ... --results FILE --no-write

On builtin:scenes (docs/shapes.md), for held-out concepts (``TUNING`` to choose settings on, ``TEST`` to report
on; neither holds the demo's purple diamond or orange cross), each recipe trains each concept once per seed
with tinv's trainer, and the vectors of steps 25, 50, 100, 200, 400, 800 (and 1,600 and 3,000 where the recipe
runs that long) are scored by the world's judge:

- *reconstruction*: of ``a photo of a <c>`` (a style: ``a painting in the style of <s>``), the fraction of
  samples that show the concept (an object: its colour and shape; a style: its fill and ground);
- *editability*: of prompts that add what the model renders from words (an object on another ground, tiny,
  big, outlined, filled; a style applied to other coloured shapes), the fraction that show both the concept
  and what the prompt added;
- the wall time of the training run (with a checkpoint every 25 steps, which the snapshots are read from).

Each (recipe, concept, seed) is one line of ``--results`` (JSON), written when it finishes: a killed benchmark
rerun with the same file goes on with what is missing. ``--jobs 2`` runs two single-threaded workers side by
side; their accuracies are the same as one worker's (every run is seeded), and their wall times compare with
each other, not with a run alone (the table's machine line says how the runs were spread). Writes the table
into ``docs/quality.md``.
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
from typing import Any

from report import machine, write_section  # this folder's shared machine line and docs writer

from tinv_cli.shapes.concepts import TEST, TUNING, ConceptSpec, score, write_images

ROOT = Path(__file__).resolve().parent.parent
BUDGETS = (25, 50, 100, 200, 400, 800, 1600, 3000)
IMAGES = 5


SETS = {"tuning": TUNING, "test": TEST}

# The settings every recipe shares on this model: its 32 px, full precision, a checkpoint per snapshot.
COMMON: dict[str, Any] = {"resolution": 32, "mixed_precision": "no", "checkpoint_every": 25}
# The diffusers example's recipe (its README's command): batch 1 x 4 accumulated, 5e-4 scaled by 4 to 2e-3,
# constant, 3,000 steps; tinv's train defaults before this benchmark were exactly these. Run here as one batch
# of 4, which is the same update (the mean gradient of 4 samples at the same learning rate) in a third less
# time on a CPU.
PAPER: dict[str, Any] = {
    "recipe": "paper",  # every method below is the paper's recipe plus that method alone
    "steps": 3000,
    "batch_size": 4,
    "gradient_accumulation": 1,
    "learning_rate": 5.0e-4,
    "scale_lr": True,
    "lr_scheduler": "constant",
}
SHORT = 400  # the budget a method alone is run to


def _recipes() -> dict[str, dict[str, Any]]:
    """Recipe name -> settings (``init`` is the concept's setting, the rest ``[train]``'s). ``tinv`` is tinv's
    default recipe as it ships (``tinv_cli/project/recipes.py``), read from the library."""
    from tinv_cli.project.recipes import TINV

    short = {**PAPER, "steps": SHORT}
    return {
        "tinv": {**TINV, "recipe": "tinv"},
        "paper": dict(PAPER),
        "min-snr": {**short, "min_snr_gamma": 5.0},
        "encoder-init": {**short, "init": "encoder"},
        "norm-keep": {**short, "norm": "keep"},
        "norm-regularise": {**short, "norm": "regularise"},
        "masked": {**short, "masked_loss": True},
        # The tinv recipe's early stopping on the paper's recipe: the tinv recipe itself, run as one batch of 4.
        "early-stop": {**PAPER, **{k: TINV[k] for k in ("early_stop_every", "early_stop_patience")}},
        "lr-x5": {**short, "learning_rate": 2.5e-3},
        # The two that moved anything on steps, together: a 5x learning rate, early stopping checked twice as
        # often (the faster run settles sooner) with one evaluation more of patience.
        "early-stop-lr": {**PAPER, "learning_rate": 2.5e-3, "early_stop_every": 25, "early_stop_patience": 4},
        # Patience variants, tried on the tuning set only (docs/quality.md).
        "early-stop-lr-p8": {**PAPER, "learning_rate": 2.5e-3, "early_stop_every": 25, "early_stop_patience": 8},
        "early-stop-p6": {**PAPER, "early_stop_every": 50, "early_stop_patience": 6},
        "demo": {**short, "learning_rate": 5e-3, "scale_lr": False},
    }  # fmt: skip


RECIPES = _recipes()


def write_concept(spec: ConceptSpec, folder: Path, settings: dict[str, Any], model: str) -> Path:
    """A project folder with the concept's images (and masks, for masked_loss) and its concepts.toml."""
    write_images(spec, folder / "images", IMAGES, masks=bool(settings.get("masked_loss")))
    train = {k: v for k, v in {**COMMON, **settings}.items() if k != "init"}
    lines = [f'[model]\nbase = "{model}"\n\n[train]']
    lines += [f"{k} = {json.dumps(v)}" for k, v in train.items()]
    lines += [
        f"\n[concepts.{spec.name}]",
        'images = "images"',
        f'initializer = "{spec.initializer}"',
        f'kind = "{spec.kind}"',
        f'init = "{settings.get("init", "initializer")}"',
    ]
    (folder / "concepts.toml").write_text("\n".join(lines) + "\n")
    return folder / "concepts.toml"


class _Snapshots:
    """Training callbacks that keep the vectors of every budget step from the run's checkpoints."""

    def __init__(self, budgets: tuple[int, ...]) -> None:
        from tinv_cli.training.request import TrainCallbacks

        self.budgets = budgets
        self.vectors: dict[int, Any] = {}
        self.messages: list[str] = []
        outer = self

        class Callbacks(TrainCallbacks):
            def on_checkpoint(self, step: int, path: Path) -> None:
                if step in outer.budgets:
                    from tinv_cli.training import checkpoint

                    outer.vectors[step] = list(checkpoint.load_state(path)["vectors"])

            def on_message(self, message: str) -> None:
                outer.messages.append(message)

        self.callbacks = Callbacks()


def run_one(
    pipe: Any, judge: Any, model: str, spec: ConceptSpec, recipe: str, seed: int, work: Path, cap: int = 0
) -> dict[str, Any]:
    """Train ``spec`` with ``recipe`` and ``seed`` on ``pipe``; score every snapshot."""
    from tinv_cli.embedding import Embedding
    from tinv_cli.project.load import load_project
    from tinv_cli.registry.store import Registry
    from tinv_cli.training.recipe import train
    from tinv_cli.training.request import TrainRequest

    settings = dict(RECIPES[recipe])
    if cap:
        settings["steps"] = min(settings["steps"], cap)
    folder = work / f"{recipe}-{spec.name}-{seed}"
    project = load_project(write_concept(spec, folder, settings, model))
    budgets = tuple(b for b in BUDGETS if b <= settings["steps"])
    snaps = _Snapshots(budgets)
    registry = Registry(work / "home")
    begin = time.perf_counter()
    summary = train(
        TrainRequest(project=project, concept=spec.name, overrides={"seed": seed}),
        snaps.callbacks,
        registry=registry,
        pipeline=pipe,
    )
    wall = time.perf_counter() - begin
    entry = registry.get(summary.entry)
    early = (entry.info.get("training") or {}).get("early_stop")
    scores = {}
    snapshots = dict(snaps.vectors)
    # The registered vectors: the last step's, or early stopping's best.
    final = entry.embedding()
    snapshots["final"] = list(final.vectors)
    for step, vectors in snapshots.items():
        scores[str(step)] = score(pipe, judge, spec, Embedding(final.token, tuple(vectors)), seed)
    return {
        "recipe": recipe,
        "concept": spec.name,
        "kind": spec.kind,
        "seed": seed,
        "steps_run": summary.steps,  # the configured steps; quality_table.steps_run reads early stops
        "wall_time_s": round(wall, 1),
        "train_loop_s": summary.wall_time_s,
        "early_stop": early,
        "scores": scores,
    }


def _done(results: Path) -> set[tuple[str, str, int]]:
    if not results.exists():
        return set()
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return {(r["recipe"], r["concept"], r["seed"]) for r in rows}


def worker(args: argparse.Namespace) -> int:
    """Run the jobs ``args.jobs_list`` (recipe, concept, seed) one after another on one loaded pipeline."""
    import torch

    torch.set_num_threads(args.threads)
    from tinv_cli.models import loading, refs
    from tinv_cli.sampling import loader
    from tinv_cli.shapes.judge import load_judge

    folder = refs.check_model_ref(args.model)
    assert folder is not None
    judge = load_judge(folder / "judge")
    pipe = loader.use_tinv_expansion(
        loading.load_pipeline(args.model, torch_dtype=torch.float32, device="cpu")
    )
    specs = {s.name: s for s in TUNING + TEST}
    with tempfile.TemporaryDirectory(prefix="tinv-learning-") as tmp:
        for job in json.loads(args.jobs_list):
            recipe, concept, seed = job
            if (recipe, concept, seed) in _done(args.results):
                continue
            row = run_one(pipe, judge, args.model, specs[concept], recipe, seed, Path(tmp), args.cap_steps)
            row["threads"] = args.threads
            with args.results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            final = row["scores"]["final"]
            print(
                f"{recipe:>16} {concept:>22} seed {seed}: {row['steps_run']} steps, {row['wall_time_s']:.0f}s, "
                f"reconstruction {final['reconstruction']:.2f}, editability {final['editability']:.2f}",
                flush=True,
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:scenes")
    parser.add_argument("--set", choices=sorted(SETS), default="test")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--concepts", nargs="+", help="only these concepts of the set")
    parser.add_argument("--jobs", type=int, default=1, help="workers side by side (1 thread each)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", type=Path, required=True, help="JSON lines, one per run; reruns resume")
    parser.add_argument("--no-write", action="store_true", help="print the table; leave docs/quality.md")
    parser.add_argument("--cap-steps", type=int, default=0, help="stop every run by this step (a smoke test)")
    parser.add_argument("--jobs-list", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.jobs_list:
        return worker(args)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    todo = [
        (r, s.name, seed)
        for r in args.recipes
        for s in SETS[args.set]
        if not args.concepts or s.name in args.concepts
        for seed in args.seeds
        if (r, s.name, seed) not in _done(args.results)
    ]
    # Longest first, dealt round-robin, so the workers finish together.
    todo.sort(key=lambda job: -RECIPES[job[0]]["steps"])
    shares = [todo[i :: args.jobs] for i in range(args.jobs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    base = [sys.executable, __file__, "--model", args.model, "--results", str(args.results)]
    base += ["--cap-steps", str(args.cap_steps)]
    # Each worker has a TINV_HOME of its own: its runs, their locks and its registry, removed at the end.
    homes = tempfile.TemporaryDirectory(prefix="tinv-learning-homes-")
    procs = [
        subprocess.Popen(
            [*base, "--threads", str(args.threads), "--jobs-list", json.dumps(share)],
            env={**env, "TINV_HOME": str(Path(homes.name) / str(n))},
        )
        for n, share in enumerate(shares)
        if share
    ]
    failed = sum(p.wait() != 0 for p in procs)
    homes.cleanup()
    if failed:
        print(
            f"{failed} worker(s) failed; rerun the same command to finish the missing runs", file=sys.stderr
        )
        return 1
    from quality_table import render

    spread = f"{args.jobs} worker(s) side by side, {args.threads} torch thread(s) each"
    order = list(dict.fromkeys([*args.recipes, *RECIPES]))  # the recipes asked for first
    text = render(args.results, args.set, machine(spread), " ".join(sys.argv[1:]), order=order)
    print(text)
    if not args.no_write:
        write_section(ROOT / "docs" / "quality.md", f"learning-{args.set}", text, title="# Embedding quality")
    return 0


if __name__ == "__main__":
    sys.exit(main())
