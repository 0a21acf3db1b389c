"""What the training methods beyond the paper's objective add to the loss, each off unless a setting asks for it.

- min-SNR-gamma weighting (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy"):
  each sample's loss is weighted by ``min(SNR(t), gamma) / SNR(t)`` for an epsilon target and
  ``min(SNR(t), gamma) / (SNR(t) + 1)`` for a v target, as diffusers' train_text_to_image.py does it, with
  diffusers' own ``compute_snr``.
- masked loss: the squared error weighted by a per-image mask at the latent size, normalised by the mask's
  mean so an all-white mask gives the plain mean squared error, bit for bit.
- norm control: the new vectors rescaled to the vocabulary's mean norm after each step (``keep``), or a
  penalty ``weight * (||v|| - that norm)^2`` in the loss (``regularise``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def min_snr_weights(noise_scheduler: Any, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample weights ``[B]`` of min-SNR-gamma for the scheduler's prediction type (epsilon or v)."""
    import torch
    from diffusers.training_utils import compute_snr

    snr = compute_snr(noise_scheduler, timesteps)
    clipped = torch.clamp(snr, max=gamma)
    # The prediction type decides what the MSE measures: for epsilon the weight on the x0 error is SNR, for v it
    # is SNR + 1, so the clip min(SNR, gamma) is divided by that.
    if noise_scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped / snr


def weighted_mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    sample_weights: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mean squared error with optional per-sample weights ``[B]`` and a mask ``[B, 1, h, w]`` (1 learns, 0
    is ignored). The mask's mean over the batch divides the sum, so the loss is the mean error over what is
    learned, and an all-ones mask (or none) gives exactly ``mse_loss(pred, target)``."""
    error = (pred.float() - target.float()) ** 2
    if sample_weights is not None:
        error = error * sample_weights.float().view(-1, *([1] * (error.ndim - 1)))
    if mask is None:
        return error.mean()
    full = mask.float().expand_as(error)
    # An image whose mask is all black contributes nothing; a batch of only those has no loss at all.
    return (error * full).mean() / full.mean().clamp(min=1e-12)


def vocabulary_norm(table: torch.Tensor) -> float:
    """The mean L2 norm of a token-embedding table's rows: the size a word's vector usually has."""
    return float(table.detach().float().norm(dim=1).mean())


def keep_norm(rows: Sequence[torch.Tensor], targets: Sequence[float]) -> None:
    """Rescale every row of each trainable ``[n, d]`` parameter to its encoder's target norm, in place."""
    import torch

    with torch.no_grad():
        for new, target in zip(rows, targets, strict=True):
            norms = new.norm(dim=1, keepdim=True).clamp(min=1e-12)
            new.mul_(target / norms)


def norm_penalty(rows: Sequence[torch.Tensor], targets: Sequence[float], weight: float) -> torch.Tensor:
    """``weight`` times the sum over encoders of the rows' mean ``(||v|| - target)^2``."""
    return weight * sum(
        ((new.norm(dim=1) - target) ** 2).mean() for new, target in zip(rows, targets, strict=True)
    )
