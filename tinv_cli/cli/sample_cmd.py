"""`tinv sample`: generate images with any registered concepts in the prompt."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tinv_cli.cli.app import app
from tinv_cli.cli.options import Json, ModelConfigDir, Prediction, ProjectPath, Revision
from tinv_cli.cli.render import emit_json, note, sentence

if TYPE_CHECKING:
    from tinv_cli.sampling.sample import Progress

# Kept in step with tinv_cli.sampling.sample.SCHEDULERS (a test checks); listed here so --help imports no ML library.
SCHEDULER_NAMES = "ddim, euler, euler-a, dpm++2m, dpm++2m-karras, pndm, heun, unipc"


class _ProgressDisplay:
    """A bar over the denoising steps on stderr, and the loading stages as notes."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None
        self.task: Any = None

    def __call__(self, event: Progress) -> None:
        if event.stage == "note":  # a warning: shown with --json too (stderr stays free for it)
            note(f"Note: {event.message}")
            return
        if self.quiet:
            return
        if event.stage != "denoise":
            note(sentence(event.message) + " ...")
            return
        if self.bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(
                TextColumn("denoising"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("denoising", total=event.total)
        self.bar.update(self.task, completed=event.done, total=event.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@app.command()
def sample(
    prompt: Annotated[str, typer.Argument(help='The prompt, e.g. "A <cat-toy> backpack".')],
    num_images: Annotated[int, typer.Option("--num-images", "-n", min=1, help="Images to generate.")] = 1,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", min=0, help="Seed of the first image; image i uses seed + i. Default: random."
        ),
    ] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Denoising steps.")] = 30,
    guidance: Annotated[
        float, typer.Option("--guidance", min=0.0, help="Classifier-free guidance (CFG) scale.")
    ] = 7.5,
    negative: Annotated[
        str, typer.Option("--negative", help="Negative prompt (may name concepts too).")
    ] = "",
    scheduler: Annotated[str, typer.Option("--scheduler", help=f"Sampler: {SCHEDULER_NAMES}.")] = "dpm++2m",
    size: Annotated[
        str | None,
        typer.Option("--size", help="WIDTHxHEIGHT in pixels, multiples of 8 (default: the model's)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Base model: Hub id, local diffusers folder or checkpoint file (default: the project's, else "
            "the concepts' own).",
        ),
    ] = None,
    revision: Revision = None,
    model_config: ModelConfigDir = None,
    prediction: Prediction = "auto",
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the images.", file_okay=False)] = Path(
        "samples"
    ),
    grid: Annotated[
        bool,
        typer.Option(
            "--grid", help="Also write OUT/<prompt-slug>-<seed>-grid.png: every image, labelled by seed."
        ),
    ] = False,
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu.")
    ] = "auto",
    dtype: Annotated[
        str, typer.Option("--dtype", help="auto (fp16 on CUDA, fp32 elsewhere), fp32, fp16 or bf16.")
    ] = "auto",
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            min=1,
            help="Images per forward pass (memory vs speed); each image still depends only on its seed.",
        ),
    ] = 1,
    low_vram: Annotated[
        bool,
        typer.Option(
            "--low-vram", help="CPU offload on CUDA, attention slicing elsewhere: less memory, slower."
        ),
    ] = False,
    keep_negatives: Annotated[
        bool,
        typer.Option(
            "--keep-negatives",
            help="Leave a negative embedding (kind negative) named in the prompt there; by default it is moved "
            "to the negative prompt.",
        ),
    ] = False,
    project: ProjectPath = None,
    json: Json = False,
) -> None:
    """Generate images; every <concept> the prompt names is found and loaded.

    A concept is written in angle brackets. <cat-toy> is the registry concept whose token is <cat-toy>, else the
    one named cat-toy, else the project concept with that token. Pin a version with @: <cat-toy@2>. ComfyUI's
    embedding:cat-toy means <cat-toy>. Other words without brackets are never taken for concepts. A negative
    embedding named in the prompt is moved to the negative prompt, with a note (--keep-negatives: not).

    Images are written as OUT/<prompt-slug>-<seed>.png (image i has seed + i; a taken name gets -2, -3, ...),
    with the generation parameters in the PNG (AUTOMATIC1111 "parameters" plus tinv's JSON). Paths go to
    stdout, progress to stderr.
    """
    from tinv_cli.sampling.sample import SampleOptions, parse_size, run

    options = SampleOptions(
        negative_prompt=negative,
        num_images=num_images,
        seed=seed,
        steps=steps,
        guidance=guidance,
        scheduler=scheduler,
        size=parse_size(size) if size else None,
        model=model,
        revision=revision,
        model_config=str(model_config.absolute()) if model_config else None,
        prediction=prediction or "auto",
        project=project.resolve() if project else None,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        low_vram=low_vram,
        move_negatives=not keep_negatives,
    )
    from tinv_cli.paths import check_folder

    check_folder(out.absolute(), "output folder")  # before the model loads, not after the images are made
    display = _ProgressDisplay(quiet=json)
    try:
        result = run(prompt, options, progress=display)
    finally:
        display.close()
    paths = result.save(out.absolute(), grid=grid)
    if json:
        images = paths[: len(result.seeds)]
        emit_json(
            {
                "images": [{"path": str(p), "seed": s} for p, s in zip(images, result.seeds, strict=True)],
                "grid": str(paths[-1]) if grid else None,
                "model": result.model.base,
                "model_source": result.model.source,
                "size": list(result.size),
                "concepts": [concept.to_dict() for concept in result.concepts],
            }
        )
        return
    for path in paths:
        typer.echo(str(path))
