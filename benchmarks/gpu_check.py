"""The GPU check: speed and memory at 512 px, and the training paths only a GPU takes, in a few minutes.

    bash benchmarks/gpu.sh            # on a CUDA machine: measures, checks, writes its section of docs/benchmarks.md
    bash benchmarks/gpu.sh --tiny     # the same checks on tiny models on the CPU, in seconds (a test runs this)

Checks, each PASS, FAIL or SKIP (with the reason):

- speed: s/step and peak allocated memory at 512 px from ``train_speed.py`` (its lockstep machinery, run as a
  subprocess): on SD 1.5-sized random models the reimplemented example, tinv and the floor in fp16 and bf16,
  tinv with ``compile = true``; on SDXL-sized random models tinv in fp16 and bf16 (the example and the floor
  are SD 1.x's step).
- fp16 GradScaler: tinv's fp16 goes through accelerate, whose ``Accelerator(mixed_precision="fp16")`` on CUDA
  holds a ``GradScaler``: ``accelerator.backward`` scales the loss and the prepared optimizer unscales, skips
  steps with inf/nan gradients and updates the scale; the scaler's state goes into the checkpoint. A short
  fp16 run must end with a finite loss, vectors that moved and a scaler state in its checkpoint.
- resume: a run stopped after k steps through the trainer's own stop (SIGINT from its step callback, as
  Ctrl-C), then resumed, ends with vectors bitwise equal to an uninterrupted run's (on CUDA the noise,
  latent and timestep draws come from a CUDA generator, whose state the checkpoint holds).
- validation: a run with ``validation_every`` makes its grids (on CUDA in the worker thread) and ends with
  vectors equal to those of a run without validation.

The correctness checks train tests/tiny.py's pipeline on the device (the paths they check do not depend on the
model's size). Nothing is downloaded: every model is built in memory with random weights.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from report import write_section  # this folder's docs writer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tinv_cli.training.request import TrainCallbacks  # noqa: E402  (no torch: the core imports it lazily)

SECTION = "gpu_check"
TOKEN = "<gpu-check>"


@dataclass
class Check:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str


def say(line: str) -> None:
    print(line, flush=True)


# --------------------------------------------------------------------------------------------------------------
# Speed: train_speed.py's lockstep runs.


def speed_runs(cuda: bool, tiny: bool, compiles: bool) -> list[tuple[str, list[str]]]:
    """(label, train_speed.py arguments) of each speed run."""
    import torch

    sd, xl = ("tiny", "tiny-sdxl") if tiny else ("sd15", "sdxl")
    resolution = ["--resolution", "32" if tiny else "512"]
    timing = ["--steps", "1" if tiny else "3", "--warmup", "1"]
    bf16 = cuda and torch.cuda.is_bf16_supported()
    precisions = ("fp16,bf16" if bf16 else "fp16") if cuda else "fp32"
    runs = [
        (f"{sd}: example, tinv, floor", ["--model", sd, "--precisions", precisions, "--variants", "a,b,c"]),
        (f"{xl}: tinv", ["--model", xl, "--precisions", precisions, "--variants", "b"]),
    ]
    if compiles:
        runs.append(
            (f"{sd}: tinv compiled", ["--model", sd, "--precisions", "fp16", "--variants", "b", "--compile"])
        )
    return [(label, [*a, *resolution, *timing]) for label, a in runs]


def check_speed(cuda: bool, tiny: bool, work: Path) -> tuple[list[Check], list[dict[str, Any]]]:
    import torch

    checks: list[Check] = []
    rows: list[dict[str, Any]] = []
    if cuda and not torch.cuda.is_bf16_supported():
        checks.append(Check("speed bf16", "SKIP", f"{torch.cuda.get_device_name(0)} has no bf16 support"))
    compiles = cuda and importlib.util.find_spec("triton") is not None
    if cuda and not compiles:
        checks.append(
            Check("speed compile", "SKIP", "torch.compile needs triton on CUDA, and it is not installed")
        )
    if not cuda:
        checks.append(
            Check("speed fp16/bf16", "SKIP", "no CUDA: fp16 needs a GPU; the tiny run measures fp32")
        )
        checks.append(
            Check("speed compile", "SKIP", "no CUDA: compiling on the CPU takes longer than --tiny's budget")
        )
    for i, (label, arguments) in enumerate(speed_runs(cuda, tiny, compiles)):
        out = work / f"speed-{i}.json"
        command = [
            sys.executable,
            str(ROOT / "benchmarks" / "train_speed.py"),
            *arguments,
            "--no-write",
            "--json",
            str(out),
        ]
        say("+ " + " ".join(command))
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr)[-2000:]
            checks.append(
                Check(f"speed {label}", "FAIL", f"train_speed.py exited {done.returncode}:\n{tail}")
            )
            continue
        results = json.loads(out.read_text(encoding="utf-8"))["results"]
        bad = []
        for precision, variants in results.items():
            for key, r in variants.items():
                rows.append({"run": label, "precision": precision, "compile": "--compile" in arguments, **r})
                if not (math.isfinite(r["step_s"]) and r["step_s"] > 0):
                    bad.append(f"{precision} ({key}) {r['step_s']} s/step")
        elapsed = f"{time.perf_counter() - started:.0f} s"
        checks.append(Check(f"speed {label}", "FAIL" if bad else "PASS", ", ".join(bad) or elapsed))
    return checks, rows


# --------------------------------------------------------------------------------------------------------------
# Correctness: tinv's own trainer on a tiny pipeline on the device.


class Trainer:
    """Runs ``recipe.train`` on one in-memory pipeline, each run in a $TINV_HOME of its own."""

    def __init__(self, work: Path, device: Any) -> None:
        import numpy as np
        from PIL import Image

        from tests.tiny import build_tiny_pipeline

        self.work, self.device, self.runs = work, device, 0
        self.pipe = build_tiny_pipeline().to(device)
        self.images = work / "images"
        self.images.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(self.images / f"{i}.png")

    def initial(self) -> Any:
        """The initializer's row: where the vectors start."""
        tokenizer, encoder = self.pipe.tokenizer, self.pipe.text_encoder
        row = tokenizer.encode("toy", add_special_tokens=False)[0]
        return encoder.get_input_embeddings().weight[row].detach().float().cpu().clone()

    def run(
        self,
        *,
        home: str | None = None,
        callbacks: Any = None,
        validation_prompt: str | None = None,
        **train: Any,
    ) -> Any:
        from tinv_cli.project.config import Concept, ModelConfig, Project, TrainConfig
        from tinv_cli.training.recipe import train as train_concept
        from tinv_cli.training.request import TrainRequest

        if home is None:
            self.runs += 1
            home = str(self.work / f"home-{self.runs}")
        os.environ["TINV_HOME"] = home
        settings = TrainConfig(
            resolution=32, batch_size=1, gradient_accumulation=1, learning_rate=5e-3, **train
        )
        concept = Concept(
            name="gpu-check",
            token=TOKEN,
            images=self.images,
            initializer="toy",
            train=settings,
            validation_prompt=validation_prompt,
        )
        project = Project(
            path=self.work / "concepts.toml",
            model=ModelConfig(base="tiny-random"),
            concepts={"gpu-check": concept},
        )
        return train_concept(TrainRequest(project, "gpu-check"), callbacks, pipeline=self.pipe)

    @staticmethod
    def vectors(summary: Any) -> Any:
        from tinv_cli.registry.store import Registry

        return Registry().get(summary.entry).embedding().vectors[0]


