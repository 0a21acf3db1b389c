"""`tinv train`: train a concept of the project file, with any `[train]` setting overridden from the command line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from tinv_cli.cli.app import app
from tinv_cli.cli.options import Json, ProjectPath
from tinv_cli.cli.render import emit_json, note
from tinv_cli.training.recipe import TrainCallbacks

if TYPE_CHECKING:
    from pathlib import Path

    from tinv_cli.training.recipe import StartInfo, TrainSummary

_TRAIN = "Training settings (override concepts.toml)"
_CONCEPT = "Concept settings (override concepts.toml)"


def _opt(*names: str, help: str, panel: str = _TRAIN, **kw: Any) -> Any:
    # Options that override the project file default to None: "as concepts.toml says". Every TrainConfig field
    # has one (a test checks), named as the field with dashes, learning_rate also as --lr.
    return typer.Option(*names, help=help, rich_help_panel=panel, **kw)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _size(count: int | None) -> str:
    if count is None:
        return "unknown"
    value = count / 1024**2
    return f"{value / 1024:.1f} GB" if value >= 1024 else f"{value:.1f} MB"


class _Display(TrainCallbacks):
    """Renders the trainer's callbacks on stderr: a progress bar on a terminal, plain lines in a log."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console

        self.quiet = quiet
        self.console = Console(stderr=True)
        self.bar: Any = None
        self.task: Any = None
        self.smoothed: float | None = None
        self.total = 0

    def on_start(self, info: StartInfo) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.total = info.total_steps
        processes = f", {info.num_processes} processes" if info.num_processes > 1 else ""
        self.on_message(
            f"Training {info.name} ({info.token}) on {info.images} images"
            + (f" with {info.model}" if info.model else "")
            + f": {info.device}{processes}, "
            f"mixed precision {info.mixed_precision}, lr {info.learning_rate:g}; run folder {info.run_dir}"
        )
        if self.quiet or not self.console.is_terminal:
            return
        self.bar = Progress(
            TextColumn("step"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.bar.start()
        self.task = self.bar.add_task(
            "train", total=info.total_steps, completed=info.start_step, loss="-", speed=""
        )

    def on_step(self, step: int, loss: float | None, lr: float, it_s: float | None) -> None:
        if loss is not None:
            # The bar shows a smoothed loss: single diffusion losses jump with the random timestep.
            self.smoothed = loss if self.smoothed is None else 0.7 * self.smoothed + 0.3 * loss
        loss_text = "-" if self.smoothed is None else f"{self.smoothed:.4f}"
        speed = f"{it_s:.2f} it/s" if it_s else ""
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=loss_text, speed=speed)
        elif loss is not None and not self.quiet:
            self.on_message(f"step {step}/{self.total}  loss {loss:.4f}  {speed}".rstrip())

    def on_checkpoint(self, step: int, path: Path) -> None:
        if not self.quiet:
            self.console.print(
                f"checkpoint at step {step}: {path}", style="dim", highlight=False, markup=False
            )

    def on_validation(self, step: int, path: Path) -> None:
        self.on_message(f"validation images at step {step}: {path}")

    def on_message(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False, soft_wrap=True)

    def on_end(self, summary: TrainSummary) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _closing_summary(summary: TrainSummary, entry_path: Path | None) -> None:
    loss = "n/a" if summary.final_loss is None else f"{summary.final_loss:.4f}"
    resumed = f" (resumed at step {summary.start_step})" if summary.start_step else ""
    note(
        f"Trained {summary.entry} ({summary.token}) in {_duration(summary.wall_time_s)}: {summary.steps} steps"
        f"{resumed}, final loss {loss}, peak memory {_size(summary.peak_memory_bytes)}"
    )
    rows = [
        ("registry", entry_path),
        ("run", summary.run_dir),
        ("metrics", summary.metrics),
        ("loss curve", summary.loss_plot),
    ]
    if summary.validation:
        rows.append(("validation", summary.validation[-1]))
    for label, value in rows:
        note(f"  {label:<10}  {value}")
    note(f'Use it: tinv sample "a {summary.token} ..."  ·  share it: tinv push {summary.name}')


@app.command()
def train(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The concept to train, as named in concepts.toml.")],
    project: ProjectPath = None,
    steps: Annotated[int | None, _opt("--steps", min=1, help="Optimizer steps.")] = None,
    learning_rate: Annotated[
        float | None, _opt("--lr", "--learning-rate", min=0.0, help="Learning rate (before --scale-lr).")
    ] = None,
    scale_lr: Annotated[
        bool | None,
        _opt("--scale-lr/--no-scale-lr", help="Multiply the lr by batch size x accumulation x processes."),
    ] = None,
    batch_size: Annotated[
        int | None, _opt("--batch-size", min=1, help="Images per process per micro-step.")
    ] = None,
    gradient_accumulation: Annotated[
        int | None, _opt("--gradient-accumulation", min=1, help="Micro-steps per optimizer step.")
    ] = None,
    lr_scheduler: Annotated[
        str | None,
        _opt(
            "--lr-scheduler",
            help="constant, constant_with_warmup, linear, cosine, cosine_with_restarts, polynomial.",
        ),
    ] = None,
    lr_warmup_steps: Annotated[int | None, _opt("--lr-warmup-steps", min=0, help="Warm-up steps.")] = None,
    lr_num_cycles: Annotated[
        int | None, _opt("--lr-num-cycles", min=1, help="Cycles of cosine_with_restarts.")
    ] = None,
    resolution: Annotated[
        int | None,
        _opt(
            "--resolution",
            min=8,
            help="Training image size (multiple of 8); best at the model's own: 512 SD 1.x, 768 SD 2.x, 1024 SDXL.",
        ),
    ] = None,
    center_crop: Annotated[
        bool | None, _opt("--center-crop/--no-center-crop", help="Crop the central square before resizing.")
    ] = None,
    flip_p: Annotated[
        float | None, _opt("--flip-p", min=0.0, max=1.0, help="Probability of a horizontal flip.")
    ] = None,
    mixed_precision: Annotated[
        str | None, _opt("--mixed-precision", help="no, fp16 or bf16 (the new vectors stay fp32).")
    ] = None,
    seed: Annotated[int | None, _opt("--seed", min=0, help="Seed of every random choice in the run.")] = None,
    adam_beta1: Annotated[float | None, _opt("--adam-beta1", help="AdamW beta1.")] = None,
    adam_beta2: Annotated[float | None, _opt("--adam-beta2", help="AdamW beta2.")] = None,
    adam_weight_decay: Annotated[
        float | None, _opt("--adam-weight-decay", help="AdamW weight decay.")
    ] = None,
    adam_epsilon: Annotated[float | None, _opt("--adam-epsilon", help="AdamW epsilon.")] = None,
    max_grad_norm: Annotated[
        float | None, _opt("--max-grad-norm", min=0.0, help="Clip the gradient norm (0: no clipping).")
    ] = None,
    gradient_checkpointing: Annotated[
        bool | None,
        _opt("--gradient-checkpointing/--no-gradient-checkpointing", help="Less memory, ~30% slower."),
    ] = None,
    compile: Annotated[
        bool | None,
        _opt(
            "--compile/--no-compile",
            help="torch.compile the UNet's training step: minutes of compiling first; little gain on a CPU.",
        ),
    ] = None,
    checkpoint_every: Annotated[
        int | None, _opt("--checkpoint-every", min=0, help="Steps between checkpoints (0: only at the end).")
    ] = None,
    validation_every: Annotated[
        int | None,
        _opt("--validation-every", min=0, help="Steps between validation grids (0: only at the end)."),
    ] = None,
    num_validation_images: Annotated[
        int | None, _opt("--num-validation-images", min=1, help="Images per validation grid.")
    ] = None,
    vectors: Annotated[
        int | None, _opt("--vectors", min=1, max=75, help="Vectors per token.", panel=_CONCEPT)
    ] = None,
    initializer: Annotated[
        str | None, _opt("--initializer", help="Word(s) the vectors start from.", panel=_CONCEPT)
    ] = None,
    init: Annotated[str | None, _opt("--init", help="initializer, random or zero.", panel=_CONCEPT)] = None,
    validation_prompt: Annotated[
        str | None, _opt("--validation-prompt", help="Prompt of the validation grids.", panel=_CONCEPT)
    ] = None,
    from_entry: Annotated[
        str | None,
        typer.Option(
            "--from", help="Start from a registry entry's vectors (e.g. a pulled concept): NAME or NAME@N."
        ),
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard this concept's unfinished checkpoint and start over.")
    ] = False,
    model: Annotated[
        str | None, typer.Option("--model", help="Base model (Hub id or folder) instead of the project's.")
    ] = None,
    revision: Annotated[str | None, typer.Option("--revision", help="Hub revision of --model.")] = None,
    report_to: Annotated[
        str | None,
        typer.Option("--report-to", help="Also log to tensorboard (needs the tensorboard package)."),
    ] = None,
    json: Json = False,
) -> None:
    """Train a concept of the project file and add the result to the registry.

    Checkpoints, metrics.jsonl, loss.png and validation grids go to $TINV_HOME/runs/NAME/. Running the
    same command again resumes an interrupted run (Ctrl-C saves a checkpoint first).

    SD 1.x, SD 2.x (epsilon or v-prediction) and SDXL base models; on SDXL the concept gets vectors for both
    text encoders, trained together.

    Data parallel: torchrun --nproc_per_node N -m tinv_cli train NAME (GPUs or CPU processes), or
    accelerate launch --multi_gpu -m tinv_cli train NAME.
    """
    from tinv_cli.project.config import TrainConfig
    from tinv_cli.project.load import find_project, load_project
    from tinv_cli.registry.store import Registry
    from tinv_cli.training.recipe import CONCEPT_OVERRIDES, TrainRequest
    from tinv_cli.training.recipe import train as run_training

    settings = set(TrainConfig.field_names()) | set(CONCEPT_OVERRIDES)
    overrides = {key: value for key, value in ctx.params.items() if key in settings and value is not None}
    loaded = load_project(project.resolve() if project else find_project())
    request = TrainRequest(
        project=loaded,
        concept=name,
        overrides=overrides,
        base=model,
        revision=revision,
        from_entry=from_entry,
        restart=restart,
        report_to=report_to,
    )
    display = _Display(quiet=json)
    registry = Registry()
    try:
        summary = run_training(request, display, registry=registry)
    finally:
        display.close()
    if not summary.main_process:
        return  # in a data-parallel run, rank 0 speaks for all
    entry = registry.get(summary.entry)
    if json:
        emit_json(
            {
                "entry": summary.entry,
                "path": str(entry.path),
                "token": summary.token,
                "steps": summary.steps,
                "start_step": summary.start_step,
                "final_loss": summary.final_loss,
                "wall_time_s": summary.wall_time_s,
                "peak_memory_bytes": summary.peak_memory_bytes,
                "run_dir": str(summary.run_dir),
                "metrics": str(summary.metrics),
                "loss_plot": str(summary.loss_plot),
                "validation": [str(p) for p in summary.validation],
                "device": summary.device,
                "num_processes": summary.num_processes,
                "mixed_precision": summary.mixed_precision,
                "rank_sha256": list(summary.rank_sha256),
            }
        )
        return
    typer.echo(summary.entry)
    _closing_summary(summary, entry.path)
