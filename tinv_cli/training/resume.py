"""What makes a training run resumable to the bit: the settings a checkpoint must match, and everything the
next step depends on, saved and restored.

A run's identity is ``run_settings``: a checkpoint resumes only a run with the same settings (``checkpoint.
resumable`` compares their hash and names what changed). The state is the trainable vectors, the optimizer, the
learning-rate schedule, the fp16 grad scaler, every random stream of every process and each process's loss
window (the sum of the losses since the last logged step: the logged means depend on the step alone, not on
when checkpoints were saved); ``checkpoint.py`` writes and reads it atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli.project.config import INITIALIZER_INITS, TrainConfig
from tinv_cli.training import checkpoint
from tinv_cli.training.data import fingerprint

if TYPE_CHECKING:
    import torch

    from tinv_cli.project.config import Concept
    from tinv_cli.registry.entry import Entry
    from tinv_cli.training.data import SampleStream

SETTINGS_SCHEMA = 1
# Settings that change when or how a run reports, not what it learns: changing them keeps a checkpoint usable.
_NOT_HASHED = (
    "recipe",  # a name for the values below, which are hashed
    "checkpoint_every",
    "validation_every",
    "num_validation_images",
    "gradient_checkpointing",
    "compile",
)
# Settings of methods added after checkpoints were first written: left out of the identity while at the value
# that turns them off (an earlier tinv's behaviour), so a checkpoint of an earlier tinv still resumes the same run.
_OFF: dict[str, Any] = {
    "min_snr_gamma": 0.0,
    "masked_loss": False,
    "norm": "free",
    "norm_weight": 0.01,
    "early_stop_every": 0,
    "early_stop_patience": 3,
}


def run_settings(
    base: str,
    revision: str | None,
    concept: Concept,
    config: TrainConfig,
    start_entry: Entry | None,
    images: Sequence[Path],
    world: int,
) -> dict[str, Any]:
    """Everything that decides what a run learns: a checkpoint with other settings cannot continue it."""
    return {
        "schema": SETTINGS_SCHEMA,
        "base_model": base,
        "revision": revision,
        "token": concept.token,
        "kind": concept.kind,
        "vectors": concept.vectors,
        "init": "entry" if start_entry else concept.init,
        "initializer": concept.initializer if concept.init in INITIALIZER_INITS and not start_entry else None,
        "from_entry": start_entry.sha256 if start_entry else None,
        "images": fingerprint(images),
        "num_processes": world,
        "train": {
            k: v
            for k, v in config.to_dict().items()
            if k not in _NOT_HASHED and not (k in _OFF and v == _OFF[k])
        },
    }


def rng_state(
    stream: SampleStream, noise: torch.Generator, loss_sum: torch.Tensor, loss_count: int
) -> dict[str, Any]:
    """This process's own state: its random streams (torch's, numpy's and Python's global ones, the data stream
    and the noise) and its loss window, the losses summed since the last logged step and their count."""
    return {
        "global": checkpoint.global_rng_state(),
        "stream": stream.state_dict(),
        "noise": noise.get_state(),
        "loss_window": [loss_sum.detach().cpu().clone(), loss_count],
    }


def state(
    trainable: Sequence[torch.Tensor],
    optimizer: Any,
    lr_scheduler: Any,
    scaler: Any,
    every_rng: list[dict[str, Any]],
    *,
    last_loss: float | None,
    batched: bool,
    early_stop: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint's tensors and values; ``every_rng[rank]`` is each process's ``rng_state``;
    ``early_stop``: the validation losses so far and the best vectors (``EarlyStop.state_dict``)."""
    return {
        "early_stop": early_stop,
        "vectors": [new.detach().cpu().clone() for new in trainable],
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": every_rng,
        "last_loss": last_loss,
        "batched": batched,
    }


@dataclass(frozen=True)
class Restored:
    last_loss: float | None
    batched: bool  # whether the run steps its micro-batches as one batch
    loss_count: int  # the loss window, put back into ``loss_sum`` by ``restore``


def restore(
    saved: dict[str, Any],
    rank: int,
    trainable: Sequence[torch.Tensor],
    optimizer: Any,
    lr_scheduler: Any,
    scaler: Any,
    stream: SampleStream,
    noise: torch.Generator,
    loss_sum: torch.Tensor,
) -> Restored:
    """Put a checkpoint's ``state`` back into a run set up afresh with the same settings."""
    rng = saved["rng"][rank]
    for new, vectors in zip(trainable, saved["vectors"], strict=True):
        new.data.copy_(vectors.to(new.device))
    optimizer.load_state_dict(saved["optimizer"])
    lr_scheduler.load_state_dict(saved["lr_scheduler"])
    if scaler is not None and saved.get("scaler") is not None:
        scaler.load_state_dict(saved["scaler"])
    checkpoint.restore_global_rng_state(rng["global"])
    stream.load_state_dict(rng["stream"])
    noise.set_state(rng["noise"])
    # Checkpoints of older tinv read the loss when saving: their window starts empty.
    window_sum, window_count = rng.get("loss_window", [None, 0])
    if window_sum is not None:
        loss_sum.copy_(window_sum.to(loss_sum.device))
    return Restored(
        last_loss=saved.get("last_loss"),
        batched=bool(saved.get("batched", False)),
        loss_count=int(window_count),
    )
