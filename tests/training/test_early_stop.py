"""Early stopping: the decision on a deterministic validation loss, training untouched by it, and a stopped and
resumed run that stops at the same step with the same vectors as an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import Recorder, make_project
from tinv_cli.project.load import load_project
from tinv_cli.registry.store import Registry
from tinv_cli.training import metrics
from tinv_cli.training.early_stop import EarlyStop
from tinv_cli.training.recipe import train
from tinv_cli.training.request import TrainingInterrupted, TrainRequest


def _early(patience: int = 2) -> EarlyStop:
    mean = torch.zeros(3, 2, 4, 2, 2)
    return EarlyStop(
        every=5,
        patience=patience,
        seed=0,
        latent_mean=mean,
        latent_std=torch.ones_like(mean),
        scaling_factor=1.0,
        num_timesteps=1000,
        batch=2,
    )


def test_the_best_vectors_are_kept_and_the_run_stops_after_patience() -> None:
    early = _early(patience=2)
    vector = torch.nn.Parameter(torch.zeros(1, 4))
    for step, value in ((5, 3.0), (10, 2.0), (15, 2.5), (20, 2.0)):
        vector.data.fill_(step)
        early.evaluate(step, lambda *batch, v=value: torch.tensor(v), [vector])
    assert early.stopped and early.best_step == 10 and early.best_loss == 2.0
    early.use_best([vector])
    assert torch.equal(vector.detach(), torch.full((1, 4), 10.0))
    assert early.summary()["history"] == [[5, 3.0], [10, 2.0], [15, 2.5], [20, 2.0]]

    again = _early(patience=2)
    again.load_state_dict(early.state_dict())
    assert again.state_dict() == early.state_dict()


def test_the_validation_inputs_are_fixed_by_the_seed() -> None:
    runs: list[list[torch.Tensor]] = []
    for _ in range(2):
        seen: list[torch.Tensor] = []

        def loss(*batch: torch.Tensor, seen: list[torch.Tensor] = seen) -> torch.Tensor:
            seen.extend(batch[3:])  # latents, noise, timesteps
            return batch[3].sum()

        _early().evaluate(5, loss, [])
        runs.append(seen)
    assert len(runs[0]) == 6 * 3  # 3 images x 4 draws in 6 batches of 2, three tensors each
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


SETTINGS = {"steps": 40, "seed": 1, "learning_rate": 0.5, "checkpoint_every": 3, "early_stop_every": 2}


def _vectors(ref: str) -> torch.Tensor:
    return Registry().get(ref).embedding().vectors[0]


@pytest.mark.slow
def test_a_stopped_and_resumed_run_stops_where_an_uninterrupted_one_does(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = load_project(
        make_project(tmp_path, tiny_model_dir, train={**SETTINGS, "early_stop_patience": 2})
    )
    request = TrainRequest(project, "cat-toy")
    monkeypatch.setenv("TINV_HOME", str(tmp_path / "straight"))
    recorder = Recorder()
    straight = train(request, recorder)
    stopped = Registry().get(straight.entry).info["training"]["early_stop"]
    assert stopped["stopped_early"], stopped
    last = recorder.steps[-1]
    assert last < 40 and any(m.startswith(f"stopping early at step {last}/40") for m in recorder.messages)
    assert stopped["best_step"] < last and len(stopped["history"]) == last // 2

    monkeypatch.setenv("TINV_HOME", str(tmp_path / "plain"))
    plain_settings = {k: v for k, v in SETTINGS.items() if k != "early_stop_every"}
    plain = train(
        TrainRequest(
            load_project(make_project(tmp_path / "p", tiny_model_dir, train=plain_settings)), "cat-toy"
        ),
        Recorder(),
    )
    # Early stopping draws from no stream of training's: the losses of the steps both ran are the same.
    ours = [r["loss"] for r in metrics.read_metrics(straight.metrics)]
    theirs = [r["loss"] for r in metrics.read_metrics(plain.metrics)]
    assert ours == theirs[: len(ours)]

    monkeypatch.setenv("TINV_HOME", str(tmp_path / "resumed"))
    stop_at = max(3, last - 3)  # after at least one evaluation, before the stop
    with pytest.raises(TrainingInterrupted):
        train(request, Recorder(interrupt_at=stop_at))
    resumed_recorder = Recorder()
    resumed = train(request, resumed_recorder)
    assert resumed_recorder.steps[-1] == last
    assert torch.equal(
        _vectors(resumed.entry), _vectors_of(tmp_path / "straight", straight.entry, monkeypatch)
    )
    assert Registry().get(resumed.entry).info["training"]["early_stop"] == stopped


def _vectors_of(home: Path, ref: str, monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
    with monkeypatch.context() as patch:
        patch.setenv("TINV_HOME", str(home))
        return _vectors(ref)
