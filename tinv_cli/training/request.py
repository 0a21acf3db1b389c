"""What a training run is asked to do and what it reports: the request, the callbacks, the summary, and the
concept with its settings once command-line overrides are applied. Nothing here imports torch."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tinv_cli.errors import NotFoundError, TinvError
from tinv_cli.paths import tinv_home
from tinv_cli.project.config import INITIALIZER_INITS, Concept, Project, TrainConfig
from tinv_cli.project.schema import check_value, table_settings

REPORT_TO = ("tensorboard",)
# The concept settings a run may override from the command line (every TrainConfig setting may).
CONCEPT_OVERRIDES = ("vectors", "initializer", "init", "validation_prompt")


class TrainingInterrupted(TinvError):
    """Ctrl-C or SIGTERM: a checkpoint was saved and ``tinv train NAME`` resumes from it."""


@dataclass(frozen=True)
class TrainRequest:
    """What to train. ``overrides`` holds TrainConfig fields and ``vectors``, ``initializer``, ``init`` and
    ``validation_prompt`` given on the command line; they win over the project file."""

    project: Project
    concept: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    base: str | None = None  # --model: another base model than the project's
    revision: str | None = None
    model_config: str | None = None  # --model-config: how a single-file --model is read ([model] config)
    prediction: str | None = None  # --prediction ([model] prediction)
    from_entry: str | None = None  # start from this registry entry's vectors
    restart: bool = False  # discard an existing checkpoint instead of resuming
    report_to: str | None = None


@dataclass(frozen=True)
class StartInfo:
    name: str
    token: str
    run_dir: Path
    start_step: int
    total_steps: int
    images: int
    device: str
    num_processes: int
    mixed_precision: str
    learning_rate: float  # after scaling
    model: str = ""  # the base model's family as detected: text-encoder widths and prediction type


@dataclass(frozen=True)
class TrainSummary:
    entry: str  # NAME@VERSION in the registry
    name: str
    token: str
    steps: int
    start_step: int
    final_loss: float | None
    wall_time_s: float
    peak_memory_bytes: int | None
    run_dir: Path
    checkpoint: Path
    metrics: Path
    loss_plot: Path
    validation: tuple[Path, ...]
    device: str
    num_processes: int
    mixed_precision: str
    rank_sha256: tuple[str, ...]  # sha256 of each process's final vectors; all equal after a healthy run
    main_process: bool = True  # False on the other processes of a data-parallel run


class TrainCallbacks:
    """Progress reports from ``train``; every method is optional. Only the main process reports."""

    def on_start(self, info: StartInfo) -> None:
        pass

    def on_step(self, step: int, loss: float | None, lr: float, it_s: float | None) -> None:
        """Called after every optimizer step; ``loss`` is the mean since the last report, every LOSS_EVERY steps."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        pass

    def on_validation(self, step: int, path: Path) -> None:
        pass

    def on_message(self, message: str) -> None:
        pass

    def on_end(self, summary: TrainSummary) -> None:
        pass


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def resolve_concept(project: Project, name: str, overrides: Mapping[str, Any]) -> tuple[Concept, TrainConfig]:
    """The concept ``name`` of ``project`` and its training settings, with command-line ``overrides`` applied.

    Overrides are checked with the rules of the project file's keys, so a value the file refuses is refused here.
    """
    concept = project.concepts.get(name)
    if concept is None:
        close = difflib.get_close_matches(name, list(project.concepts), n=1, cutoff=0.5)
        known = ", ".join(sorted(project.concepts)) or "none yet"
        raise NotFoundError(
            f"no concept {name!r} in {project.path}" + (f"; did you mean {close[0]!r}?" if close else ""),
            f"concepts in this project: {known}; add {name} with `tinv init --concept {name} --images DIR`",
        )
    train_settings = table_settings(TrainConfig)
    concept_settings = table_settings(Concept)
    train_overrides: dict[str, Any] = {}
    concept_overrides: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in train_settings:
            setting, chosen = train_settings[key], train_overrides
        elif key in CONCEPT_OVERRIDES:
            setting, chosen = concept_settings[key], concept_overrides
        else:
            raise TinvError(f"unknown training setting {key!r}", "see `tinv train --help`")
        problem, chosen[key] = check_value(setting, value, on_command_line=True)
        if problem:
            raise TinvError(f"{flag_name(key)} {value}: {problem}", "see `tinv train --help`")
    if (
        "initializer" in concept_overrides
        and "init" not in concept_overrides
        and concept.init not in INITIALIZER_INITS
    ):
        concept_overrides["init"] = "initializer"
    concept = replace(concept, **concept_overrides)
    if concept.init in INITIALIZER_INITS and not concept.initializer:
        raise TinvError(
            f"concept {name} has no initializer", "pass --initializer WORD, or --init random / --init zero"
        )
    return concept, concept.train.merged(train_overrides)


def run_dir_for(name: str) -> Path:
    """Where a concept's runs live: ``$TINV_HOME/runs/NAME``."""
    return tinv_home() / "runs" / name


def check_report_to(report_to: str | None) -> None:
    if report_to is None:
        return
    if report_to not in REPORT_TO:
        raise TinvError(f"--report-to {report_to}: choose one of {', '.join(REPORT_TO)}")
    from accelerate.utils import is_tensorboard_available

    if not is_tensorboard_available():
        raise TinvError("--report-to tensorboard needs the tensorboard package", "pip install tensorboard")
