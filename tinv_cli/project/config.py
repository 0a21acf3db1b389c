"""Typed, frozen configuration: what a parsed ``concepts.toml`` becomes, and the schema of the file.

Every key of the file is a field made with ``schema.setting``, which holds its default, help and rule; the
annotation gives its type. ``load.py`` checks the file against these fields, ``template.py`` writes them out
for ``tinv init`` and ``cli/train_cmd.py`` makes them options of ``tinv train``, so a setting is declared here
and nowhere else. The trainer, sampler and hub code only ever see these objects. Train defaults are the
``tinv`` recipe's (``recipes.py``): the diffusers example's cat-toy recipe with early stopping.
"""

# setting() returns a dataclasses.field(); ruff's check for calls in dataclass defaults cannot see that.
# ruff: noqa: RUF009

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from tinv_cli.embedding import MAX_VECTORS
from tinv_cli.project.recipes import RECIPES, TINV
from tinv_cli.project.schema import NON_EMPTY, Rule, at_least, between, more_than, setting

DEFAULT_BASE_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"

MixedPrecision = Literal["no", "fp16", "bf16"]
Recipe = Literal["tinv", "paper"]
Kind = Literal["object", "style", "negative"]
Init = Literal["initializer", "random", "zero", "encoder"]
# The ways of starting that read the concept's initializer words.
INITIALIZER_INITS: tuple[str, ...] = ("initializer", "encoder")
NormControl = Literal["free", "keep", "regularise"]
Prediction = Literal["auto", "epsilon", "v_prediction"]
LrScheduler = Literal[
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"
]

_MULTIPLE_OF_8 = Rule(lambda v: v > 0 and v % 8 == 0, "a positive multiple of 8, e.g. 512")
_BETA = Rule(lambda v: 0 <= v < 1, "at least 0 and less than 1")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run. ``[train]`` gives project defaults, ``[concepts.X.train]`` overrides them.

    The settings a recipe governs (``recipes.py``) default to the ``tinv`` recipe's values; ``explicit``
    names the settings given in the file or on the command line, which ``recipe`` never overrides."""

    recipe: Recipe = setting(
        "tinv",
        "defaults of the settings left out: tinv (the paper's with early stopping, from docs/quality.md's "
        "benchmark) or paper (the diffusers example's, exactly)",
    )
    steps: int = setting(TINV["steps"], "optimizer steps", at_least(1))
    batch_size: int = setting(TINV["batch_size"], "images per step and process", at_least(1))
    gradient_accumulation: int = setting(
        TINV["gradient_accumulation"],
        "micro-steps whose gradients are summed before each optimizer step",
        at_least(1),
    )
    learning_rate: float = setting(TINV["learning_rate"], "learning rate, before scale_lr", more_than(0))
    scale_lr: bool = setting(
        TINV["scale_lr"], "multiply learning_rate by batch_size x gradient_accumulation x processes"
    )
    lr_scheduler: LrScheduler = setting(TINV["lr_scheduler"], "learning-rate schedule")
    lr_warmup_steps: int = setting(
        0, "steps of linear warm-up (for the *_with_warmup and decaying schedulers)", at_least(0)
    )
    lr_num_cycles: int = setting(1, "restarts of cosine_with_restarts", at_least(1))
    resolution: int = setting(
        512,
        "training images are resized to this; best at the model's own: 512 SD 1.x, 768 SD 2.x, 1024 SDXL",
        _MULTIPLE_OF_8,
    )
    center_crop: bool = setting(False, "crop to the centre square instead of resizing the whole image")
    flip_p: float = setting(0.5, "chance of a horizontal flip per image", between(0, 1))
    mixed_precision: MixedPrecision = setting(
        "fp16", "precision of the frozen model; fp16 and bf16 need a GPU, the trained vectors stay fp32"
    )
    # numpy's seeding (used by the data pipeline) accepts only 0 .. 2**32 - 1.
    seed: int = setting(0, "seed of every random choice: same seed, same result", between(0, 2**32 - 1))
    adam_beta1: float = setting(0.9, "AdamW beta1", _BETA)
    adam_beta2: float = setting(0.999, "AdamW beta2", _BETA)
    adam_weight_decay: float = setting(1.0e-2, "AdamW weight decay", at_least(0))
    adam_epsilon: float = setting(1.0e-8, "AdamW epsilon", more_than(0))
    max_grad_norm: float = setting(
        0.0, "gradient clipping; 0 turns it off, as in the reference script", at_least(0)
    )
    min_snr_gamma: float = setting(
        TINV["min_snr_gamma"],
        "min-SNR-gamma loss weighting (Hang et al. 2023); 0 turns it off, 5 is typical",
        at_least(0),
    )
    masked_loss: bool = setting(
        False, "weight the loss by each image's alpha channel or NAME.mask.png (white: learn, black: ignore)"
    )
    norm: NormControl = setting(
        TINV["norm"],
        "norm of the new vectors: keep rescales them to the vocabulary's mean norm after each step, "
        "regularise adds norm_weight x (norm - that mean)^2 to the loss",
    )
    norm_weight: float = setting(0.01, "weight of the norm penalty of norm = regularise", at_least(0))
    early_stop_every: int = setting(
        TINV["early_stop_every"],
        "steps between validation losses on fixed images, noise and timesteps; the best vectors are "
        "registered (0: off)",
        at_least(0),
    )
    early_stop_patience: int = setting(
        TINV["early_stop_patience"],
        "validation losses without improvement before the run stops early",
        at_least(1),
    )
    gradient_checkpointing: bool = setting(
        False, "trade compute for memory in the text encoder (about 30% slower)"
    )
    compile: bool = setting(
        False, "compile the UNet's step with torch.compile: minutes first, then faster steps on a GPU"
    )
    checkpoint_every: int = setting(
        500, "steps between resumable checkpoints (0: only at the end)", at_least(0)
    )
    validation_every: int = setting(0, "steps between validation images (0: only at the end)", at_least(0))
    num_validation_images: int = setting(
        4, "images per validation, when the concept has a validation_prompt", at_least(1)
    )

    # None: every value is literal (a config built in code); from_settings names the ones a table gave.
    explicit: frozenset[str] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_settings(cls, values: dict[str, Any]) -> TrainConfig:
        """The settings a table gives, the rest from its recipe."""
        return cls(**values, explicit=frozenset(values)).with_recipe()

    def merged(self, overrides: dict[str, Any]) -> TrainConfig:
        """A copy with the given fields replaced (keys must be field names); the settings given by neither
        come from the recipe (which ``overrides`` may change)."""
        explicit = None if self.explicit is None else self.explicit | frozenset(overrides)
        return replace(self, **overrides, explicit=explicit).with_recipe()

    def with_recipe(self) -> TrainConfig:
        """A copy whose settings not given explicitly are the recipe's."""
        if self.explicit is None:
            return self
        preset = {k: v for k, v in RECIPES[self.recipe].items() if k not in self.explicit}
        return replace(self, **preset) if preset else self

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name != "explicit")

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.field_names()}


