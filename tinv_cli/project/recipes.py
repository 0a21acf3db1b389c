"""Recipes: the values of the training settings a project file leaves out.

``[train] recipe`` (or ``--recipe``) picks one; a setting given anywhere (``[train]``, a concept's own
``[concepts.NAME.train]`` or the command line) always wins over it. Both recipes set the same keys, so
switching recipe changes every setting that was not given, and nothing else.

- ``tinv``, the default: the paper's recipe with early stopping on a deterministic validation loss
  (``early_stop_every = 50``, patience 3; ``training/early_stop.py``), which keeps the best vectors and ends
  the run when they stop improving. In ``benchmarks/learning.py`` (docs/quality.md) it registered the paper's
  accuracy and editability, to within the benchmark's noise, after a fifth of its steps, and DVAR (Voronov et
  al., NeurIPS 2023) measured the same on Stable Diffusion. ``steps`` stays the paper's 3,000, as the cap.
- ``paper``: the diffusers textual inversion example's recipe (the original paper's objective), exactly:
  3,000 steps of batch 1 with 4 accumulated, learning rate 5e-4 scaled by 4, constant; plain MSE loss; no
  early stopping.
"""

from __future__ import annotations

from typing import Any

PAPER: dict[str, Any] = {
    "steps": 3000,
    "batch_size": 1,
    "gradient_accumulation": 4,
    "learning_rate": 5.0e-4,
    "scale_lr": True,
    "lr_scheduler": "constant",
    "min_snr_gamma": 0.0,
    "norm": "free",
    "early_stop_every": 0,
    "early_stop_patience": 3,
}
TINV: dict[str, Any] = {**PAPER, "early_stop_every": 50}

RECIPES: dict[str, dict[str, Any]] = {"tinv": TINV, "paper": PAPER}
