"""Where the resident memory of ``tinv train`` goes, phase by phase, on a Stable Diffusion 1.5-sized model.

A random-weights SD 1.5-sized diffusers folder (fp32 safetensors, as on the Hub; built once with
``train_speed.py``'s model code and kept under ``--work``) is trained by tinv's own recipe
(``tinv_cli.training.recipe.train``, loading the folder as a user's run does) in a fresh process per precision,
at batch 1. At each phase boundary the child reads ``VmRSS`` (resident now) and ``VmHWM`` (the peak since the
last boundary: ``/proc/self/clear_refs`` resets it), so each row gives the exact peak *during* that phase and
the resident memory left at its end; the largest of those peaks is the process's peak from start, what a user
sees. Linux only. Memory does not depend on the machine's load, so this may run beside other work; it reports
no timings.

    python benchmarks/memory_profile.py                         # fp32 and bf16, 2 steps, validation in fp32
    python benchmarks/memory_profile.py --precisions bf16 --steps 1 --validate none
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MIXED = {"fp32": "no", "bf16": "bf16"}
TOKEN = "<mem-toy>"
GIB = 2**30


# --------------------------------------------------------------------------------------------------------------
# The child: one training run, marked phase by phase.


def _status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon and RssFile of this process, in bytes."""
    values = {}
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            values[key] = int(rest.split()[0]) * 1024
    return values


class Marks:
    """Phase boundaries: each ``mark(name)`` ends phase ``name``, recording its peak and what it left."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def mark(self, name: str) -> None:
        now = _status()
        rss = now["VmRSS"]
        # RssFile: pages of mapped files (the weights' safetensors files while tensors still map them).
        self.rows.append({"phase": name, "peak": max(now["VmHWM"], rss), "rss": rss, "file": now["RssFile"]})
        Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")  # VmHWM := VmRSS from here


def child(args: argparse.Namespace) -> None:
    marks = Marks()
    import torch  # noqa: F401  (the imports a run pays before any model: part of what a user sees)
    from diffusers import DiffusionPipeline  # noqa: F401

    import tinv_cli.models.loading as loading
    from tinv_cli.project.config import Concept, ModelConfig, Project, TrainConfig
    from tinv_cli.registry.store import Registry
    from tinv_cli.training import inversion, trainable
    from tinv_cli.training.recipe import train
    from tinv_cli.training.request import TrainCallbacks, TrainRequest

    marks.mark("imports")
    work = Path(args.work)
    os.environ["TINV_HOME"] = str(work / f"home-{args.child}")

    # Boundaries inside setup: wrappers that only read /proc around the functions the recipe calls.
    def around(module: Any, name: str, before: str | None, after: str) -> None:
        inner = getattr(module, name)

        def wrapped(*a: Any, **k: Any) -> Any:
            if before:
                marks.mark(before)
            result = inner(*a, **k)
            marks.mark(after)
            return result

        setattr(module, name, wrapped)

    around(loading, "load_pipeline", "run setup (settings, images, accelerate)", "load_pipeline")
    around(inversion, "encode_latents", "attach: tokens, rows, freeze, layout", "attach: latents cached")
    around(trainable, "attach", None, "attach: prompts tokenized, VAE moved")

    steps = args.steps
    validate = args.child in args.validate

    class Phases(TrainCallbacks):
        def on_start(self, info: Any) -> None:
            marks.mark("optimizer and state")

        def on_step(self, step: int, loss: float | None, lr: float, it_s: float | None) -> None:
            if step == 1:
                marks.mark("first step")
            elif step == steps:
                marks.mark(f"steps 2-{steps}")

        def on_validation(self, step: int, path: Path) -> None:
            marks.mark("checkpoint, then validation grid")

        def on_end(self, summary: Any) -> None:
            marks.mark("registration")

    settings = TrainConfig(
        steps=steps,
        batch_size=1,
        gradient_accumulation=1,
        resolution=args.resolution,
        mixed_precision=MIXED[args.child],  # type: ignore[arg-type]
        checkpoint_every=0,
        num_validation_images=1,
        validation_every=0,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    concept = Concept(
        name=f"mem-{args.child}",
        token=TOKEN,
        images=work / "images",
        initializer="toy",
        train=settings,
        validation_prompt=f"a {TOKEN} on a table" if validate else None,
    )
    project = Project(
        path=work / "concepts.toml",
        model=ModelConfig(base=str(work / "model")),
        concepts={concept.name: concept},
    )
    summary = train(TrainRequest(project, concept.name, restart=True), Phases(), registry=Registry())
    marks.mark("cleanup")
    Path(args.out).write_text(
        json.dumps(
            {
                "rows": marks.rows,
                "steps": summary.steps,
                "validate": validate,
                "checkpointing": args.gradient_checkpointing,
            }
        ),
        encoding="utf-8",
    )


# --------------------------------------------------------------------------------------------------------------
# The parent: the model folder once, one child per precision, the tables.


def build(work: Path) -> None:
    """The SD 1.5-sized random model as a diffusers folder, and one 256 px training image."""
    import numpy as np
    from PIL import Image

    if not (work / "model" / "model_index.json").is_file():
        from train_speed import save_random_model  # this folder's SD 1.5-sized random model

        save_random_model(argparse.Namespace(model="sd15"), work / "model")
    images = work / "images"
    if not (images / "0.png").is_file():
        images.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / "0.png")


def table(precision: str, result: dict[str, Any], resolution: int) -> str:
    rows = result["rows"]
    top = max(r["peak"] for r in rows)
    validation = "with a validation grid" if result["validate"] else "no validation_prompt"
    validation += ", gradient checkpointing" if result.get("checkpointing") else ""
    lines = [
        f"#### {precision}, {resolution} px, batch 1, {result['steps']} steps, {validation}",
        "",
        "| phase | peak during GiB | resident after GiB | of which mapped files GiB |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        bold = "**" if r["peak"] == top else ""
        lines.append(
            f"| {r['phase']} | {bold}{r['peak'] / GIB:.2f}{bold} | {r['rss'] / GIB:.2f} | {r['file'] / GIB:.2f} |"
        )
    lines += ["", f"Peak from process start: **{top / GIB:.2f} GiB**."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=sorted(MIXED))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument(
        "--validate", nargs="*", default=["fp32"], help="precisions whose run has a validation_prompt"
    )
    parser.add_argument(
        "--gradient-checkpointing", action="store_true", help="train with gradient_checkpointing = true"
    )
    parser.add_argument("--work", help="where the model folder is kept between runs (default: a temp folder)")
    parser.add_argument("--json", help="also write the rows of every precision to this file")
    parser.add_argument("--child", choices=sorted(MIXED), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.validate == ["none"]:
        args.validate = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        # In a process of its own, so that building the model leaves nothing resident in this one.
        code = f"import sys; sys.path[:0] = [{str(ROOT / 'benchmarks')!r}]; import memory_profile as m; "
        subprocess.run([sys.executable, "-c", code + f"m.build(m.Path({str(work)!r}))"], check=True)
        results = {}
        for precision in args.precisions:
            out = work / f"profile-{precision}.json"
            command = [sys.executable, __file__, "--child", precision, "--out", str(out), "--work", str(work)]
            command += ["--steps", str(args.steps), "--resolution", str(args.resolution)]
            command += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
            command += ["--validate", *args.validate] if args.validate else ["--validate"]
            subprocess.run(command, check=True)
            results[precision] = json.loads(out.read_text(encoding="utf-8"))
            print(table(precision, results[precision], args.resolution) + "\n", flush=True)
    from report import machine  # this folder's machine line

    print(f"Machine: {machine()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
