"""The judge: a small CNN that says which colour, shape and background a shapes image shows.

It is trained on generated ground truth (a world seed the model never saw), with blur, noise and brightness
jitter so that it reads a diffusion model's slightly soft samples as it reads clean renders. Its accuracy on a
further held-out seed is measured at build time and shipped beside its weights in ``judge.json``.
"""

from __future__ import annotations

import functools
import json
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli.shapes import world

if TYPE_CHECKING:
    import torch
    from PIL import Image

WEIGHTS = "judge.safetensors"
INFO = "judge.json"
HEADS: dict[str, tuple[str, ...]] = {
    "colour": tuple(world.COLOURS),
    "shape": world.SHAPES,
    "background": world.BACKGROUNDS,
}


@dataclass(frozen=True)
class Judgement:
    colour: str
    shape: str
    background: str

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"


def make_network() -> torch.nn.Module:
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                block(3, 24),
                nn.MaxPool2d(2),
                block(24, 48),
                nn.MaxPool2d(2),
                block(48, 64),
                nn.AdaptiveMaxPool2d(1),
                nn.Flatten(),
            )
            self.heads = nn.ModuleDict({name: nn.Linear(64, len(labels)) for name, labels in HEADS.items()})

        def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
            features = self.features(pixels)
            return {name: head(features) for name, head in self.heads.items()}

    # A fixed initialisation (the build's judge depends only on its seed), without touching the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Net()


def _to_pixels(images: Sequence[Image.Image]) -> torch.Tensor:
    import numpy as np
    import torch

    array = np.stack([np.asarray(image.convert("RGB").resize((world.SIZE, world.SIZE))) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _labels(scenes: Sequence[world.Scene]) -> dict[str, torch.Tensor]:
    import torch

    return {
        name: torch.tensor([labels.index(getattr(s, name)) for s in scenes]) for name, labels in HEADS.items()
    }


def _augment(pixels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    import torch

    n = len(pixels)
    blurred = torch.nn.functional.avg_pool2d(pixels, 3, stride=1, padding=1, count_include_pad=False)
    mix = torch.rand(n, 1, 1, 1, generator=gen) * (torch.rand(n, 1, 1, 1, generator=gen) < 0.5)
    pixels = pixels * (1 - mix) + blurred * mix
    gain = 1 + 0.15 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    noise = torch.randn(pixels.shape, generator=gen) * torch.rand(n, 1, 1, 1, generator=gen) * 0.12
    return (pixels * gain + noise).clamp(-1, 1)


def train_judge(seed: int, images: int, steps: int, log: Callable[[str], None], device: str = "cpu") -> Any:
    """A judge trained on scenes ``0 .. images-1`` of world ``seed``; its held-out accuracy is set on it."""
    import torch

    scenes = [world.scene(seed, i) for i in range(images)]
    pixels = _to_pixels([world.render(s) for s in scenes])
    labels = _labels(scenes)
    net = make_network().to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    net.train()
    begin = time.monotonic()
    for step in range(steps):
        gen = torch.Generator().manual_seed(seed * 7919 + step)
        index = torch.randint(0, images, (128,), generator=gen)
        batch = _augment(pixels[index], gen).to(device)
        out = net(batch)
        # Added in HEADS order (as sum() did), so the build stays the same to the bit.
        loss = functools.reduce(
            operator.add,
            [torch.nn.functional.cross_entropy(out[name], labels[name][index].to(device)) for name in HEADS],
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % 100 == 0:
            log(f"judge step {step + 1}/{steps} loss {loss.item():.4f} ({time.monotonic() - begin:.0f}s)")
    net.eval()
    return net.cpu()


def held_out_accuracy(net: Any, seed: int, count: int) -> dict[str, float]:
    """Accuracy per head, and for colour and shape together, on scenes of a seed the judge never saw."""
    scenes = [world.scene(seed, i) for i in range(count)]
    verdicts = Judge(net).classify([world.render(s) for s in scenes])
    result = {
        name: sum(getattr(v, name) == getattr(s, name) for v, s in zip(verdicts, scenes, strict=True)) / count
        for name in HEADS
    }
    result["colour+shape"] = (
        sum(v.colour == s.colour and v.shape == s.shape for v, s in zip(verdicts, scenes, strict=True))
        / count
    )
    return result


class Judge:
    def __init__(self, net: Any, info: dict[str, Any] | None = None) -> None:
        self.net = net
        self.info = info or {}

    def classify(self, images: Sequence[Image.Image]) -> list[Judgement]:
        import torch

        verdicts: list[Judgement] = []
        with torch.no_grad():
            for start in range(0, len(images), 256):
                out = self.net(_to_pixels(images[start : start + 256]))
                picks = {name: out[name].argmax(dim=1).tolist() for name in HEADS}
                for i in range(len(picks["colour"])):
                    verdicts.append(Judgement(*(HEADS[name][picks[name][i]] for name in HEADS)))
        return verdicts


def save_judge(net: Any, folder: Path, info: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / WEIGHTS))
    (folder / INFO).write_text(json.dumps({"heads": HEADS, **info}, indent=2) + "\n")


def load_judge(folder: Path) -> Judge:
    from safetensors.torch import load_file

    net = make_network()
    net.load_state_dict(load_file(str(folder / WEIGHTS)))
    net.eval()
    return Judge(net, json.loads((folder / INFO).read_text()))
