"""A base model's configuration files, read from a local folder or the Hugging Face cache without loading any
weights: ``model_index.json`` and the text encoders' widths. A single-file checkpoint's are those of its config
folder (``single_file``); ``config`` and ``prediction`` say how such a file is read (``[model] config`` and
``prediction``) and are ignored for folders and Hub ids."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tinv_cli import families
from tinv_cli.families.base import ModelFiles
from tinv_cli.hub.errors import model_downloads
from tinv_cli.models.refs import MODEL_INDEX, _local_folder
from tinv_cli.models.single_file import config_folder_for


def _cached_file(
    base: str,
    filename: str,
    revision: str | None,
    cache_dir: Path | None,
    config: str | None = None,
    prediction: str = "auto",
) -> Path | None:
    """``filename`` from a local model folder (a checkpoint's config folder) or the HF cache, without touching
    the network; None if absent."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    folder = _local_folder(base) or config_folder_for(base, config=config, prediction=prediction)
    if folder is not None:
        path = folder / filename
        return path if path.is_file() else None
    try:
        found = try_to_load_from_cache(
            base, filename, revision=revision, cache_dir=str(cache_dir) if cache_dir else None
        )
    except HFValidationError:
        return None
    # A str is a cached path; None means "not cached", and a sentinel object "known not to exist".
    return Path(found) if isinstance(found, str) else None


def _read_json(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def model_index(
    base: str,
    revision: str | None = None,
    *,
    cache_dir: Path | None = None,
    config: str | None = None,
    prediction: str = "auto",
) -> dict[str, Any] | None:
    """The pipeline's ``model_index.json`` if it is on this machine (local folder or HF cache), else None."""
    return _read_json(_cached_file(base, MODEL_INDEX, revision, cache_dir, config, prediction))


def model_files(
    base: str,
    revision: str | None = None,
    *,
    cache_dir: Path | None = None,
    config: str | None = None,
    prediction: str = "auto",
) -> ModelFiles | None:
    """``model_index.json`` and the ``config.json`` of each component the index lists, if they are on this machine
    (local folder or HF cache); None when the index is not."""
    index = model_index(base, revision, cache_dir=cache_dir, config=config, prediction=prediction)
    if index is None:
        return None
    configs = {
        component: _read_json(
            _cached_file(base, f"{component}/config.json", revision, cache_dir, config, prediction)
        )
        for component in index
        if not component.startswith("_")
    }
    return ModelFiles(index, configs)


def model_widths_from_config(
    base: str,
    revision: str | None = None,
    *,
    cache_dir: Path | None = None,
    config: str | None = None,
    prediction: str = "auto",
) -> tuple[int, ...] | None:
    """The hidden sizes of the model's text encoders, in its family's order, read from their ``config.json``
    files without loading any weights. None when that cannot be known yet (not downloaded, unusual layout)."""
    files = model_files(base, revision, cache_dir=cache_dir, config=config, prediction=prediction)
    family = families.for_files(files) if files is not None else None
    if files is None or family is None:
        return None
    widths = []
    for encoder in family.encoders:
        encoder_config = files.configs.get(encoder.text_encoder)
        if encoder_config is None:
            return None
        # A CLIPTextConfig keeps hidden_size at the top; a full CLIPConfig nests it under text_config.
        nested = encoder_config.get("text_config")
        text_config: Mapping[str, Any] = nested if isinstance(nested, dict) else encoder_config
        width = text_config.get("hidden_size")
        if not isinstance(width, int):
            return None
        widths.append(width)
    return tuple(widths)


def _fetch_model_index(base: str, revision: str | None) -> dict[str, Any] | None:
    """``model_index.json`` of a Hub model, from the cache or downloaded (one small file)."""
    from huggingface_hub import hf_hub_download

    with model_downloads(base, revision):
        path = hf_hub_download(base, MODEL_INDEX, revision=revision)
    return _read_json(Path(path))