def check_fp16_scaler(trainer: Trainer, cuda: bool) -> Check:
    import torch

    from tinv_cli.training import checkpoint

    name = "fp16 GradScaler"
    if not cuda:
        return Check(
            name, "SKIP", "no CUDA: tinv trains fp16 on a CPU in full precision, so there is no GradScaler"
        )
    summary = trainer.run(steps=12, mixed_precision="fp16", checkpoint_every=0)
    info = checkpoint.read_info(summary.run_dir)
    scaler = checkpoint.load_state(info.path).get("scaler") if info is not None else None
    moved = not torch.equal(Trainer.vectors(summary), trainer.initial())
    loss = summary.final_loss
    problems = [
        *([] if loss is not None and math.isfinite(loss) else [f"final loss {loss}"]),
        *([] if moved else ["the vectors did not move"]),
        *([] if scaler else ["no GradScaler state in the checkpoint"]),
    ]
    scale = scaler.get("scale") if isinstance(scaler, dict) else None
    detail = (
        f"12 fp16 steps, final loss {loss:.4f}, vectors moved, loss scale {scale}" if not problems else ""
    )
    return Check(name, "FAIL" if problems else "PASS", "; ".join(problems) or detail)


class StopAt(TrainCallbacks):
    """The trainer's own stop: SIGINT from its step callback at step ``k``, as Ctrl-C would."""

    def __init__(self, k: int) -> None:
        self.k = k

    def on_step(self, step: int, loss: float | None, lr: float, it_s: float | None) -> None:
        import signal

        if step == self.k:
            os.kill(os.getpid(), signal.SIGINT)