@dataclass(frozen=True)
class ModelConfig:
    base: str = setting(
        DEFAULT_BASE_MODEL,
        "Hub id, local diffusers folder, single-file checkpoint (.safetensors, .ckpt), or builtin:shapes",
        NON_EMPTY,
    )
    revision: str | None = setting(
        None, "a branch, tag or commit of the Hub repository", NON_EMPTY, example="main"
    )
    # How a single-file checkpoint is read; both are ignored for a folder or a Hub id.
    config: str | None = setting(  # absolute once loaded
        None,
        "for a checkpoint of another architecture: a diffusers-layout folder of its configs and tokenizers "
        "(no weights needed), relative to this file",
        NON_EMPTY,
        example="configs/my-model",
    )
    prediction: Prediction = setting(
        "auto",
        "what a checkpoint's UNet predicts; auto: a <name>.yaml beside it, a v_pred key, else SD 2.x "
        "v_prediction and SD 1.x/SDXL epsilon",
    )


@dataclass(frozen=True)
class HubConfig:
    namespace: str | None = setting(
        None,
        "where `tinv push` publishes (e.g. sd-concepts-library)",
        NON_EMPTY,
        example="your-hf-username",
    )
    private: bool = setting(False, "create new Hub repositories as private")


@dataclass(frozen=True)
class Concept:
    """A ``[concepts.NAME]`` table; its examples are the template's commented-out cat-toy concept."""

    name: str
    # The shape of a token is checked by schema._token_problem, with a message about what a token is.
    token: str = setting(MISSING, "the word to use in prompts (default: <NAME>)", example="<cat-toy>")
    images: Path = setting(  # absolute once loaded
        MISSING, "folder of training images, relative to this file", NON_EMPTY, example="data/cat-toy"
    )
    initializer: str | None = setting(
        None,
        "word(s) close to the concept: the vectors start from their embeddings",
        NON_EMPTY,
        example="toy",
    )
    init: Init = setting(
        "initializer",
        "how the vectors start; encoder: the text encoder's output for the initializer (Cross Initialization)",
    )
    kind: Kind = setting(
        "object", "which prompt templates training uses; negative: an embedding for negative prompts"
    )
    vectors: int = setting(1, "embedding vectors for the token", between(1, MAX_VECTORS))
    validation_prompt: str | None = setting(
        None, "prompt of the validation images", example="a <cat-toy> on a beach"
    )
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
