"""The test-only checkpoint writer (tests/ldm_layout.py) is right: diffusers' own ``from_single_file`` reads
every tensor of the original pipeline back from the file it writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.ldm_layout import save_config_folder, write_checkpoint
from tests.tiny import build_tiny_pipeline, build_tiny_sdxl_pipeline


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl"])
def test_from_single_file_reads_back_every_tensor(tmp_path: Path, kind: str) -> None:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    pipe = build_tiny_sdxl_pipeline() if kind == "sdxl" else build_tiny_pipeline()
    checkpoint = write_checkpoint(pipe, tmp_path / "model.safetensors", open_clip=kind == "sd2")
    config = save_config_folder(pipe, tmp_path / "config")
    cls = StableDiffusionXLPipeline if kind == "sdxl" else StableDiffusionPipeline
    loaded = cls.from_single_file(str(checkpoint), config=str(config), local_files_only=True)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        original = getattr(pipe, name, None)
        if original is None:
            continue
        mine, theirs = getattr(loaded, name).state_dict(), original.state_dict()
        assert mine.keys() == theirs.keys(), name
        assert all(torch.equal(mine[key], theirs[key]) for key in mine), name
