"""The judge: a small CNN with one head per attribute of a world (colour, shape, background, ...).

It is trained on generated ground truth (a world seed the model never saw), with blur, noise and brightness
jitter so that it reads a diffusion model's slightly soft samples as it reads clean renders. Its accuracy on a
further held-out seed is measured at build time and shipped beside its weights in ``judge.json``, which also
names its heads, which of them describe a style, and its pooling: a loaded judge needs no world module.

A world module (``world`` for builtin:shapes, ``scenes`` for builtin:scenes) provides ``HEADS``,
``STYLE_HEADS``, ``JUDGE_POOL``, ``SIZE``, ``scene`` and ``render``.
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

from tinv_cli.shapes import world as shapes_world

if TYPE_CHECKING:
    from types import ModuleType

    import torch
    from PIL import Image

WEIGHTS = "judge.safetensors"
INFO = "judge.json"
Heads = dict[str, tuple[str, ...]]
HEADS: Heads = shapes_world.HEADS


@dataclass(frozen=True)
class Judgement:
    """What the judge read in one image: a value per head, e.g. ``values["colour"] == "red"``."""

    values: dict[str, str]

    def __getattr__(self, name: str) -> str:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def label(self) -> str:
        """The object: colour and shape."""
        return f"{self.values['colour']} {self.values['shape']}"

    def matches(self, target: dict[str, str]) -> bool:
        return all(self.values.get(name) == value for name, value in target.items())


def make_network(heads: Heads = HEADS, pool: str = "max") -> torch.nn.Module:
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
            )
            # Max pooling says what is present anywhere; the mean adds how much of it (a shape's size).
            self.mean = pool == "max+mean"
            width = 128 if self.mean else 64
            self.heads = nn.ModuleDict(
                {name: nn.Linear(width, len(labels)) for name, labels in heads.items()}
            )

        def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
            grid = self.features(pixels)
            features = grid.amax(dim=(2, 3))
            if self.mean:
                features = torch.cat([features, grid.mean(dim=(2, 3))], dim=1)
            return {name: head(features) for name, head in self.heads.items()}

    if pool not in ("max", "max+mean"):
        raise ValueError(f"unknown judge pooling {pool!r}")

    # A fixed initialisation (the build's judge depends only on its seed), without touching the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Net()


def _to_pixels(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    import numpy as np
    import torch

    array = np.stack([np.asarray(image.convert("RGB").resize((size, size))) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _labels(scenes: Sequence[Any], heads: Heads) -> dict[str, torch.Tensor]:
    import torch

    return {
        name: torch.tensor([labels.index(getattr(s, name)) for s in scenes]) for name, labels in heads.items()
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


def train_judge(
    seed: int,
    images: int,
    steps: int,
    log: Callable[[str], None],
    device: str = "cpu",
    world: ModuleType = shapes_world,
) -> Any:
    """A judge trained on scenes ``0 .. images-1`` of world ``seed``."""
    import torch

    scenes = [world.scene(seed, i) for i in range(images)]
    pixels = _to_pixels([world.render(s) for s in scenes], world.SIZE)
    labels = _labels(scenes, world.HEADS)
    net = make_network(world.HEADS, world.JUDGE_POOL).to(device)
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
            [
                torch.nn.functional.cross_entropy(out[name], labels[name][index].to(device))
                for name in world.HEADS
            ],
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % 100 == 0:
            log(f"judge step {step + 1}/{steps} loss {loss.item():.4f} ({time.monotonic() - begin:.0f}s)")
    net.eval()
    return net.cpu()


def held_out_accuracy(net: Any, seed: int, count: int, world: ModuleType = shapes_world) -> dict[str, float]:
    """Accuracy per head, and for colour and shape together, on scenes of a seed the judge never saw."""
    scenes = [world.scene(seed, i) for i in range(count)]
    verdicts = Judge(net, info_for(world)).classify([world.render(s) for s in scenes])
    result = {
        name: sum(getattr(v, name) == getattr(s, name) for v, s in zip(verdicts, scenes, strict=True)) / count
        for name in world.HEADS
    }
    result["colour+shape"] = (
        sum(v.colour == s.colour and v.shape == s.shape for v, s in zip(verdicts, scenes, strict=True))
        / count
    )
    return result


def info_for(world: ModuleType) -> dict[str, Any]:
    """What ``judge.json`` says of a world's judge besides its measurements."""
    info: dict[str, Any] = {"heads": world.HEADS, "style_heads": list(world.STYLE_HEADS)}
    if world.JUDGE_POOL != "max":
        info["pool"] = world.JUDGE_POOL
    if world.SIZE != shapes_world.SIZE:
        info["size"] = world.SIZE
    return info


class Judge:
    def __init__(self, net: Any, info: dict[str, Any] | None = None) -> None:
        self.net = net
        self.info = info or {}
        self.heads: Heads = {k: tuple(v) for k, v in self.info.get("heads", HEADS).items()}
        # The heads a style concept is read by; an object concept is read by colour and shape.
        self.style_heads: tuple[str, ...] = tuple(self.info.get("style_heads", ("background",)))
        self.size = int(self.info.get("size", shapes_world.SIZE))

    def classify(self, images: Sequence[Image.Image]) -> list[Judgement]:
        import torch

        verdicts: list[Judgement] = []
        with torch.no_grad():
            for start in range(0, len(images), 256):
                out = self.net(_to_pixels(images[start : start + 256], self.size))
                picks = {name: out[name].argmax(dim=1).tolist() for name in self.heads}
                for i in range(len(picks["colour"])):
                    verdicts.append(
                        Judgement({name: self.heads[name][picks[name][i]] for name in self.heads})
                    )
        return verdicts


def save_judge(net: Any, folder: Path, info: dict[str, Any], world: ModuleType = shapes_world) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / WEIGHTS))
    (folder / INFO).write_text(json.dumps({**info_for(world), **info}, indent=2) + "\n")


def load_judge(folder: Path) -> Judge:
    from safetensors.torch import load_file

    info = json.loads((folder / INFO).read_text())
    heads = {k: tuple(v) for k, v in info.get("heads", HEADS).items()}
    net = make_network(heads, info.get("pool", "max"))
    net.load_state_dict(load_file(str(folder / WEIGHTS)))
    net.eval()
    return Judge(net, info)
