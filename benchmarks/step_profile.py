"""What tinv's training step runs beyond the floor: both profiled op by op (torch.profiler), in one process.

    .venv/bin/python benchmarks/step_profile.py [--precision bf16|fp32] [--steps 4] [--model sd15|tiny] [--no-write]

``train_speed.py`` times whole steps, and on a 2-core machine single steps scatter by up to 30 %, so a few
percent between tinv and the floor cannot be read from it. This counts work instead: tinv's own trainer
(``tinv_cli.training.recipe.train`` on the in-memory SD 1.5-sized random-weights pipeline, as ``train_speed.py``
variant (b) runs it) for ``--warmup`` + ``--steps`` steps, the last ``--steps`` under the profiler, then the
floor (variant (c): text encoder and UNet forward and backward on fixed inputs) on the same modules, the same
way. It prints, per step, each op's self CPU time and calls for both, and lists the ops tinv calls more often
than the floor: the whole of what a tinv step adds. Writes its section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from report import machine, markers, write_section  # this folder's shared machine line and docs writer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
START, END = markers("step_profile")

Ops = dict[str, tuple[float, int]]  # op -> (self CPU ms per step, calls per step)


def _ops(prof: Any, steps: int) -> Ops:
    return {e.key: (e.self_cpu_time_total / 1000 / steps, e.count / steps) for e in prof.key_averages()}


def profile_tinv(args: argparse.Namespace, pipe: Any, work: Path) -> tuple[Ops, list[float]]:
    """tinv's trainer on ``pipe``; the last ``args.steps`` steps profiled, every step timed."""
    import os

    import torch
    import train_speed as ts
    from PIL import Image

    from tinv_cli.training.recipe import train
    from tinv_cli.training.request import TrainCallbacks, TrainRequest

    os.environ["TINV_HOME"] = str(work / "home")
    (work / "images").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (args.resolution, args.resolution), (200, 60, 40)).save(work / "images" / "a.png")
    total = args.warmup + args.steps
    project = ts.bench_project(work, total, args.resolution, args.precision)
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    times: list[float] = []

    class Steps(TrainCallbacks):
        def on_start(self, info: Any) -> None:
            self.last = time.perf_counter()

        def on_step(self, step: int, loss: float | None, lr: float, it_s: float | None) -> None:
            now = time.perf_counter()
            times.append(now - self.last)
            self.last = now
            if step == args.warmup:
                prof.__enter__()
            if step == total:
                prof.__exit__(None, None, None)

    train(TrainRequest(project, "bench"), Steps(), pipeline=pipe)
    return _ops(prof, args.steps), times[args.warmup :]


def profile_floor(args: argparse.Namespace, pipe: Any) -> tuple[Ops, list[float]]:
    """Variant (c)'s step (``train_speed.floor_step``) on ``pipe``'s modules; the last ``args.steps`` profiled."""
    import torch
    import train_speed as ts

    modules = {
        name: getattr(pipe, name) for name in ("text_encoder", "unet", "vae", "tokenizer", "scheduler")
    }
    step = ts.floor_step(modules, args.resolution, torch.device("cpu"))
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    times = []
    for n in range(args.warmup + args.steps):
        if n == args.warmup:
            prof.__enter__()
        begin = time.perf_counter()
        step()
        times.append(time.perf_counter() - begin)
    prof.__exit__(None, None, None)
    return _ops(prof, args.steps), times[args.warmup :]


def render(args: argparse.Namespace, tinv: Ops, floor: Ops, times: dict[str, list[float]]) -> str:
    total = {name: sum(ms for ms, _ in ops.values()) for name, ops in (("tinv", tinv), ("floor", floor))}
    floor_calls = {op: calls for op, (_, calls) in floor.items()}
    # Per op tinv calls more often: the self time of its extra calls, at tinv's own time per call.
    extra = sorted(
        (
            (op, ms * (calls - floor_calls.get(op, 0)) / calls, calls, floor_calls.get(op, 0))
            for op, (ms, calls) in tinv.items()
            if calls > floor_calls.get(op, 0) + 1e-9
        ),
        key=lambda row: -row[1],
    )
    added = sum(ms for _, ms, _, _ in extra)
    heavy = sorted(tinv, key=lambda op: -tinv[op][0])[:6]
    same = all(abs(tinv[op][1] - floor_calls.get(op, 0)) < 1e-9 for op in heavy)
    lines = [
        START,
        f"Command: `.venv/bin/python benchmarks/step_profile.py --precision {args.precision} --steps {args.steps}`",
        "",
        f"Machine: {machine()}",
        "",
        f"{args.precision}, {args.resolution} px, batch 1, `--model {args.model}`: {args.steps} profiled steps of each "
        f"after {args.warmup}. Self CPU time per step, summed over ops: tinv {total['tinv']:,.0f} ms, the floor "
        f"{total['floor']:,.0f} ms (their step times in this run: tinv "
        f"{', '.join(f'{t:.2f}' for t in times['tinv'])} s; floor {', '.join(f'{t:.2f}' for t in times['floor'])} s).",
        "",
        "The heaviest ops, per step:",
        "",
        "| op | tinv self ms | tinv calls | floor self ms | floor calls |",
        "|---|---:|---:|---:|---:|",
    ]
    for op in heavy:
        ms, calls = tinv[op]
        fms, fcalls = floor.get(op, (0.0, 0))
        lines.append(f"| `{op[:60]}` | {ms:,.1f} | {calls:g} | {fms:,.1f} | {fcalls:g} |")
    lines += [
        "",
        f"The same heavy ops with the same calls: {'yes' if same else 'no'}. What tinv runs beyond the floor "
        f"(ops it calls more often; self time of the extra calls, per step): {added:.1f} ms in all, "
        f"{100 * added / total['tinv']:.2f} % of tinv's step. The largest:",
        "",
        "| op | extra self ms per step | tinv calls | floor calls |",
        "|---|---:|---:|---:|",
        *(f"| `{op[:60]}` | {ms:.2f} | {calls:g} | {fcalls:g} |" for op, ms, calls, fcalls in extra[:8]),
        END,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--model", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    import torch
    import train_speed as ts

    dtype = getattr(torch, ts.DTYPES[args.precision])
    with tempfile.TemporaryDirectory(prefix="tinv-step-profile-") as tmp:
        work = Path(tmp)
        pipe = ts.model_pipeline(argparse.Namespace(model=args.model), dtype, work)
        tinv, tinv_times = profile_tinv(args, pipe, work)
        floor, floor_times = profile_floor(args, pipe)
    text = render(args, tinv, floor, {"tinv": tinv_times, "floor": floor_times})
    print(text)
    if not args.no_write:
        write_section(
            ROOT / "docs" / "benchmarks.md",
            "step_profile",
            text,
            heading="## What tinv's step adds to the floor (`benchmarks/step_profile.py`)\n\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
