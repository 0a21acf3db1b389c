"""Masked loss data: mask files are not training images, a mask follows its image's crop, resize and flip, and a
short run trains with every loss option on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import Recorder, make_project
from tinv_cli.images import list_images
from tinv_cli.project.load import load_project
from tinv_cli.registry.store import Registry
from tinv_cli.training.data import fingerprint, load_training_set
from tinv_cli.training.recipe import train
from tinv_cli.training.request import TrainRequest
from tinv_cli.training.trainable import latent_mask


def _image(path: Path, size: tuple[int, int] = (48, 32), mode: str = "RGB") -> None:
    rng = np.random.default_rng(1)
    channels = 4 if mode == "RGBA" else 3
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8), mode=mode).save(path)


def _left_white(path: Path, size: tuple[int, int] = (48, 32)) -> None:
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    mask[:, : size[0] // 2] = 255
    Image.fromarray(mask, mode="L").save(path)


def test_mask_files_are_not_training_images(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    _left_white(tmp_path / "a.mask.png")
    assert [p.name for p in list_images(tmp_path)] == ["a.png"]


def test_a_mask_follows_its_image_crop_resize_and_flip(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    _left_white(tmp_path / "a.mask.png")
    alpha = np.zeros((32, 48, 4), dtype=np.uint8)
    alpha[..., 3] = 255
    alpha[:16, :, 3] = 0  # the top half transparent: ignored
    Image.fromarray(alpha, mode="RGBA").save(tmp_path / "b.png")
    _image(tmp_path / "c.png")  # no mask: all of it learns

    plain = load_training_set(tmp_path, resolution=16, center_crop=False)
    assert plain.masks is None
    squeezed = load_training_set(tmp_path, resolution=16, center_crop=False, masks=True)
    masks = squeezed.masks
    assert masks is not None and masks.shape == (3, 1, 16, 16)
    # Resized bicubically as the image is: white and black away from the edge, which is blurred between.
    assert bool((masks[0, 0, :, :6] == 1).all()) and bool((masks[0, 0, :, 10:] == 0).all())
    assert bool((masks[1, 0, :6] == 0).all()) and bool((masks[1, 0, 10:] == 1).all())
    assert torch.equal(masks[2], torch.ones(1, 16, 16))

    # The centre crop of a 48x32 image is x 8..40: the mask's white left half covers 8..24 of it, half.
    cropped = load_training_set(tmp_path, resolution=16, center_crop=True, masks=True).masks
    assert cropped is not None
    assert bool((cropped[0, 0, :, :6] == 1).all()) and bool((cropped[0, 0, :, 10:] == 0).all())
    assert not torch.equal(cropped[0], masks[0])

    sharp = torch.zeros(1, 1, 16, 16)
    sharp[..., :8] = 1
    small = latent_mask(sharp, (4, 4), torch.device("cpu"))
    assert small is not None and small.shape == (1, 2, 1, 4, 4)
    assert torch.equal(small[0, 0, 0, :, :2], torch.ones(4, 2)) and torch.equal(
        small[0, 0, 0, :, 2:], torch.zeros(4, 2)
    )
    assert torch.equal(small[0, 1], torch.flip(small[0, 0], dims=[-1]))  # the mirror's mask is mirrored


def test_a_mask_changes_the_fingerprint(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    before = fingerprint(list_images(tmp_path))
    _left_white(tmp_path / "a.mask.png")
    assert fingerprint(list_images(tmp_path)) != before


def test_a_mask_of_another_size_is_refused(tmp_path: Path) -> None:
    from tinv_cli.errors import DataError

    _image(tmp_path / "a.png")
    _left_white(tmp_path / "a.mask.png", size=(20, 20))
    with pytest.raises(DataError, match="the mask is 20x20 but its image is 48x32"):
        load_training_set(tmp_path, resolution=16, center_crop=False, masks=True)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["keep", "regularise"])
def test_a_run_with_every_loss_option(tmp_path: Path, tiny_model_dir: Path, norm: str) -> None:
    settings = {"steps": 3, "min_snr_gamma": 5.0, "masked_loss": True, "norm": norm, "learning_rate": 5e-2}
    project = make_project(tmp_path, tiny_model_dir, train=settings, concept={"init": "encoder"})
    _left_white(tmp_path / "images" / "0.mask.png", size=(48, 40))
    summary = train(TrainRequest(load_project(project), "cat-toy"), Recorder())
    entry = Registry().get(summary.entry)
    assert entry.info["training"]["init"] == "encoder"
    assert summary.final_loss is not None and np.isfinite(summary.final_loss)
    if norm == "keep":
        from tests.tiny import build_tiny_pipeline

        table = build_tiny_pipeline().text_encoder.get_input_embeddings().weight
        target = float(table.detach().norm(dim=1).mean())
        torch.testing.assert_close(entry.embedding().vectors[0].norm(dim=1), torch.full((1,), target))
