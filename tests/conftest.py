"""Shared test set-up. Every test runs with its own TINV_HOME and HF_HOME and with the Hub offline,
so no test touches a real registry or cache, or the network."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("TINV_HOME", str(state / "tinv"))
    monkeypatch.setenv("HF_HOME", str(state / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("TINV_DEBUG", raising=False)
    return state


@pytest.fixture
def tiny_pipeline() -> StableDiffusionPipeline:
    """A fresh 32-wide tiny pipeline (tests/tiny.py); each test gets its own, so mutating it is fine."""
    from tests.tiny import build_tiny_pipeline

    return build_tiny_pipeline()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``build_tiny_pipeline()`` saved once per session in diffusers layout, for code that takes a model folder
    (``--model``). Shared by every test: copy it (shutil.copytree to tmp_path) before changing anything in it."""
    from tests.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny-model") / "sd-tiny")
