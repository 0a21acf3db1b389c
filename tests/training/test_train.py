"""End-to-end training runs on the tiny pipeline: the registered result, resume after SIGINT, bf16, and two
data-parallel CPU processes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import Recorder, make_project
from tinv_cli.project.load import load_project
from tinv_cli.registry.store import Registry
from tinv_cli.training import checkpoint, metrics
from tinv_cli.training.recipe import train
from tinv_cli.training.request import TrainingInterrupted, TrainRequest


@pytest.mark.slow
def test_registered_entry_loads_everywhere_and_no_other_row_changed(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from diffusers import StableDiffusionPipeline

    from tests.helpers import encode_prompt
    from tests.tiny import build_tiny_pipeline
    from tinv_cli.sampling.loader import expand_prompt, load_concepts

    project = make_project(
        tmp_path,
        tiny_model_dir,
        train={
            "steps": 4,
            "gradient_accumulation": 2,
            "checkpoint_every": 2,
            "validation_every": 2,
            "num_validation_images": 2,
            "learning_rate": 5e-3,
        },
        concept={"vectors": 2, "initializer": "toy cat", "validation_prompt": "a <cat-toy> on a beach"},
    )
    (tmp_path / "images" / "1.txt").write_text("on a red square", encoding="utf-8")
    pipe = build_tiny_pipeline()
    encoder, tokenizer = pipe.text_encoder, pipe.tokenizer
    rows_module = encoder.get_input_embeddings()
    base_rows = rows_module.weight.detach().clone()
    flags = [p.requires_grad for p in encoder.parameters()]
    vocab = len(tokenizer)

    recorder = Recorder()
    summary = train(TrainRequest(load_project(project), "cat-toy"), recorder, pipeline=pipe)

    # The pipeline it trained on comes back as it was: same module, same rows, same tokenizer, same flags.
    assert encoder.get_input_embeddings() is rows_module
    assert torch.equal(rows_module.weight, base_rows)
    assert len(tokenizer) == vocab and not encoder.training
    assert [p.requires_grad for p in encoder.parameters()] == flags

    entry = Registry().get("cat-toy")
    assert summary.entry == entry.ref == "cat-toy@1" and summary.steps == 4 and summary.start_step == 0
    info = entry.info
    assert info["source"] == {"type": "trained", "run": str(summary.run_dir)}
    assert info["base_model"] == str(tiny_model_dir) and info["images"] == 3
    training = info["training"]
    assert training["steps"] == 4 and training["seed"] == 0 and training["vectors"] == 2
    assert training["initializer"] == "toy cat" and training["mixed_precision"] == "no"
    assert (
        training["final_loss"] == pytest.approx(summary.final_loss, abs=1e-6) and training["wall_time_s"] > 0
    )
    assert (entry.path / "validation.png").is_file() and (entry.path / "README.md").is_file()
    vectors = entry.embedding().vectors[0]
    toy, cat = (tokenizer.encode(w, add_special_tokens=False)[0] for w in ("toy", "cat"))
    assert not torch.equal(vectors, torch.stack([base_rows[toy], base_rows[cat]]))  # the vectors moved

    # The run folder: metrics every LOSS_EVERY steps and at the last one (never because a checkpoint was
    # saved, issue 14 class 12), the plot, the validation grids.
    records = metrics.read_metrics(summary.metrics)
    assert [r["step"] for r in records] == [4] and set(records[0]) == {"step", "loss", "lr", "it_s"}
    assert summary.loss_plot.is_file() and recorder.checkpoints == [2, 4]
    assert [p.name for p in summary.validation] == ["step-00002.png", "step-00004.png"]
    with Image.open(summary.validation[-1]) as grid:
        assert grid.size == (64, 32)  # two 32x32 images side by side
    meta = checkpoint.read_info(summary.run_dir)
    assert meta is not None and meta.finished and meta.entry == "cat-toy@1"

    # diffusers' own loader: the file's rows land at the new ids, and every old row is the base model's.
    reference = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None)
    reference.load_textual_inversion(str(entry.embedding_file()))
    table = reference.text_encoder.get_input_embeddings().weight
    new_ids = reference.tokenizer.convert_tokens_to_ids(["<cat-toy>", "<cat-toy>_1"])
    assert torch.equal(table[:vocab], base_rows)
    assert torch.equal(table[new_ids], vectors)

    # tinv's loader gives the same text-encoder output for a prompt using the concept.
    ours = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None)
    load_concepts(ours, [entry.embedding()])
    prompt = expand_prompt("a photo of a <cat-toy>", [entry.embedding()])
    with torch.no_grad():
        ids = reference.tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
        expected = reference.text_encoder(ids)[0]
    torch.testing.assert_close(encode_prompt(ours, "a photo of a <cat-toy>"), expected)  # expands it itself


def _vectors(ref: str) -> torch.Tensor:
    return Registry().get(ref).embedding().vectors[0]


@pytest.mark.slow
def test_sigint_at_step_10_then_resume_equals_an_uninterrupted_run(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checkpoints at 4 and 8, then the one SIGINT makes at 10: the resumed run starts from the latter.
    settings = {"steps": 20, "gradient_accumulation": 2, "checkpoint_every": 4, "seed": 3}
    project = load_project(make_project(tmp_path, tiny_model_dir, train=settings))
    request = TrainRequest(project, "cat-toy")

    monkeypatch.setenv("TINV_HOME", str(tmp_path / "home-straight"))
    straight_recorder = Recorder()
    straight = train(request, straight_recorder)
    expected = _vectors(straight.entry)

    monkeypatch.setenv("TINV_HOME", str(tmp_path / "home-resumed"))
    with pytest.raises(TrainingInterrupted) as caught:
        train(request, Recorder(interrupt_at=10))
    assert "interrupted at step 10/20; checkpoint saved" in caught.value.message
    assert caught.value.hint == "run `tinv train cat-toy` to resume"
    assert Registry().list() == []  # nothing registered for an interrupted run
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored

    assert checkpoint.read_info(Path(os.environ["TINV_HOME"]) / "runs" / "cat-toy").step == 10  # type: ignore[union-attr]
    resumed_recorder = Recorder()
    resumed = train(request, resumed_recorder)
    assert resumed.start_step == 10 and resumed_recorder.steps == list(range(11, 21))
    assert any("Resuming cat-toy from its checkpoint at step 10/20" in m for m in resumed_recorder.messages)
    # Bitwise, not approximately: every random stream and the optimizer state were restored exactly.
    assert torch.equal(_vectors(resumed.entry), expected)
    assert resumed.final_loss == straight.final_loss
    assert [r["loss"] for r in metrics.read_metrics(resumed.metrics)] == [
        r["loss"] for r in metrics.read_metrics(straight.metrics)
    ]


@pytest.mark.slow
def test_short_bf16_run_on_cpu(tmp_path: Path, tiny_model_dir: Path) -> None:
    project = make_project(
        tmp_path,
        tiny_model_dir,
        train={"steps": 3, "mixed_precision": "bf16"},
    )
    summary = train(TrainRequest(load_project(project), "cat-toy"))
    entry = Registry().get(summary.entry)
    vectors = entry.embedding().vectors[0]
    assert vectors.dtype == torch.float32 and torch.isfinite(vectors).all()
    assert entry.info["training"]["mixed_precision"] == "bf16" and summary.mixed_precision == "bf16"
    assert summary.final_loss is not None and np.isfinite(summary.final_loss)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_two_cpu_processes_end_with_identical_embeddings(tmp_path: Path, tiny_model_dir: Path) -> None:
    make_project(tmp_path, tiny_model_dir, train={"steps": 6, "learning_rate": 5e-3})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "tinv_cli", "train", "cat-toy", "--json",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout[result.stdout.index("{") :])  # rank 0 alone prints the result
    assert output["num_processes"] == 2
    hashes = output["rank_sha256"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]  # each process hashed its own final vectors
    entry = Registry().get(output["entry"])
    registered = entry.embedding().vectors[0].numpy().tobytes()
    assert hashlib.sha256(registered).hexdigest() == hashes[0]
    assert entry.info["training"]["num_processes"] == 2
    # Learning rate scaled by the process count, as in the reference script.
    assert entry.info["training"]["effective_learning_rate"] == pytest.approx(5e-3 * 2)


@pytest.mark.slow
def test_sigterm_from_outside_saves_a_checkpoint_and_exits_1(tmp_path: Path, tiny_model_dir: Path) -> None:
    make_project(tmp_path, tiny_model_dir, train={"steps": 5000, "checkpoint_every": 2})
    run_dir = Path(os.environ["TINV_HOME"]) / "runs" / "cat-toy"
    process = subprocess.Popen(
        [sys.executable, "-m", "tinv_cli", "train", "cat-toy"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(600):  # until the first checkpoint proves the loop is running
            if checkpoint.read_info(run_dir) is not None or process.poll() is not None:
                break
            import time

            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 1, stderr[-3000:]
    error_lines = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and "interrupted at step" in error_lines[0] and "/5000" in error_lines[0]
    assert "Hint: run `tinv train cat-toy` to resume" in stderr
    assert stdout == ""
    info = checkpoint.read_info(run_dir)
    assert info is not None and not info.finished and info.step >= 2
    assert Registry().list() == []
