"""A single-file checkpoint as a base model: a ``.safetensors`` or ``.ckpt`` in the original (LDM) key layout.

``open_single_file`` turns one into the pair every loader needs, the weights file and a diffusers-layout folder
of configs and tokenizers, before any weights load: the family and variant come from the file's tensor names
and shapes (``checkpoint_keys``, asked of the families), the folder is the one tinv ships for that variant
(``shipped_configs``) unless ``[model] config`` names another, and the prediction type is decided here, since
the weights cannot say it. ``loading.load_pipeline`` then calls diffusers' ``from_single_file`` with that
folder and ``local_files_only=True``, so nothing is downloaded.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli.errors import ModelError, NotFoundError
from tinv_cli.families.base import ModelFiles

if TYPE_CHECKING:
    from tinv_cli.families.base import Family, Variant

SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")
PREDICTIONS = ("auto", "epsilon", "v_prediction")
# A1111's config beside a checkpoint: `parameterization: "v"` under model.params means v-prediction.
_PARAMETERIZATION = re.compile(r"^\s*parameterization:\s*[\"']?(\w+)", re.MULTILINE)
_YAML_WORDS = {"v": "v_prediction", "eps": "epsilon"}
# kohya and ComfyUI mark a v-prediction checkpoint with an (empty) tensor of this name.
V_PRED_KEY = "v_pred"


@dataclass(frozen=True)
class SingleFile:
    """A checkpoint resolved for loading: its weights, its config folder, its family and prediction type."""

    path: Path
    config: Path  # a diffusers-layout folder: model_index.json, component configs, tokenizers
    family: Family
    variant: Variant | None  # None when [model] config describes an architecture tinv has no variant of
    prediction: str  # epsilon | v_prediction
    prediction_from: str  # why: "setting", "NAME.yaml", "v_pred key", "config" or "default"

    @property
    def label(self) -> str:
        """``my-sd15.safetensors: SD 1.x single-file checkpoint``: what was found, before anything loads."""
        kind = self.variant.label if self.variant is not None else self.family.label
        return f"{self.path.name}: {kind} single-file checkpoint"

    @property
    def detail(self) -> str:
        """The label with the prediction type and where it came from."""
        return f"{self.label} ({self.prediction}, from {self.prediction_from})"


def single_file_path(base: str) -> Path | None:
    """The checkpoint file ``base`` names (an existing file), or None for anything else."""
    if base.startswith("builtin:"):
        return None
    path = Path(base).expanduser()
    return path if path.is_file() else None


def looks_like_checkpoint(base: str) -> bool:
    """Text naming a checkpoint file by its suffix, whether or not it exists."""
    return base.lower().endswith(SUFFIXES)


def open_single_file(path: Path, *, config: str | None = None, prediction: str = "auto") -> SingleFile:
    """Resolve the checkpoint at ``path``; one-line ``ModelError`` for a file that is not a base model tinv
    knows, a truncated one, or a pickle that would run code. Reads the header only (a ``.ckpt`` is mapped)."""
    path = Path(path).expanduser()
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise NotFoundError(
            f"checkpoint file {path} does not exist", "check the path given as the model"
        ) from None
    try:  # the yaml beside it can say the prediction type: a new or edited one is read again
        yaml = path.with_suffix(".yaml").stat().st_mtime_ns
    except OSError:
        yaml = None
    return _open(path.resolve(), stat.st_size, stat.st_mtime_ns, yaml, config, prediction)


@functools.lru_cache(maxsize=16)
def _open(
    path: Path, size: int, mtime_ns: int, yaml_mtime_ns: int | None, config: str | None, prediction: str
) -> SingleFile:
    from tinv_cli import families
    from tinv_cli.models.checkpoint_keys import checkpoint_shapes, describe_foreign
    from tinv_cli.models.shipped_configs import config_folder

    if prediction not in PREDICTIONS:
        raise ModelError(
            f"unknown prediction type {prediction!r}", f"choose one of: {', '.join(PREDICTIONS)}"
        )
    shapes = checkpoint_shapes(path)
    found = families.for_checkpoint(shapes)
    folder = _config_folder(config) if config else None
    family: Family | None = found[0] if found else None
    variant: Variant | None = found[1] if found else None
    if folder is not None:
        # The folder says what the pipeline is; the keys only had to look like a model's.
        family = families.for_files(_folder_files(folder))
        if family is None:
            raise ModelError(
                f"[model] config {folder} is no Stable Diffusion pipeline folder tinv knows",
                "point it at a folder with model_index.json and the components' config.json files",
            )
        if variant is not None and variant not in family.variants:
            variant = None
    if family is None:
        raise ModelError(
            f"{path.name} is not a base model tinv can use: it looks like {describe_foreign(shapes)}",
            "pass an SD 1.x, SD 2.x or SDXL base checkpoint, or set [model] config for another architecture",
        )
    chosen, why = _prediction(path, shapes, prediction, folder, variant)
    if folder is None:
        assert variant is not None  # a family found from keys alone always names its variant
        name = variant.checkpoint_config(chosen)
        if name is None:
            raise ModelError(
                f"tinv ships no configuration for {variant.label} checkpoints",
                "set [model] config to a folder",
            )
        folder = config_folder(name)
    return SingleFile(path, folder, family, variant, chosen, why)


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _folder_files(folder: Path) -> ModelFiles:
    index = _json(folder / "model_index.json") or {}
    names = [name for name in index if not name.startswith("_")]
    return ModelFiles(index, {name: _json(folder / name / "config.json") for name in names})


def how_to_read(
    config: str | None, prediction: str, recorded: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``config`` and ``prediction`` arguments for a checkpoint file: those given, else what a project or a
    registry entry recorded for its base (``recorded``), as a revision is chosen."""
    recorded = recorded or {}
    chosen = prediction if prediction != "auto" else recorded.get("prediction") or "auto"
    return {"config": config or recorded.get("config"), "prediction": chosen}


