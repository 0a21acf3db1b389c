"""The model-family interface: everything that differs between the model families tinv trains and samples.

A family is an architecture: which tokenizer/text-encoder pairs a pipeline has, how a prompt becomes the
denoiser's conditioning, what the denoiser is trained to predict, and how the family's embedding files are keyed.
Training, sampling, loading, evaluation and the file formats ask the family; nothing outside ``tinv_cli/families/``
tests which family it has. A family also knows its **variants**: the models people train on, told apart by their
text encoders' widths (SD 1.x and SD 2.x are one family, with 768- and 1024-wide encoders). A concept records
the variant its widths imply (``"sd1"``), which is how tinv refuses to load it into a model of another.

Adding a family is one module beside ``sd.py`` and ``sdxl.py`` that implements ``Family``, plus its entry in
``FAMILIES`` (``families/__init__.py``). The contract is written out in docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Encoder:
    """One tokenizer/text-encoder pair of a family, as a pipeline holds it."""

    tokenizer: str  # the pipeline attribute: "tokenizer", "tokenizer_2", ...
    text_encoder: str  # "text_encoder", "text_encoder_2", ...
    # The key of this encoder's vectors in the family's embedding files ("clip_l"); None where a file holds one
    # tensor under the concept's token (diffusers), or under a tool's own key (A1111, kohya).
    file_key: str | None = None


@dataclass(frozen=True)
class Variant:
    """A model of a family that people train on, known by its text encoders' widths."""

    id: str  # recorded in tinv.json as the concept's "family": "sd1", "sd2", "sdxl"
    label: str  # short, for messages: "SD 1.x"
    title: str  # for model cards: "Stable Diffusion 1.x"
    widths: tuple[int, ...]
    hub_tag: str  # the Hub tag of a model card: "stable-diffusion", "stable-diffusion-xl"
    example_base: str | None = None  # a Hub model id the model card's usage snippet loads
    # The configuration folders tinv ships for this variant's single-file checkpoints, by prediction type
    # (models/configs_data/NAME); the first is the default when nothing says which the checkpoint predicts.
    checkpoint_configs: tuple[tuple[str, str], ...] = ()
    # kohya's modelspec.architecture id of the variant's base model (library/sai_model_spec.py), which exports
    # write as "<id>/textual-inversion": "stable-diffusion-v1", "stable-diffusion-xl-v1-base".
    modelspec_architecture: str | None = None

    @property
    def default_prediction(self) -> str:
        return self.checkpoint_configs[0][0] if self.checkpoint_configs else "epsilon"

    def checkpoint_config(self, prediction: str) -> str | None:
        """The shipped configuration folder for ``prediction``, else the variant's default one."""
        named = dict(self.checkpoint_configs)
        return named.get(prediction) or (self.checkpoint_configs[0][1] if self.checkpoint_configs else None)


@dataclass(frozen=True)
class ModelFiles:
    """A model's configuration files, read without loading any weights: ``model_index.json`` and the
    ``config.json`` of each component (None where the component or its config is absent)."""

    index: Mapping[str, Any]
    configs: Mapping[str, Mapping[str, Any] | None]

    def has(self, component: str) -> bool:
        # model_index.json lists a component as [library, class]; [null, null] means the slot is empty.
        value = self.index.get(component)
        return isinstance(value, list) and len(value) == 2 and value[0] is not None


class Family(Protocol):
    """What every model family provides. ``torch`` and ``diffusers`` are imported only inside the methods."""

    id: str  # "sd", "sdxl"
    label: str  # for messages: "SD 1.x/2.x", "SDXL"
    encoders: tuple[Encoder, ...]  # in pipeline order: the order of Embedding.vectors
    variants: tuple[Variant, ...]
    # Names of the tensors StableDiffusion*Pipeline.encode_prompt returns, in order (with classifier-free
    # guidance): what a background validation grid is rendered from.
    prompt_embeds: tuple[str, ...]

    def matches_files(self, files: ModelFiles) -> bool:
        """Whether a model whose configuration files are ``files`` belongs to this family (no weights read)."""
        ...

    def matches_checkpoint(self, shapes: Mapping[str, tuple[int, ...]]) -> Variant | None:
        """The variant of a single-file checkpoint in the original (LDM) key layout, from its tensor names and
        shapes alone (no weights read); None when the checkpoint is not one of this family's."""
        ...

    def matches_pipeline(self, pipe: Any) -> bool:
        """Whether a loaded pipeline (or any object with the pipeline's attributes) belongs to this family."""
        ...

    def check_pipeline(self, pipe: Any, base: str) -> None:
        """Raise ModelError for a pipeline that looks like this family but cannot be trained as one."""
        ...

    def native_resolution(self, unet_config: Any, vae_config: Any) -> int:
        """The image size the model generates."""
        ...

    def noise_scheduler(self, scheduler_config: Any) -> Any:
        """The scheduler that noises training latents, from the model's own scheduler config."""
        ...

    def objective(self, noise_scheduler: Any) -> str:
        """What the denoiser predicts, in words ("noise prediction", "v-prediction"); ModelError if unsupported."""
        ...

    def training_target(
        self, noise_scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """What the denoiser learns to output for ``noise_scheduler.add_noise(latents, noise, timesteps)``."""
        ...

    def training_extras(
        self,
        original_sizes: Sequence[tuple[int, int]],
        crop_boxes: Sequence[tuple[int, int, int, int]],
        resolution: int,
    ) -> dict[str, torch.Tensor]:
        """Per-image conditioning beyond the prompt, each tensor ``[images, 2, ...]`` (index 1: the mirrored
        image), kept beside the cached latents and indexed like them; empty for families that need none."""
        ...

    def conditioning(
        self,
        text_encoders: Sequence[Any],
        input_ids: Sequence[torch.Tensor],
        extras: Mapping[str, torch.Tensor],
        dtype: torch.dtype,
    ) -> dict[str, Any]:
        """The denoiser's keyword arguments besides the noisy latents and timesteps, for a batch: ``input_ids[i]``
        ``[B, 77]`` for encoder ``i`` and ``extras`` indexed to the same batch; as the family's pipeline computes
        them at inference, so a concept is used as it was trained."""
        ...

    def pipeline(self, modules: Mapping[str, Any], scheduler: Any) -> Any:
        """The family's diffusers pipeline over modules already in memory (``unet``, ``vae``, ``tokenizer``,
        ``text_encoder``, ... by pipeline attribute), sampling with ``scheduler``."""
        ...
