"""`tinv train`: train a concept of the project file, with any `[train]` setting overridden from the command line."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from tinv_cli.cli.app import app
from tinv_cli.cli.options import Json, ModelConfigDir, Prediction, ProjectPath, Revision
from tinv_cli.cli.render import emit_json, note
from tinv_cli.project.config import Concept, TrainConfig
from tinv_cli.project.schema import Setting, table_settings
from tinv_cli.training.request import CONCEPT_OVERRIDES, TrainCallbacks, flag_name

if TYPE_CHECKING:
    from tinv_cli.training.request import StartInfo, TrainSummary

F = TypeVar("F", bound=Callable[..., Any])

_TRAIN = "Training settings (override concepts.toml)"
_CONCEPT = "Concept settings (override concepts.toml)"
_ALIASES = {"learning_rate": ("--lr",)}


def _option(setting: Setting, panel: str) -> inspect.Parameter:
    """The option of ``tinv train`` that overrides ``setting``: named as the key with dashes, default None."""
    flag = flag_name(setting.name)
    names = (f"{flag}/--no-{flag[2:]}",) if setting.kind is bool else (*_ALIASES.get(setting.name, ()), flag)
    # No min/max or choices for click to check: the values go through the project file's own rules
    # (resolve_concept), whose refusal is tinv's one-line error rather than a usage screen.
    option = typer.Option(*names, help=setting.help_text, rich_help_panel=panel)
    annotation = Annotated[setting.kind | None, option]  # type: ignore[name-defined]
    return inspect.Parameter(
        setting.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
    )


def _with_setting_options(command: F) -> F:
    """Give ``command`` one option per TrainConfig setting and per concept override, passed in its ``**settings``.

    Typer reads a command's parameters from its signature, so the options are added there (after its
    positional parameters, where ``--help`` lists them), built from the same settings as the project file's
    validator and template.
    """
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    concept = table_settings(Concept)
    added = [_option(s, _TRAIN) for s in table_settings(TrainConfig).values()]
    added += [_option(concept[key], _CONCEPT) for key in CONCEPT_OVERRIDES]
    at = next(i for i, p in enumerate(own) if p.kind is inspect.Parameter.KEYWORD_ONLY)
    parameters = [*own[:at], *added, *own[at:]]
    command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return command


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
@_with_setting_options
def train(
    name: Annotated[str, typer.Argument(help="The concept to train, as named in concepts.toml.")],
    project: ProjectPath = None,
    *,
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
        str | None,
        typer.Option(
            "--model", help="Base model (Hub id, folder or checkpoint file) instead of the project's."
        ),
    ] = None,
    revision: Revision = None,
    model_config: ModelConfigDir = None,
    prediction: Prediction = None,
    report_to: Annotated[
        str | None,
        typer.Option("--report-to", help="Also log to tensorboard (needs the tensorboard package)."),
    ] = None,
    json: Json = False,
    **settings: Any,
) -> None:
    """Train a concept of the project file and add the result to the registry.

    Checkpoints, metrics.jsonl, loss.png and validation grids go to $TINV_HOME/runs/NAME/. Running the
    same command again resumes an interrupted run (Ctrl-C saves a checkpoint first).

    SD 1.x, SD 2.x (epsilon or v-prediction) and SDXL base models; on SDXL the concept gets vectors for both
    text encoders, trained together.

    Data parallel: torchrun --nproc_per_node N -m tinv_cli train NAME (GPUs or CPU processes), or
    accelerate launch --multi_gpu -m tinv_cli train NAME.
    """
    from tinv_cli.project.load import find_project, load_project
    from tinv_cli.registry.store import Registry
    from tinv_cli.training.recipe import train as run_training
    from tinv_cli.training.request import TrainRequest

    # An option left out is None: "as concepts.toml says".
    overrides = {key: value for key, value in settings.items() if value is not None}
    loaded = load_project(project.resolve() if project else find_project())
    request = TrainRequest(
        project=loaded,
        concept=name,
        overrides=overrides,
        base=model,
        revision=revision,
        model_config=str(model_config.absolute()) if model_config else None,
        prediction=prediction,
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
