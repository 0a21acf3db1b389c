"""Typed, frozen configuration: what a parsed ``concepts.toml`` becomes.

``project.py`` builds these from the file (reporting every mistake at once); the trainer, sampler and hub code
only ever see these objects. Field defaults are the diffusers example's cat-toy recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

DEFAULT_BASE_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"

MixedPrecision = Literal["no", "fp16", "bf16"]
Kind = Literal["object", "style"]
Init = Literal["initializer", "random", "zero"]

LR_SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run. ``[train]`` gives project defaults, ``[concepts.X.train]`` overrides them."""

    steps: int = 3000
    batch_size: int = 1
    gradient_accumulation: int = 4
    learning_rate: float = 5.0e-4
    scale_lr: bool = True  # multiply learning_rate by batch_size x gradient_accumulation x processes
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    lr_num_cycles: int = 1
    resolution: int = 512
    center_crop: bool = False
    flip_p: float = 0.5
    mixed_precision: MixedPrecision = "fp16"
    seed: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1.0e-2
    adam_epsilon: float = 1.0e-8
    max_grad_norm: float = 0.0  # 0 disables clipping (the reference script does not clip)
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile the UNet's training step (speed.compile_unet)
    checkpoint_every: int = 500
    validation_every: int = 0  # 0: validate only at the end (when a validation prompt is set)
    num_validation_images: int = 4

    def merged(self, overrides: dict[str, Any]) -> TrainConfig:
        """A copy with the given fields replaced (keys must be field names)."""
        return replace(self, **overrides)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ModelConfig:
    base: str = DEFAULT_BASE_MODEL  # Hub id, local diffusers folder, or (later) builtin:NAME
    revision: str | None = None


@dataclass(frozen=True)
class HubConfig:
    namespace: str | None = None
    private: bool = False


@dataclass(frozen=True)
class Concept:
    name: str
    token: str
    images: Path  # absolute
    initializer: str | None = None
    init: Init = "initializer"
    kind: Kind = "object"
    vectors: int = 1
    validation_prompt: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)  # project [train] merged with the concept's own


@dataclass(frozen=True)
class Project:
    path: Path  # the concepts.toml file, absolute
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    concepts: dict[str, Concept] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.path.parent
