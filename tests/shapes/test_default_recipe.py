"""The default recipe holds to its measured figures: a held-out concept of builtin:scenes, trained with the
recipe's own settings (only the model's size and precision given), is recognised and still editable.

The bars are the learning benchmark's figures for this recipe (docs/quality.md) less a margin for the
sampling noise of one concept and one seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinv_cli.project.recipes import TINV
from tinv_cli.shapes.concepts import TEST, score, write_images

# docs/quality.md, the default recipe (the paper's with early stopping) on this concept, seeds 0, 1 and 2:
# reconstruction 100 % each, editability 100, 100 and 96 %, stopped after 450, 500 and 900 of 3,000 steps, as
# the benchmark runs it (one batch of 4). Run as the recipe is written (1 x 4 accumulated, the same update to
# rounding), rounding, the thread count and the machine move where a flat validation loss is lowest, so the
# bars leave room, the steps' at half the paper's.
RECONSTRUCTION_BAR = 0.80
EDITABILITY_BAR = 0.70
STEPS_BAR = 1500


@pytest.mark.slow
def test_the_default_recipe_learns_a_held_out_scenes_concept(tmp_path: Path) -> None:
    import torch

    from tinv_cli.models import loading, refs
    from tinv_cli.project.load import load_project
    from tinv_cli.registry.store import Registry
    from tinv_cli.sampling import loader
    from tinv_cli.shapes.judge import load_judge
    from tinv_cli.training.recipe import train
    from tinv_cli.training.request import TrainRequest

    spec = TEST[0]
    write_images(spec, tmp_path / "images", 5)
    (tmp_path / "concepts.toml").write_text(
        '[model]\nbase = "builtin:scenes"\n\n'
        '[train]\nresolution = 32\nmixed_precision = "no"\ncheckpoint_every = 0\n\n'
        f'[concepts.{spec.name}]\nimages = "images"\ninitializer = "{spec.initializer}"\nkind = "{spec.kind}"\n'
    )
    project = load_project(tmp_path / "concepts.toml")
    assert project.concepts[spec.name].train.steps == TINV["steps"]  # the recipe's, not the test's
    summary = train(TrainRequest(project=project, concept=spec.name))
    entry = Registry().get(summary.entry)
    embedding = entry.embedding()
    early = entry.info["training"]["early_stop"]
    assert early["stopped_early"] and early["history"][-1][0] <= STEPS_BAR, early
    folder = refs.check_model_ref("builtin:scenes")
    assert folder is not None
    pipe = loader.use_tinv_expansion(
        loading.load_pipeline("builtin:scenes", torch_dtype=torch.float32, device="cpu")
    )
    scores = score(pipe, load_judge(folder / "judge"), spec, embedding, 0)
    assert scores["reconstruction"] >= RECONSTRUCTION_BAR, scores
    assert scores["editability"] >= EDITABILITY_BAR, scores
