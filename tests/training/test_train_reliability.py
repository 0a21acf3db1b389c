"""What issue 14 found around a training run: two runs of one concept at once (class 5), a kill between
registering and the run's bookkeeping (7), signals outside the training loop (8), what killed runs leave in the
run folder (9), and losses that changed with checkpoint_every (12)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import Recorder, make_project
from tinv_cli import atomic
from tinv_cli.errors import TinvError
from tinv_cli.project.load import load_project
from tinv_cli.registry.store import Registry
from tinv_cli.training import checkpoint, metrics, process
from tinv_cli.training.recipe import train
from tinv_cli.training.request import StartInfo, TrainingInterrupted, TrainRequest

ROOT = Path(__file__).resolve().parents[2]


def _run_dir() -> Path:
    return Path(os.environ["TINV_HOME"]) / "runs" / "cat-toy"


def _losses(path: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in metrics.read_metrics(path)]


# --- class 12: what is recorded depends on the steps, not on when checkpoints were saved ---------------------


@pytest.mark.slow
def test_checkpoint_every_changes_nothing_recorded(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(home: str, checkpoint_every: int, interrupt_at: int | None = None) -> tuple[list, float | None]:
        monkeypatch.setenv("TINV_HOME", str(tmp_path / home))
        settings = {"steps": 25, "checkpoint_every": checkpoint_every, "seed": 1}
        request = TrainRequest(
            load_project(make_project(tmp_path / home, tiny_model_dir, train=settings)), "cat-toy"
        )
        if interrupt_at is not None:
            with pytest.raises(TrainingInterrupted):
                train(request, Recorder(interrupt_at=interrupt_at))
        summary = train(request)
        return _losses(summary.metrics), summary.final_loss

    never, never_final = run("never", 0)
    often, often_final = run("often", 3)
    # Stopped at step 13, inside a loss window (10..20) and after checkpoints at 3, 6, 9, 12: resumed from there.
    resumed, resumed_final = run("resumed", 3, interrupt_at=13)
    assert [step for step, _ in never] == [10, 20, 25]
    assert often == never and resumed == never  # exactly: the same sums over the same steps
    assert often_final == never_final == resumed_final == never[-1][1]


# --- class 5: one run per concept at a time ------------------------------------------------------------------

_HOLD = """
import sys, time
from pathlib import Path
from tinv_cli.training.process import RunLock
lock = RunLock(Path(sys.argv[1]), "cat-toy")
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_run_of_the_same_concept_is_refused_naming_the_first(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    request = TrainRequest(
        load_project(make_project(tmp_path, tiny_model_dir, train={"steps": 2})), "cat-toy"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(_run_dir())],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(TinvError) as caught:
            train(request)
        assert f"cat-toy is being trained by process {holder.pid} on " in caught.value.message
        assert " since 20" in caught.value.message
        assert f"`kill {holder.pid}`" in (caught.value.hint or "")
        assert "tinv train cat-toy" in (caught.value.hint or "")
        assert checkpoint.read_info(_run_dir()) is None and Registry().list() == []
        # The refused run touched nothing of the holder's: its note is still there.
        holder_note = json.loads((_run_dir() / process.HOLDER_FILE).read_text())
        assert holder_note["pid"] == holder.pid
    finally:
        holder.kill()  # SIGKILL: the lock goes with the process, no cleanup of its own runs
        holder.wait(timeout=60)
    lock = process.RunLock(_run_dir(), "cat-toy")
    lock.acquire()  # free again, although the killed holder's note is left behind
    lock.release()
    assert not (_run_dir() / process.HOLDER_FILE).exists()


# --- class 7: a kill between registering and the run's bookkeeping -------------------------------------------


@pytest.mark.slow
def test_a_rerun_after_a_failure_right_after_registering_adds_no_second_version(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = TrainRequest(
        load_project(make_project(tmp_path, tiny_model_dir, train={"steps": 3})), "cat-toy"
    )
    real_update = checkpoint.update_meta

    def killed(run_dir: Path, **changes: object) -> None:
        raise KeyboardInterrupt("killed just after the registry's rename")

    monkeypatch.setattr(checkpoint, "update_meta", killed)
    with pytest.raises(KeyboardInterrupt):
        train(request)
    monkeypatch.setattr(checkpoint, "update_meta", real_update)
    [made] = Registry().versions("cat-toy")
    info = checkpoint.read_info(_run_dir())
    assert info is not None and not info.finished and info.step == 3 and info.run_id
    assert made.info["training"]["run_id"] == info.run_id

    recorder = Recorder()
    summary = train(request, recorder)
    assert summary.entry == made.ref == "cat-toy@1" and summary.start_step == 3
    assert [e.ref for e in Registry().versions("cat-toy")] == ["cat-toy@1"]
    assert any("cat-toy@1 was registered by this run before it was stopped" in m for m in recorder.messages)
    done = checkpoint.read_info(_run_dir())
    assert done is not None and done.finished and done.entry == "cat-toy@1"

    again = train(request)  # a finished run's rerun is a new run, with a new id: a new version, as before
    assert again.entry == "cat-toy@2"


# --- class 8: signals outside the training loop --------------------------------------------------------------


class _StopAtStart(Recorder):
    """Sends a signal while set-up is still under way (on_start is its last act)."""

    def on_start(self, info: StartInfo) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_signals_during_set_up_stop_at_once_and_sweep_what_killed_runs_left(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    request = TrainRequest(
        load_project(make_project(tmp_path, tiny_model_dir, train={"steps": 20})), "cat-toy"
    )
    with pytest.raises(TrainingInterrupted) as fresh:
        train(request, _StopAtStart())
    assert fresh.value.message == "SIGTERM: interrupted before training started; nothing to resume"
    assert fresh.value.hint == "run `tinv train cat-toy` to start again"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    assert checkpoint.read_info(_run_dir()) is None and Registry().list() == []

    with pytest.raises(TrainingInterrupted):
        train(request, Recorder(interrupt_at=4))
    # What runs SIGKILLed while writing leave (class 9): temporary names carrying a pid no longer alive.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    folder = _run_dir() / checkpoint.CHECKPOINT_DIR
    leftovers = [
        _run_dir() / f".checkpoint.{pid}.0123abcd.tmp",
        folder / f".meta.json.{pid}.89abcdef.tmp",
        _run_dir() / f".metrics.jsonl.{pid}.00ff00ff.tmp",
    ]
    leftovers[0].mkdir()
    (leftovers[0] / "state.pt").write_bytes(bytes(1000))
    leftovers[1].write_text("{")
    leftovers[2].write_text("")
    assert atomic.stray_temps(_run_dir()) == sorted([leftovers[0], leftovers[2]])

    recorder = _StopAtStart()
    with pytest.raises(TrainingInterrupted) as resumed:
        train(request, recorder)
    assert resumed.value.message.startswith(
        "SIGTERM: interrupted before training resumed; the checkpoint at step 4/20"
    )
    assert resumed.value.hint == "run `tinv train cat-toy` to resume"
    info = checkpoint.read_info(_run_dir())
    assert info is not None and info.step == 4 and not info.finished
    assert not any(p.exists() for p in leftovers)  # swept at the rerun, minutes (not an hour) after the kill


@pytest.mark.slow
def test_a_signal_at_the_last_step_saves_and_registers(tmp_path: Path, tiny_model_dir: Path) -> None:
    request = TrainRequest(
        load_project(make_project(tmp_path, tiny_model_dir, train={"steps": 3})), "cat-toy"
    )
    recorder = Recorder(interrupt_at=3, sig=signal.SIGTERM)
    summary = train(request, recorder)
    assert summary.entry == "cat-toy@1" and [e.ref for e in Registry().list()] == ["cat-toy@1"]
    assert any(
        m
        == "SIGTERM after the last step: the run was complete, so it was saved and registered as cat-toy@1; "
        "nothing to resume"
        for m in recorder.messages
    )
    info = checkpoint.read_info(_run_dir())
    assert info is not None and info.finished and info.step == 3


# Loading the model is made slow, so the signal surely comes during set-up.
_SLOW_SETUP = """
import time
from tinv_cli.training import inversion
real = inversion.load_parts
def slow(*args, **kwargs):
    print("loading", flush=True)
    time.sleep(60)
    return real(*args, **kwargs)
inversion.load_parts = slow
from tinv_cli.cli import main
main()
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_tinv_train_stopped_during_set_up_exits_1_with_one_error(
    tmp_path: Path, tiny_model_dir: Path, sig: signal.Signals
) -> None:
    make_project(tmp_path, tiny_model_dir, train={"steps": 5})
    process_ = subprocess.Popen(
        [sys.executable, "-c", _SLOW_SETUP, "train", "cat-toy"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process_.stdout is not None and process_.stdout.readline() == "loading\n"
        started = time.monotonic()
        process_.send_signal(sig)
        stdout, stderr = process_.communicate(timeout=60)
    finally:
        process_.kill()
    assert time.monotonic() - started < 30  # at once, not after the model has loaded
    assert process_.returncode == 1, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: {sig.name}: interrupted before training started; nothing to resume"]
    assert "Hint: run `tinv train cat-toy` to start again" in stderr
    assert "Traceback" not in stderr and stdout == ""
    lock = process.RunLock(_run_dir(), "cat-toy")
    lock.acquire()  # released
    lock.release()
