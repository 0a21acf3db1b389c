"""Loading a base model's diffusers pipeline, and choosing the device and dtype it runs in.

A Hub id is loaded through huggingface_hub, so ``HF_HUB_OFFLINE``, ``HF_TOKEN``, ``HF_ENDPOINT`` and the HF cache
work as they do everywhere else. What can go wrong on the way (offline and not cached, a gated licence not yet
accepted, a private or misspelled id, no network) becomes one ``ModelError`` that says what to do next, instead
of the long chained traceback diffusers produces.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import TYPE_CHECKING, Any

from tinv_cli.errors import ModelError

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline
from tinv_cli.hub.errors import model_downloads
from tinv_cli.models.configs import _fetch_model_index, _read_json
from tinv_cli.models.refs import MODEL_INDEX, check_model_ref
from tinv_cli.models.single_file import SingleFile, open_single_file, single_file_path

DTYPES = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")


def _quiet_libraries() -> None:
    """Keep diffusers' and transformers' loading bars and notices (e.g. that torchvision is missing, which
    tinv never needs) off the terminal: tinv reports its own progress. ``TINV_DEBUG=1`` leaves them on."""
    if os.environ.get("TINV_DEBUG") == "1":
        return
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def load_pipeline(
    base: str,
    *,
    revision: str | None = None,
    torch_dtype: torch.dtype | None = None,
    device: str | None = None,
    config: str | None = None,
    prediction: str = "auto",
) -> DiffusionPipeline:
    """Load the diffusers pipeline ``base`` (a local folder, a single-file checkpoint or a Hub id) with its own
    pipeline class. ``config`` and ``prediction`` say how a checkpoint is read (``single_file.py``).

    SD pipelines come without their safety checker: tinv samples concept images, and the checker's weights
    would cost a download and a gigabyte of memory. ``device`` None leaves the pipeline on the CPU (for
    callers that enable CPU offload).
    """
    from diffusers import DiffusionPipeline

    checkpoint = single_file_path(base)
    if checkpoint is not None:
        found: Any = _load_single_file(
            open_single_file(checkpoint, config=config, prediction=prediction), torch_dtype
        )
        if device is not None:
            found.to(device)
        return found
    folder = check_model_ref(base)
    index = _read_json(folder / MODEL_INDEX) if folder is not None else _fetch_model_index(base, revision)
    if index is None:
        raise ModelError(f"{base}: {MODEL_INDEX} is not a JSON object", "is this a diffusers pipeline?")
    kwargs: dict[str, Any] = {}
    if "safety_checker" in index:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if torch_dtype is not None:
        kwargs["torch_dtype"] = torch_dtype
    source = str(folder) if folder is not None else base
    _quiet_libraries()
    # A local folder keeps diffusers' own errors: nothing is downloaded, so there is no Hub problem to explain.
    downloads = model_downloads(base, revision) if folder is None else contextlib.nullcontext()
    with downloads, warnings.catch_warnings():
        # diffusers >= 0.36 renames torch_dtype to dtype; the old name works in every version tinv supports.
        warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
        pipe = DiffusionPipeline.from_pretrained(
            source, revision=None if folder is not None else revision, **kwargs
        )
    pipe.set_progress_bar_config(disable=True)
    if device is not None:
        pipe.to(device)
    return pipe


def _load_single_file(checkpoint: SingleFile, torch_dtype: torch.dtype | None) -> DiffusionPipeline:
    """diffusers' own ``from_single_file`` over the checkpoint's config folder, offline: every config and
    tokenizer comes from that folder, the weights from the file."""
    import diffusers

    index = _read_json(checkpoint.config / MODEL_INDEX) or {}
    pipeline_class = getattr(diffusers, str(index.get("_class_name")), None)
    if pipeline_class is None or not hasattr(pipeline_class, "from_single_file"):
        raise ModelError(
            f"{checkpoint.config}: pipeline class {index.get('_class_name')!r} cannot load a single file",
            "use a Stable Diffusion 1.x, 2.x or SDXL configuration folder",
        )
    kwargs: dict[str, Any] = {}
    for name in ("safety_checker", "feature_extractor", "image_encoder"):
        if name in index:  # not in an SD checkpoint; an explicit None keeps diffusers from looking for them
            kwargs[name] = None
    if "safety_checker" in index:
        kwargs["requires_safety_checker"] = False
    if torch_dtype is not None:
        kwargs["torch_dtype"] = torch_dtype
    _quiet_libraries()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
        try:
            pipe = pipeline_class.from_single_file(
                str(checkpoint.path), config=str(checkpoint.config), local_files_only=True, **kwargs
            )
        except (ValueError, KeyError, RuntimeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelError(
                f"{checkpoint.label} does not fit its configuration {checkpoint.config.name} ({first[:200]})",
                "set [model] config (or --model-config) to a folder describing this checkpoint's architecture",
            ) from error
    if pipe.scheduler.config.get("prediction_type") != checkpoint.prediction:
        # The weights cannot say what they predict; single_file.py decided, and the scheduler follows.
        pipe.scheduler = type(pipe.scheduler).from_config(
            pipe.scheduler.config, prediction_type=checkpoint.prediction
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pick_device(name: str = "auto") -> str:
    """``auto``: CUDA if available, else Apple's MPS, else the CPU. A named device must be usable."""
    import torch

    if name not in DEVICES:
        raise ModelError(f"unknown device {name!r}", f"choose one of: {', '.join(DEVICES)}")
    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    if name == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ModelError(f"device {name} is not available on this machine", "use --device auto or cpu")
    return name


def pick_dtype(name: str, device: str) -> torch.dtype:
    """``auto``: fp16 on CUDA (half the memory, same images to the eye), fp32 elsewhere (CPUs are slow or
    inexact at half precision)."""
    import torch

    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name == "auto":
        return torch.float16 if device == "cuda" else torch.float32
    if name not in table:
        raise ModelError(f"unknown dtype {name!r}", f"choose one of: {', '.join(DTYPES)}")
    return table[name]
