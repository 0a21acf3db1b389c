"""benchmarks/train_speed.py's helpers for --example-script: the marginal cost per step, tqdm's rate, the
script's flags. The script itself (diffusers' examples/textual_inversion/textual_inversion.py) is not
installable, so it is not run here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import train_speed


def test_marginal_step_cancels_start_up() -> None:
    # 20 s of loading and saving in both runs, 2 s a step: the 9-step run's 6 extra steps cost 12 s.
    assert train_speed.marginal_step((3, 26.0), (9, 38.0)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="more steps"):
        train_speed.marginal_step((9, 38.0), (3, 26.0))


def test_tqdm_rate_reads_the_last_rate_in_either_unit() -> None:
    bar = "Steps:  33%|███▎      | 1/3 [00:01<00:02,  1.25s/it, loss=0.1]\rSteps: 100%|██████████| 3/3 [00:03<00:00,  1.50s/it]"
    assert train_speed.tqdm_rate(bar) == pytest.approx(1.5)
    assert train_speed.tqdm_rate("Steps: 100%|| 9/9 [00:01<00:00,  4.00it/s, loss=0.2]") == pytest.approx(
        0.25
    )
    assert train_speed.tqdm_rate("no bar here") is None


def test_script_arguments_ask_for_one_step_at_a_time_and_nothing_between() -> None:
    flags = train_speed.script_arguments(
        Path("model"), Path("images"), Path("out"), steps=9, resolution=512, precision="bf16"
    )
    pairs = dict(zip(flags[::2], flags[1::2], strict=True))
    assert pairs["--max_train_steps"] == "9" and pairs["--mixed_precision"] == "bf16"
    assert pairs["--train_batch_size"] == "1" and pairs["--gradient_accumulation_steps"] == "1"
    assert int(pairs["--checkpointing_steps"]) > 9 and int(pairs["--save_steps"]) > 9
    assert pairs["--pretrained_model_name_or_path"] == "model" and pairs["--train_data_dir"] == "images"
