"""Recipes: the values of the training settings a project file leaves out.

``[train] recipe`` (or ``--recipe``) picks one; a setting given anywhere (``[train]``, a concept's own
``[concepts.NAME.train]`` or the command line) always wins over it. Both recipes set the same keys, so
switching recipe changes every setting that was not given, and nothing else.

- ``tinv``, the default: where a method goes once it learns faster with no loss of editability in
  ``benchmarks/learning.py`` (docs/quality.md) and has evidence on real models. None has yet, so today it is
  the paper's recipe.
- ``paper``: the diffusers textual inversion example's recipe (the original paper's objective), exactly:
  3,000 steps of batch 1 with 4 accumulated, learning rate 5e-4 scaled by 4, constant; plain MSE loss.
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
}
TINV: dict[str, Any] = dict(PAPER)

RECIPES: dict[str, dict[str, Any]] = {"tinv": TINV, "paper": PAPER}
