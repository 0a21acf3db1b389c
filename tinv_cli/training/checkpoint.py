"""A training run's latest checkpoint: kilobytes, written atomically, read back exactly.

Layout inside a run folder::

    checkpoint/state.pt     the [n, d] vectors, optimizer, lr scheduler, grad scaler and every RNG state
    checkpoint/meta.json    step, the settings and their hash, finished flag, the run's id (readable without torch)

A checkpoint is built in a temporary folder next to the old one and swapped in with two renames (old out,
new in) by ``atomic.replace_dir``. A crash at any point leaves either the previous checkpoint or the new one:
``checkpoint.old`` is what a crash between the two renames leaves, and ``find`` falls back to it. Only the
trainable vectors and their optimizer state are saved, never the base model, so a one-vector SD 1.x concept
checkpoints in ~10 kB.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from tinv_cli import atomic
from tinv_cli.errors import TinvError

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.pt"
META_FILE = "meta.json"
FORMAT = 1


@dataclass(frozen=True)
class CheckpointInfo:
    """What ``meta.json`` says about a checkpoint; the tensors stay on disk until ``load_state``."""

    path: Path
    step: int
    total_steps: int
    settings_hash: str
    settings: dict[str, Any]
    finished: bool
    entry: str | None
    wall_time_s: float
    run_id: str | None = None  # names the run in the entry it registers (None in checkpoints of older tinv)


def find(run_dir: Path) -> Path | None:
    """The checkpoint folder of ``run_dir``: the current one, or the previous one a crash left behind."""
    current = run_dir / CHECKPOINT_DIR
    if (current / META_FILE).is_file():
        return current
    previous = atomic.previous(current)
    if (previous / META_FILE).is_file():
        return previous
    return None


def read_info(run_dir: Path) -> CheckpointInfo | None:
    """The newest complete checkpoint's metadata, or None when the run has none."""
    folder = find(run_dir)
    if folder is None:
        return None
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return CheckpointInfo(
            path=folder,
            step=int(meta["step"]),
            total_steps=int(meta["total_steps"]),
            settings_hash=str(meta["settings_hash"]),
            settings=dict(meta["settings"]),
            finished=bool(meta.get("finished", False)),
            entry=meta.get("entry"),
            wall_time_s=float(meta.get("wall_time_s", 0.0)),
            run_id=meta.get("run_id"),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise TinvError(
            f"{meta_path}: unreadable checkpoint metadata ({exc})",
            f"start over with `tinv train {run_dir.name} --restart`",  # run folders are named after the concept
        ) from None


def save(run_dir: Path, state: Mapping[str, Any], meta: Mapping[str, Any]) -> Path:
    """Write ``state`` (tensors and plain values) and ``meta`` (JSON) as the run's checkpoint, atomically."""
    import torch

    def build(folder: Path) -> None:
        torch.save(dict(state), folder / STATE_FILE)
        atomic.write_json(folder / META_FILE, {"format": FORMAT, **meta})

    return atomic.replace_dir(run_dir / CHECKPOINT_DIR, build)


def load_state(folder: Path) -> dict[str, Any]:
    """The tensors and values ``save`` wrote, read with torch's weights-only loader (no code runs)."""
    import pickle

    import torch

    path = folder / STATE_FILE
    try:
        return dict(torch.load(path, map_location="cpu", weights_only=True))
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise TinvError(
            f"{path}: the checkpoint cannot be read ({exc})",
            f"start over with `tinv train {folder.parent.name} --restart`",
        ) from None


def update_meta(run_dir: Path, **changes: Any) -> None:
    """Merge ``changes`` into the current checkpoint's ``meta.json``, atomically."""
    folder = find(run_dir)
    if folder is None:
        raise TinvError(f"{run_dir}: no checkpoint to update")
    meta_path = folder / META_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta.update(changes)
    atomic.write_json(meta_path, meta)


def sweep(run_dir: Path) -> list[Path]:
    """Delete the temporary files and folders that killed runs left in the run folder and its checkpoint
    (``.checkpoint.*.tmp``, ``.meta.json.*.tmp``, ...): those whose writer's pid is not alive. Returns them."""
    current = run_dir / CHECKPOINT_DIR
    return [
        p
        for folder in (run_dir, current, atomic.previous(current))
        for p in atomic.remove_stray_temps(folder)
    ]


def discard(run_dir: Path) -> None:
    """Remove the run's checkpoint (current, previous and any half-written one)."""
    current = run_dir / CHECKPOINT_DIR
    for folder in (current, atomic.previous(current), *atomic.leftovers(current)):
        shutil.rmtree(folder, ignore_errors=True)


def global_rng_state() -> dict[str, Any]:
    """Python's, numpy's and torch's global RNG states, as tensors and plain values (weights-only safe)."""
    import numpy as np
    import torch

    version, mt_state, gauss = random.getstate()
    # The legacy form is a 5-tuple (name, keys, position, has_gauss, cached_gaussian).
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = cast(
        "tuple[str, np.ndarray, int, int, float]", np.random.get_state(legacy=True)
    )
    state: dict[str, Any] = {
        "python": [version, list(mt_state), gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_global_rng_state(state: Mapping[str, Any]) -> None:
    """Put back what ``global_rng_state`` captured."""
    import numpy as np
    import torch

    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def settings_hash(settings: Mapping[str, Any]) -> str:
    """sha256 of a run's settings (JSON with sorted keys): equal hashes, same training math."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append("the images changed" if key == "images" else f"{prefix}{key} {a} -> {b}")
    return out


def resumable(
    run_dir: Path, settings: Mapping[str, Any], *, name: str, restart: bool
) -> CheckpointInfo | None:
    """The checkpoint a run with ``settings`` resumes from; None for a fresh run (no checkpoint, a finished
    one, or ``restart``). A checkpoint made with other settings is refused, saying what changed."""
    info = read_info(run_dir)
    if info is None or info.finished or restart:
        return None
    if info.settings_hash != settings_hash(settings):
        changed = _differences(info.settings, dict(settings)) or ["settings changed"]
        raise TinvError(
            f"{name}: the checkpoint at step {info.step}/{info.total_steps} in {info.path} was made with other "
            f"settings ({'; '.join(changed[:4])})",
            f"run `tinv train {name} --restart` to discard it and start over, or undo the change to resume",
        )
    return info
