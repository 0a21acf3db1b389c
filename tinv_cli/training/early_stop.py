"""Early stopping on a validation loss that does not move: every ``early_stop_every`` steps the loss of the
current vectors on fixed inputs (every image unflipped with its first prompt, ``DRAWS`` latent samples, noises
and timesteps each, from a generator of its own), the best vectors kept, and the run stopped after
``early_stop_patience`` evaluations without a better one; the best vectors are what the run registers.

The fixed inputs come from their own seeded stream, drawn once at set-up, so training's random streams, and so
its steps, are the same with or without early stopping. The history, best loss, step and vectors go into the
checkpoint (``state_dict``), so a resumed run stops at the same step with the same vectors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

DRAWS = 4  # noise and timestep draws per image: enough to smooth the loss's dependence on t

# (image indices, flips, prompt indices, latents, noise, timesteps) -> the mean loss of that batch.
LossFn = Callable[..., "torch.Tensor"]


class EarlyStop:
    def __init__(
        self,
        *,
        every: int,
        patience: int,
        seed: int,
        latent_mean: torch.Tensor,
        latent_std: torch.Tensor,
        scaling_factor: float,
        num_timesteps: int,
        batch: int,
    ) -> None:
        import torch

        from tinv_cli.training.data import derive_seed

        self.every, self.patience, self.batch = every, patience, batch
        generator = torch.Generator().manual_seed(derive_seed(seed, "early-stop"))
        count = latent_mean.shape[0]
        self.images = torch.arange(count).repeat(DRAWS)
        shape = (len(self.images), *latent_mean.shape[2:])
        sample = torch.randn(shape, generator=generator)
        noise = torch.randn(shape, generator=generator)
        timesteps = torch.randint(0, num_timesteps, (len(self.images),), generator=generator)
        device = latent_mean.device
        mean, std = latent_mean[self.images.to(device), 0], latent_std[self.images.to(device), 0]
        self.latents = (mean + std * sample.to(device)) * scaling_factor
        self.noise, self.timesteps = noise.to(device), timesteps.to(device)
        self.images = self.images.to(device)
        self.history: list[tuple[int, float]] = []
        self.best_loss = math.inf
        self.best_step = -1
        self.best_vectors: list[torch.Tensor] | None = None
        self.since_best = 0
        self.stopped = False

    def due(self, step: int) -> bool:
        return not self.stopped and step % self.every == 0

    def evaluate(self, step: int, loss_fn: LossFn, trainable: Sequence[torch.Tensor]) -> float:
        """The validation loss of the vectors now; keeps them if best, and decides whether to stop."""
        import torch

        total = 0.0
        with torch.no_grad():
            for start in range(0, len(self.images), self.batch):
                part = slice(start, start + self.batch)
                images = self.images[part]
                zeros = torch.zeros_like(images)
                loss = loss_fn(
                    images, zeros, zeros, self.latents[part], self.noise[part], self.timesteps[part]
                )
                total += float(loss) * len(images)
        value = total / len(self.images)
        self.history.append((step, value))
        if value < self.best_loss:
            self.best_loss, self.best_step, self.since_best = value, step, 0
            self.best_vectors = [new.detach().cpu().clone() for new in trainable]
        else:
            self.since_best += 1
            self.stopped = self.since_best >= self.patience
        return value

    def use_best(self, trainable: Sequence[torch.Tensor]) -> None:
        """Put the best vectors into the trainable rows (nothing if no evaluation was made)."""
        if self.best_vectors is None:
            return
        for new, best in zip(trainable, self.best_vectors, strict=True):
            new.data.copy_(best.to(new.device))

    def summary(self) -> dict[str, Any]:
        return {
            "best_step": self.best_step,
            "best_loss": None if self.best_vectors is None else round(self.best_loss, 6),
            "stopped_early": self.stopped,
            "history": [[step, round(loss, 6)] for step, loss in self.history],
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [list(item) for item in self.history],
            "best_loss": self.best_loss,
            "best_step": self.best_step,
            "best_vectors": self.best_vectors,
            "since_best": self.since_best,
            "stopped": self.stopped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [(int(step), float(loss)) for step, loss in state["history"]]
        self.best_loss = float(state["best_loss"])
        self.best_step = int(state["best_step"])
        self.best_vectors = state["best_vectors"]
        self.since_best = int(state["since_best"])
        self.stopped = bool(state["stopped"])
