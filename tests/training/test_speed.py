"""The trainer's speed choices change speed and memory, never results: channels-last weights, micro-batches in
one pass, no host reads in the hot loop, the CPU's bf16 note, and checkpoints of kilobytes."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import Recorder, make_project
from tests.tiny import build_tiny_pipeline
from tinv_cli.project.load import load_project
from tinv_cli.registry.store import Registry
from tinv_cli.training import checkpoint, speed
from tinv_cli.training.recipe import train
from tinv_cli.training.request import TrainRequest


def _conv_weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in module.parameters() if p.dim() == 4]


def test_channels_last_changes_the_layout_not_the_values() -> None:
    pipe = build_tiny_pipeline()
    unet, vae = pipe.unet, pipe.vae
    before = [w.detach().clone() for w in _conv_weights(unet)]
    sample = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    hidden = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = unet(sample, torch.tensor([10]), hidden).sample

    undo = speed.to_channels_last(unet, vae)
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(unet))
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(vae))
    assert all(torch.equal(w, b) for w, b in zip(_conv_weights(unet), before, strict=True))
    with torch.no_grad():
        torch.testing.assert_close(unet(sample, torch.tensor([10]), hidden).sample, expected)
    speed.to_channels_last(unet)()  # already channels-last: nothing to change, so nothing to undo

    undo()
    assert all(w.is_contiguous() for w in _conv_weights(unet)) and all(
        w.is_contiguous() for w in _conv_weights(vae)
    )
    assert all(torch.equal(w, b) for w, b in zip(_conv_weights(unet), before, strict=True))


def test_activation_bytes_counts_what_backward_keeps_not_the_weights() -> None:
    layer = torch.nn.Linear(256, 256).requires_grad_(False)

    def forward(batch: int) -> int:
        x = torch.randn(batch, 256, requires_grad=True)
        return speed.activation_bytes(lambda: layer(torch.tanh(layer(x))).sum(), layer.parameters())

    small, large = forward(64), forward(128)
    assert small > 0 and large == 2 * small  # activations grow with the batch; the weights would not
    assert small < layer.weight.numel() * 4  # the 256 x 256 weight is not counted


def test_micro_batches_are_batched_only_with_room_to_spare() -> None:
    cpu = torch.device("cpu")
    assert not speed.batch_micro_steps(1, 1, cpu)  # nothing to batch
    assert speed.batch_micro_steps(4, 1024, cpu)
    assert not speed.batch_micro_steps(4, 10**18, cpu)  # would not fit: accumulate instead


def _train(
    tmp_path: Path,
    model: Path,
    name: str,
    settings: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    concept: dict[str, Any] | None = None,
) -> tuple[Any, Recorder]:
    monkeypatch.setenv("TINV_HOME", str(tmp_path / name))
    project = load_project(make_project(tmp_path / name, model, train=settings, concept=concept))
    recorder = Recorder()
    return train(TrainRequest(project, "cat-toy"), recorder), recorder


@pytest.mark.slow
def test_batched_micro_steps_train_what_accumulation_trains(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {"steps": 3, "batch_size": 2, "gradient_accumulation": 3, "learning_rate": 5e-3, "seed": 1}
    runs = {}
    for batched in (False, True):
        monkeypatch.setattr(speed, "batch_micro_steps", lambda *args, batched=batched: batched)
        summary, recorder = _train(tmp_path, tiny_model_dir, f"batched-{batched}", settings, monkeypatch)
        runs[batched] = (Registry().get(summary.entry).embedding().vectors[0], summary.final_loss, recorder)
    assert any("run as one batch of 6" in m for m in runs[True][2].messages)
    assert not any("run as one batch" in m for m in runs[False][2].messages)
    # Same images, prompts, noise and timesteps, one pass instead of three: the same training up to rounding.
    torch.testing.assert_close(runs[True][0], runs[False][0], rtol=1e-4, atol=1e-6)
    assert runs[True][1] == pytest.approx(runs[False][1], rel=1e-4)


_HOST_READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


@pytest.mark.slow
def test_no_host_reads_between_the_loss_reads(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU a value read back to the host waits for the device; tinv's loop reads only every LOSS_EVERY
    steps. On the CPU the same reads are visible as calls: none may come from tinv's code in steps 2 to 9."""
    window = {"open": False}
    reads: list[str] = []

    def watch(name: str) -> Any:
        original = getattr(torch.Tensor, name)

        def read(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if window["open"]:
                frames = [f for f in traceback.extract_stack()[:-1] if "tinv_cli" in f.filename]
                if frames:
                    reads.append(f"{name} at {Path(frames[-1].filename).name}:{frames[-1].lineno}")
            return original(self, *args, **kwargs)

        return read

    for name in _HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, watch(name))

    class Watch(Recorder):
        def on_step(self, step: int, loss: float | None, lr: float, it_s: float | None) -> None:
            super().on_step(step, loss, lr, it_s)
            window["open"] = 1 <= step < 9

    monkeypatch.setenv("TINV_HOME", str(tmp_path / "home"))
    project = load_project(
        make_project(tmp_path, tiny_model_dir, train={"steps": 10, "gradient_accumulation": 2})
    )
    recorder = Watch()
    train(TrainRequest(project, "cat-toy"), recorder)
    assert recorder.steps == list(range(1, 11))
    assert reads == []


