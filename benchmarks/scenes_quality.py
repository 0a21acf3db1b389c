"""Measures builtin:scenes: prompt fidelity per attribute, the judge's accuracy per attribute, size, build time.

    .venv/bin/python benchmarks/scenes_quality.py [--model builtin:scenes] [--per-prompt 16] [--no-write]

Prompt fidelity: 60 prompts that name every attribute (``measure.scenes_prompts``: each colour and shape pair
as an object on a ground, tiny or big, filled or outlined, and as a style), sampled as ``tinv sample`` samples
(DPM++ 2M, 20 steps, guidance 7.5) and read by the judge. Writes its section of ``docs/shapes.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from report import machine, markers, write_section  # this folder's shared machine line and docs writer

ROOT = Path(__file__).resolve().parent.parent
START, END = markers("scenes_quality")
BAR = 0.90


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:scenes")
    parser.add_argument("--per-prompt", type=int, default=16)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from tinv_cli.models import loading, refs
    from tinv_cli.shapes import measure
    from tinv_cli.shapes.judge import load_judge

    folder = refs.check_model_ref(args.model)
    if folder is None or not (folder / "judge" / "judge.json").is_file():
        raise SystemExit(f"{args.model}: not a shapes model folder (no judge/judge.json)")
    judge = load_judge(folder / "judge")
    pipe = loading.load_pipeline(args.model, torch_dtype=torch.float32, device="cpu")
    begin = time.perf_counter()
    scores, whole = measure.attribute_fidelity(
        pipe, judge, measure.scenes_prompts(), per_prompt=args.per_prompt
    )
    seconds = time.perf_counter() - begin
    build = json.loads((folder / "build.json").read_text())
    held = judge.info["held_out"]
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    params = sum(
        sum(t.numel() for t in module.parameters()) for module in (pipe.unet, pipe.vae, pipe.text_encoder)
    )
    lines = [
        START,
        f"Command: `.venv/bin/python benchmarks/scenes_quality.py --per-prompt {args.per_prompt}`",
        "",
        f"Machine: {machine()}",
        "",
        f"Model: `{args.model}`, {size / 1e6:.1f} MB on disk ({params / 1e6:.2f} M parameters), built by "
        f"`python -m tinv_cli.shapes.build --world scenes` in {build['seconds_this_run'] / 60:.0f} minutes "
        f"with {build.get('threads', '?')} thread(s) (torch {build['torch']}).",
        "",
        "| attribute | prompt fidelity | judge on held-out renders |",
        "|---|---:|---:|",
    ]
    for item in scores:
        lines.append(
            f"| {item.attribute} | {100 * item.correct / item.samples:.1f} % ({item.correct}/{item.samples}) | "
            f"{100 * held['accuracy'][item.attribute]:.1f} % |"
        )
    worst = min(item.correct / item.samples for item in scores)
    lines += [
        "",
        f"Every named attribute at once: {100 * whole:.1f} % of samples. Lowest attribute: {100 * worst:.1f} % "
        f"(bar: {100 * BAR:.0f} %). Judge: {held['images']} renders of world seed {held['seed']}, which "
        f"neither it nor the model saw. Sampling took {seconds:.0f} s.",
        END,
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(
            ROOT / "docs" / "shapes.md", "scenes_quality", text, heading="## builtin:scenes: measurements\n\n"
        )
    return 0 if worst >= BAR else 1


if __name__ == "__main__":
    sys.exit(main())
