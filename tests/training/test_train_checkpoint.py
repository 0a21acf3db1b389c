"""Checkpoints (atomic, small, exact), the resume decision, RNG capture, and the run folder's metrics and plots."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tinv_cli.errors import TinvError
from tinv_cli.training import checkpoint, metrics

SETTINGS = {"schema": 1, "token": "<t>", "images": "abc", "train": {"steps": 20, "learning_rate": 5e-4}}


def _meta(step: int, settings: dict = SETTINGS) -> dict:
    return {
        "step": step,
        "total_steps": 20,
        "settings_hash": checkpoint.settings_hash(settings),
        "settings": settings,
        "finished": False,
        "entry": None,
        "wall_time_s": 1.5,
    }


def _state(value: float) -> dict:
    return {"vectors": torch.full((1, 768), value), "step_tensor": torch.tensor(3), "rng": [{"x": [1, 2]}]}


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    path = checkpoint.save(tmp_path, _state(0.5), _meta(10))
    assert path == tmp_path / "checkpoint"
    info = checkpoint.read_info(tmp_path)
    assert info is not None and info.step == 10 and not info.finished and info.settings == SETTINGS
    state = checkpoint.load_state(info.path)
    assert torch.equal(state["vectors"], torch.full((1, 768), 0.5))
    assert state["rng"] == [{"x": [1, 2]}]
    # Kilobytes, not gigabytes: a one-vector SD 1.x concept with its optimizer state is a few kB.
    assert (path / checkpoint.STATE_FILE).stat().st_size < 20_000


def test_a_new_checkpoint_replaces_the_old_and_leaves_no_debris(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, _state(0.5), _meta(10))
    checkpoint.save(tmp_path, _state(0.7), _meta(15))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    info = checkpoint.read_info(tmp_path)
    assert info is not None and info.step == 15
    assert float(checkpoint.load_state(info.path)["vectors"][0, 0]) == pytest.approx(0.7)


def test_a_crash_between_the_renames_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, _state(0.5), _meta(10))
    # What a crash after "old out" and before "new in" leaves behind: only checkpoint.old.
    os.rename(tmp_path / "checkpoint", tmp_path / "checkpoint.old")
    (tmp_path / ".checkpoint-tmp-dead").mkdir()
    info = checkpoint.read_info(tmp_path)
    assert info is not None and info.step == 10 and info.path.name == "checkpoint.old"
    checkpoint.save(tmp_path, _state(0.6), _meta(15))
    info = checkpoint.read_info(tmp_path)
    assert info is not None and info.step == 15 and info.path.name == "checkpoint"
    assert not (tmp_path / "checkpoint.old").exists()


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, _state(0.5), _meta(10))
    with pytest.raises(TypeError):
        checkpoint.save(tmp_path, _state(0.6), {**_meta(15), "bad": object()})  # not JSON
    info = checkpoint.read_info(tmp_path)
    assert info is not None and info.step == 10
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]


def test_state_is_read_without_running_code(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, _state(0.5), _meta(10))
    torch.save({"evil": Image.new("RGB", (1, 1))}, tmp_path / "checkpoint" / checkpoint.STATE_FILE)
    with pytest.raises(TinvError, match="cannot be read") as caught:
        checkpoint.load_state(tmp_path / "checkpoint")
    assert "--restart" in (caught.value.hint or "")


def test_update_meta_and_discard(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, _state(0.5), _meta(20))
    checkpoint.update_meta(tmp_path, finished=True, entry="t@1")
    info = checkpoint.read_info(tmp_path)
    assert info is not None and info.finished and info.entry == "t@1"
    checkpoint.discard(tmp_path)
    assert checkpoint.read_info(tmp_path) is None


def test_resume_decision(tmp_path: Path) -> None:
    assert checkpoint.resumable(tmp_path, SETTINGS, name="t", restart=False) is None  # nothing yet
    checkpoint.save(tmp_path, _state(0.5), _meta(10))
    info = checkpoint.resumable(tmp_path, SETTINGS, name="t", restart=False)
    assert info is not None and info.step == 10
    assert checkpoint.resumable(tmp_path, SETTINGS, name="t", restart=True) is None
    changed = {**SETTINGS, "images": "xyz", "train": {"steps": 30, "learning_rate": 5e-4}}
    with pytest.raises(TinvError) as caught:
        checkpoint.resumable(tmp_path, changed, name="t", restart=False)
    assert "step 10/20" in caught.value.message
    assert "train.steps 20 -> 30" in caught.value.message and "the images changed" in caught.value.message
    assert "tinv train t --restart" in (caught.value.hint or "")
    checkpoint.update_meta(tmp_path, finished=True)
    assert checkpoint.resumable(tmp_path, changed, name="t", restart=False) is None  # finished: fresh run


def test_global_rng_states_round_trip() -> None:
    state = checkpoint.global_rng_state()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.random(), np.random.rand(), torch.rand(1)
    checkpoint.restore_global_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_global_rng_states_survive_a_checkpoint_file(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, {"rng": [checkpoint.global_rng_state()]}, _meta(1))
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    checkpoint.restore_global_rng_state(checkpoint.load_state(tmp_path / "checkpoint")["rng"][0])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


# --- metrics and plots ----------------------------------------------------------------------------------------


def test_metrics_append_read_truncate(tmp_path: Path) -> None:
    path = tmp_path / metrics.METRICS_FILE
    metrics.append_metrics(
        path, [{"step": s, "loss": 1.0 / s, "lr": 1e-3, "it_s": 2.0} for s in (10, 20, 30)]
    )
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"step": 40, "lo')  # torn by a crash
    assert [r["step"] for r in metrics.read_metrics(path)] == [10, 20, 30]
    metrics.truncate_metrics(path, 20)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [10, 20]


def test_loss_curve_is_a_png(tmp_path: Path) -> None:
    records = [{"step": s, "loss": 0.5 + 0.1 * ((s * 7) % 5)} for s in range(10, 310, 10)]
    out = metrics.draw_loss_curve(records, tmp_path / "loss.png")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (800, 450)
        # Something was drawn in the curve's blue.
        assert any(pixel[2] > 150 and pixel[0] < 100 for pixel in image.convert("RGB").getdata())
    empty = metrics.draw_loss_curve([], tmp_path / "empty.png")
    assert empty.is_file()


def test_image_grid() -> None:
    tiles = [Image.new("RGB", (4, 4), (i * 60, 0, 0)) for i in range(3)]
    grid = metrics.image_grid(tiles)
    assert grid.size == (8, 8)
    assert grid.getpixel((5, 1)) == (60, 0, 0) and grid.getpixel((1, 5)) == (120, 0, 0)
    assert grid.getpixel((5, 5)) == (255, 255, 255)


def test_hints_name_the_concept_not_a_placeholder(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "cat-toy"
    checkpoint.save(run_dir, _state(0.5), _meta(10))
    (run_dir / "checkpoint" / checkpoint.STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(TinvError) as unreadable_state:
        checkpoint.load_state(run_dir / "checkpoint")
    (run_dir / "checkpoint" / checkpoint.META_FILE).write_text("{", encoding="utf-8")
    with pytest.raises(TinvError) as unreadable_meta:
        checkpoint.read_info(run_dir)
    for caught in (unreadable_state, unreadable_meta):
        assert caught.value.hint == "start over with `tinv train cat-toy --restart`"