@pytest.mark.slow
def test_bf16_on_a_cpu_without_bf16_instructions_says_so(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {"steps": 1, "mixed_precision": "bf16"}
    for has_bf16 in (False, True):
        monkeypatch.setattr(speed, "cpu_has_bf16", lambda has_bf16=has_bf16: has_bf16)
        _, recorder = _train(tmp_path, tiny_model_dir, f"bf16-{has_bf16}", settings, monkeypatch)
        said = any("no bf16 instructions" in m for m in recorder.messages)
        assert said is not has_bf16


@pytest.mark.slow
def test_a_one_vector_sd15_concept_checkpoints_in_kilobytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """768 wide as SD 1.x: the checkpoint holds the vectors, their AdamW state and the random streams, nothing
    of the model (the diffusers example's checkpoint holds the whole text encoder: about 800 MB)."""
    from tests.tiny import save_tiny_pipeline

    model = save_tiny_pipeline(tmp_path / "sd-768", width=768)
    summary, _ = _train(tmp_path, model, "home", {"steps": 2, "checkpoint_every": 1}, monkeypatch)
    size = sum(p.stat().st_size for p in summary.checkpoint.rglob("*") if p.is_file())
    assert 0 < size <= 1_000_000
    state = checkpoint.load_state(summary.checkpoint)
    assert [tuple(v.shape) for v in state["vectors"]] == [(1, 768)]
    entry = Registry().get(summary.entry)
    assert entry.embedding_file().stat().st_size < 4096  # 768 float32 values and a header


@pytest.mark.slow
def test_background_validation_draws_the_same_grids_and_leaves_training_alone(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    from PIL import Image

    from tinv_cli.training import validation

    settings = {"steps": 3, "validation_every": 1, "num_validation_images": 2, "learning_rate": 5e-3}
    prompt = {"validation_prompt": "a <cat-toy> on a beach"}
    runs = {}
    for background in (False, True):
        monkeypatch.setattr(validation, "in_background", lambda device, background=background: background)
        summary, recorder = _train(
            tmp_path, tiny_model_dir, f"bg-{background}", settings, monkeypatch, prompt
        )
        grids = [np.asarray(Image.open(path)) for path in summary.validation]
        runs[background] = (Registry().get(summary.entry).embedding().vectors[0], grids, summary, recorder)
    unvalidated, _ = _train(tmp_path, tiny_model_dir, "none", settings, monkeypatch)

    for vectors, _grids, summary, recorder in runs.values():
        assert [p.name for p in summary.validation] == ["step-00001.png", "step-00002.png", "step-00003.png"]
        assert recorder.validations == list(summary.validation)  # reported from the training thread, in order
        assert torch.equal(vectors, Registry().get(unvalidated.entry).embedding().vectors[0])
    assert all(np.array_equal(a, b) for a, b in zip(runs[False][1], runs[True][1], strict=True))
    assert not np.array_equal(runs[True][1][0], runs[True][1][2])  # the vectors moved between the grids


@pytest.mark.slow
def test_compile_trains_the_same_vectors(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch._inductor")
    # A large Adam epsilon makes the update proportional to the gradient: with the default, Adam's first steps
    # move every element by +-lr whatever the gradient's size, so a last-bit difference between compiled and
    # eager kernels in a near-zero gradient would flip a whole step and say nothing about compile itself.
    settings = {"steps": 2, "learning_rate": 1.0, "adam_epsilon": 1.0}
    vectors = []
    for name, use_compile in (("eager", False), ("compiled", True)):
        summary, _ = _train(tmp_path, tiny_model_dir, name, {**settings, "compile": use_compile}, monkeypatch)
        vectors.append(Registry().get(summary.entry).embedding().vectors[0])
    torch.testing.assert_close(vectors[1], vectors[0], rtol=1e-4, atol=1e-5)