def describe_model(base: str, *, config: str | None = None, prediction: str = "auto") -> str | None:
    """What a checkpoint file ``base`` was found to be (``SingleFile.detail``), for a command's first progress
    line; None when ``base`` is no checkpoint file."""
    path = single_file_path(base)
    return None if path is None else open_single_file(path, config=config, prediction=prediction).detail


def config_folder_for(base: str, *, config: str | None = None, prediction: str = "auto") -> Path | None:
    """The config folder of the checkpoint ``base`` names; None when ``base`` is no checkpoint file."""
    path = single_file_path(base)
    return None if path is None else open_single_file(path, config=config, prediction=prediction).config


def _config_folder(config: str) -> Path:
    folder = Path(config).expanduser()
    if not (folder / "model_index.json").is_file():
        raise ModelError(
            f"[model] config {config} is not a diffusers-layout folder (it has no model_index.json)",
            "point it at a folder of configs and tokenizers (a diffusers pipeline folder; weights not needed)",
        )
    return folder.resolve()


def _prediction(
    path: Path, shapes: dict[str, tuple[int, ...]], setting: str, folder: Path | None, variant: Variant | None
) -> tuple[str, str]:
    """The prediction type: the setting, else ``<stem>.yaml`` beside the file, else a ``v_pred`` key, else the
    given config folder's scheduler, else the variant's default."""
    if setting != "auto":
        return setting, "setting"
    yaml = path.with_suffix(".yaml")
    try:
        match = _PARAMETERIZATION.search(yaml.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        match = None
    if match and match[1] in _YAML_WORDS:
        return _YAML_WORDS[match[1]], yaml.name
    if match is None and yaml.is_file():
        return "epsilon", yaml.name  # an LDM config without parameterization: the default, eps
    if V_PRED_KEY in shapes:
        return "v_prediction", f"{V_PRED_KEY} key"
    if folder is not None:
        scheduler = _json(folder / "scheduler" / "scheduler_config.json") or {}
        return str(scheduler.get("prediction_type") or "epsilon"), "config"
    return (variant.default_prediction if variant is not None else "epsilon"), "default"