def check_resume(trainer: Trainer, cuda: bool) -> Check:
    import torch

    from tinv_cli.training.request import TrainingInterrupted

    precision = "fp16" if cuda else "no"
    settings = {"steps": 10, "mixed_precision": precision, "checkpoint_every": 0, "seed": 3}
    straight = Trainer.vectors(trainer.run(**settings))
    # Two uninterrupted runs first: if they differ, the device's kernels are not deterministic and no resume
    # can be bitwise; that is a different finding from a resume that loses state.
    again = Trainer.vectors(trainer.run(**settings))
    if not torch.equal(again, straight):
        diff = (again - straight).abs().max().item()
        return Check(
            "resume",
            "FAIL",
            f"two uninterrupted runs already differ (max {diff:.3g}): kernels not deterministic",
        )
    home = str(trainer.work / "home-resumed")
    try:
        trainer.run(home=home, callbacks=StopAt(4), **settings)
        return Check("resume", "FAIL", "the stop at step 4 did not interrupt the run")
    except TrainingInterrupted:
        pass
    resumed = trainer.run(home=home, **settings)
    generator, label = ("CUDA", "fp16") if cuda else ("CPU", "fp32")
    if resumed.start_step != 4:
        return Check("resume", "FAIL", f"resumed from step {resumed.start_step}, not 4")
    if not torch.equal(Trainer.vectors(resumed), straight):
        diff = (Trainer.vectors(resumed) - straight).abs().max().item()
        return Check(
            "resume", "FAIL", f"resumed vectors differ from the uninterrupted run's (max {diff:.3g})"
        )
    return Check(
        "resume", "PASS", f"{label}, stopped at 4/10 and resumed: bitwise equal ({generator} generators)"
    )


def check_validation(trainer: Trainer, cuda: bool) -> Check:
    import torch

    seen: set[str] = set()

    class Threads(TrainCallbacks):
        def on_step(self, step: int, loss: float | None, lr: float, it_s: float | None) -> None:
            seen.update(t.name for t in threading.enumerate())

    precision = "fp16" if cuda else "no"
    settings = {"steps": 6, "mixed_precision": precision, "checkpoint_every": 0, "seed": 5}
    plain = Trainer.vectors(trainer.run(**settings))
    summary = trainer.run(
        callbacks=Threads(),
        validation_prompt=f"a {TOKEN} on a beach",
        validation_every=2,
        num_validation_images=1,
        **settings,
    )
    grids = [p for p in summary.validation if Path(p).is_file()]
    worker = any(name.startswith("tinv-validation") for name in seen)
    problems = [
        *([] if len(grids) >= 3 else [f"{len(grids)} grids, expected steps 2, 4 and 6"]),
        *([] if worker == cuda else [f"worker thread {'not ' if cuda else ''}used"]),
        *(
            []
            if torch.equal(Trainer.vectors(summary), plain)
            else ["vectors differ from the run without validation"]
        ),
    ]
    where = "in the worker thread" if worker else "in the training thread (CPU)"
    detail = f"{len(grids)} grids made {where}; vectors equal to the run without validation"
    return Check("validation", "FAIL" if problems else "PASS", "; ".join(problems) or detail)


def check_correctness(cuda: bool, work: Path) -> list[Check]:
    import torch

    trainer = Trainer(work / "train", torch.device("cuda" if cuda else "cpu"))
    checks = []
    for run in (check_fp16_scaler, check_resume, check_validation):
        started = time.perf_counter()
        check = run(trainer, cuda)
        if check.status == "PASS":
            check.detail += f" ({time.perf_counter() - started:.0f} s)"
        checks.append(check)
        say(f"{check.status} {check.name}: {check.detail}")
    return checks


# --------------------------------------------------------------------------------------------------------------
# The report.


def gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def section(checks: list[Check], rows: list[dict[str, Any]], machine: str, command: str) -> str:
    start, end = f"<!-- {SECTION}:start -->", f"<!-- {SECTION}:end -->"
    unit = "peak allocated GiB" if "CUDA" in machine else "peak RSS GiB"
    lines = [
        start,
        "## GPU check (`benchmarks/gpu.sh`)",
        "",
        "`bash benchmarks/gpu.sh` on a CUDA machine set up as the README says runs `benchmarks/gpu_check.py`",
        "in under 8 minutes and wrote this section: s/step and peak memory at 512 px on random-weights models",
        "(SD 1.5-sized: the reimplemented example, tinv, the floor; SDXL-sized: tinv), then the checks only a GPU",
        "exercises (correctness checks on tests/tiny.py's pipeline on the GPU). `bash benchmarks/gpu.sh --tiny`",
        "runs the same checks on tiny models on the CPU (tests/test_gpu_check.py) and writes nothing.",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine}",
        "",
        f"| run | precision | variant | s/step (best) | {unit} after build | {unit} from start |",
        "|---|---|---|---:|---:|---:|",
    ]
    names = {"a": "example (reimplemented)", "b": "tinv", "c": "floor"}
    for r in rows:
        variant = names[r["variant"]] + (", compiled" if r["compile"] else "")
        lines.append(
            f"| {r['run'].split(':')[0]} | {r['precision']} | {variant} | {r['step_s']:.3f} ({r['min_s']:.3f}) | "
            f"{gib(r['peak_bytes'])} | {gib(r.get('peak_start_bytes', r['peak_bytes']))} |"
        )
    lines += ["", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c.name} | {c.status} | {c.detail.splitlines()[0] if c.detail else ''} |" for c in checks]
    lines += ["", f"Measured {time.strftime('%Y-%m-%d')}.", end]
    return "\n".join(lines)


def machine_line(cuda: bool) -> str:
    import platform

    import torch

    if cuda:
        props = torch.cuda.get_device_properties(0)
        return (
            f"{props.name} ({props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, CUDA "
            f"{torch.version.cuda}, Python {platform.python_version()}"
        )
    from train_speed import machine

    return machine("cpu")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models, few steps (automatic without CUDA)")
    parser.add_argument("--write", action="store_true", help="write the docs section even when not on CUDA")
    parser.add_argument("--json", metavar="PATH", help="also write every check's result as JSON")
    parser.add_argument("--skip-speed", action="store_true", help="only the correctness checks")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here downloads; a slip fails instead of fetching

    import torch

    cuda = torch.cuda.is_available()
    tiny = args.tiny or not cuda
    say(
        f"gpu_check: {'CUDA, ' + torch.cuda.get_device_name(0) if cuda else 'no CUDA: the CPU'}, "
        f"{'tiny models' if tiny else 'SD 1.5- and SDXL-sized models at 512 px'}"
    )
    started = time.perf_counter()
    checks: list[Check] = []
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.skip_speed:
            checks.append(Check("speed", "SKIP", "--skip-speed"))
        else:
            speed_checks, rows = check_speed(cuda, tiny, work)
            checks += speed_checks
            for c in speed_checks:
                say(f"{c.status} {c.name}: {c.detail}")
        checks += check_correctness(cuda, work)
    for r in rows:
        say(
            f"  {r['run']:<28} {r['precision']} ({r['variant']}){' compiled' if r['compile'] else ''}: "
            f"{r['step_s']:.3f} s/step, peak {gib(r['peak_bytes'])} GiB after build, "
            f"{gib(r.get('peak_start_bytes', r['peak_bytes']))} GiB from start"
        )
    failed = [c for c in checks if c.status == "FAIL"]
    say(
        f"gpu_check: {len(checks) - len(failed)} of {len(checks)} checks passed or skipped, "
        f"{len(failed)} failed, {time.perf_counter() - started:.0f} s"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"checks": [asdict(c) for c in checks], "speed": rows}, indent=1)
        )
    if (cuda and not tiny) or args.write:
        command = "bash benchmarks/gpu.sh " + " ".join(sys.argv[1:])
        write_section(
            ROOT / "docs" / "benchmarks.md",
            SECTION,
            section(checks, rows, machine_line(cuda), command.strip()),
        )
        say("wrote docs/benchmarks.md's GPU check section")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
