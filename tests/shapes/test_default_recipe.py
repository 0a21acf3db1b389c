"""The default recipe holds to its measured figures: a held-out concept of builtin:scenes, trained with the
recipe's own settings (only the model's size and precision given), is recognised and still editable.

The bars are the learning benchmark's figures for this recipe (docs/quality.md) less a margin for the
sampling noise of one concept and one seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinv_cli.project.recipes import TINV
from tinv_cli.shapes.concepts import TEST, score, write_images

# docs/quality.md, the default recipe (today the paper's) on this concept, seeds 0 and 1: reconstruction 100 %
# and 81 %, editability 42 % and 58 %. The bars leave room for another machine's rounding and thread count.
RECONSTRUCTION_BAR = 0.70
EDITABILITY_BAR = 0.25


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
    embedding = Registry().get(summary.entry).embedding()
    folder = refs.check_model_ref("builtin:scenes")
    assert folder is not None
    pipe = loader.use_tinv_expansion(
        loading.load_pipeline("builtin:scenes", torch_dtype=torch.float32, device="cpu")
    )
    scores = score(pipe, load_judge(folder / "judge"), spec, embedding, 0)
    assert scores["reconstruction"] >= RECONSTRUCTION_BAR, scores
    assert scores["editability"] >= EDITABILITY_BAR, scores
