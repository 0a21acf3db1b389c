"""Base models: finding a diffusers pipeline (a local folder or a Hub id), reading its shape, loading it.

A Hub id is loaded through huggingface_hub, so ``HF_HUB_OFFLINE``, ``HF_TOKEN``, ``HF_ENDPOINT`` and the HF cache
work as they do everywhere else. What can go wrong on the way (offline and not cached, a gated licence not yet
accepted, a private or misspelled id, no network) becomes one ``ModelError`` that says what to do next, instead
of the long chained traceback diffusers produces.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli.errors import ModelError, NotFoundError

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

MODEL_INDEX = "model_index.json"
# Pipeline components that hold a CLIP text encoder whose embedding table a concept extends, in pipeline order.
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
DTYPES = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")

_LOCAL_HINT = "or pass a local diffusers folder with --model"


BUILTIN_PREFIX = "builtin:"
# Models that ship inside tinv, by name: the folder (diffusers layout) under the tinv_cli package.
BUILTIN_MODELS = {"shapes": Path("shapes") / "model"}


def builtin_folder(base: str) -> Path | None:
    """The shipped folder that a ``builtin:NAME`` model id names, or None for any other model reference.

    The one place ``builtin:`` ids are resolved: every loader reaches it through ``_local_folder``, so a
    built-in model works wherever a local folder does."""
    if not base.startswith(BUILTIN_PREFIX):
        return None
    name = base[len(BUILTIN_PREFIX) :]
    if name not in BUILTIN_MODELS:
        raise NotFoundError(
            f"no built-in model {name!r}",
            f"built-in models: {', '.join(BUILTIN_PREFIX + known for known in BUILTIN_MODELS)}",
        )
    folder = Path(__file__).resolve().parent / BUILTIN_MODELS[name]
    if not (folder / MODEL_INDEX).is_file():
        raise NotFoundError(
            f"the weights of {base} are missing from this installation ({folder})",
            "reinstall tinv, or rebuild them with `python -m tinv_cli.shapes.build --out "
            + str(folder)
            + "`",
        )
    return folder


def _local_folder(base: str) -> Path | None:
    builtin = builtin_folder(base)
    if builtin is not None:
        return builtin
    folder = Path(base).expanduser()
    return folder if folder.is_dir() else None


def _looks_like_path(base: str) -> bool:
    """True for text that can only mean a folder: ``./x``, ``../x``, ``/x``, ``~/x``, ``C:\\x`` or ``a/b/c``."""
    return (
        base.startswith((".", "/", "~", "\\"))
        or (len(base) > 1 and base[1] == ":")
        or base.count("/") > 1
        or "\\" in base
    )


def check_model_ref(base: str) -> Path | None:
    """The local folder ``base`` names, or None for a valid Hub id; ModelError for anything else."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    folder = _local_folder(base)
    if folder is not None:
        if not (folder / MODEL_INDEX).is_file():
            raise ModelError(
                f"{folder} is not a diffusers pipeline folder (it has no {MODEL_INDEX})",
                "pass a folder written by save_pretrained (model_index.json, unet/, vae/, text_encoder/, ...) "
                "or a Hub id such as stable-diffusion-v1-5/stable-diffusion-v1-5",
            )
        return folder
    if _looks_like_path(base):
        raise NotFoundError(f"model folder {base} does not exist", "check the path given to --model")
    try:
        validate_repo_id(base)
    except HFValidationError:
        raise ModelError(
            f"{base!r} is neither a folder nor a Hugging Face Hub model id",
            "pass a Hub id such as stable-diffusion-v1-5/stable-diffusion-v1-5, or a local diffusers folder",
        ) from None
    return None


def model_label(base: str) -> str:
    """A short name for a model in image metadata: the Hub id, or a local folder's name."""
    if base.startswith(BUILTIN_PREFIX):
        return base
    folder = _local_folder(base)
    return folder.resolve().name if folder is not None else base


def _cached_file(base: str, filename: str, revision: str | None, cache_dir: Path | None) -> Path | None:
    """``filename`` from a local model folder or the HF cache, without touching the network; None if absent."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    folder = _local_folder(base)
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
    base: str, revision: str | None = None, *, cache_dir: Path | None = None
) -> dict[str, Any] | None:
    """The pipeline's ``model_index.json`` if it is on this machine (local folder or HF cache), else None."""
    return _read_json(_cached_file(base, MODEL_INDEX, revision, cache_dir))


def _present(index: dict[str, Any], component: str) -> bool:
    # model_index.json lists a component as [library, class]; [null, null] means the slot is empty.
    value = index.get(component)
    return isinstance(value, list) and len(value) == 2 and value[0] is not None


def model_widths_from_config(
    base: str, revision: str | None = None, *, cache_dir: Path | None = None
) -> tuple[int, ...] | None:
    """The hidden sizes of the model's text encoders, in pipeline order, read from their ``config.json`` files
    without loading any weights. None when that cannot be known yet (not downloaded, unusual layout)."""
    index = model_index(base, revision, cache_dir=cache_dir)
    if index is None:
        return None
    widths = []
    for component in TEXT_ENCODERS:
        if not _present(index, component):
            continue
        config = _read_json(_cached_file(base, f"{component}/config.json", revision, cache_dir))
        if config is None:
            return None
        # A CLIPTextConfig keeps hidden_size at the top; a full CLIPConfig nests it under text_config.
        text_config = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
        width = text_config.get("hidden_size")
        if not isinstance(width, int):
            return None
        widths.append(width)
    return tuple(widths) or None


def _hub_error(base: str, revision: str | None, exc: BaseException) -> ModelError | None:
    """The ModelError that explains a failed Hub download, or None when ``exc`` is not a Hub/cache problem."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # diffusers wraps the Hub's error in its own OSError (sometimes twice); the cause says what happened.
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__

    def first(kind: type[BaseException]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, kind)), None)

    page = f"https://huggingface.co/{base}"
    if first(GatedRepoError):
        return ModelError(
            f"{base} is a gated model and this Hugging Face account has not been granted access",
            f"accept the licence on {page} while logged in, then run `hf auth login` (or set HF_TOKEN)",
        )
    if first(RevisionNotFoundError):
        return ModelError(
            f"{base} has no revision {revision!r}", f"check the revision against {page}/tree/main"
        )
    if first(RepositoryNotFoundError):
        return ModelError(
            f"no model {base!r} on the Hugging Face Hub (or it is private and this account cannot see it)",
            f"check the id; for a private model run `hf auth login`; {_LOCAL_HINT}",
        )
    if first(OfflineModeIsEnabled) or (first(LocalEntryNotFoundError) and _offline()):
        return ModelError(
            f"{base} is not in the Hugging Face cache and HF_HUB_OFFLINE is set, so it cannot be downloaded",
            f"unset HF_HUB_OFFLINE to download it once (it is cached afterwards), {_LOCAL_HINT}",
        )
    http = first(HfHubHTTPError)
    if isinstance(http, HfHubHTTPError) and http.response is not None:
        status = http.response.status_code
        if status in (401, 403):
            return ModelError(
                f"the Hugging Face Hub refused access to {base} (HTTP {status})",
                f"run `hf auth login` with a token that can read it, and accept its licence on {page}",
            )
        return ModelError(f"the Hugging Face Hub answered HTTP {status} for {base}", "try again later")
    # Without network, huggingface_hub falls back to the cache and raises LocalEntryNotFoundError when the file is
    # not there, whichever HTTP library (httpx, httpx2, requests) reported the failure underneath.
    if first(LocalEntryNotFoundError) or first(ConnectionError) or first(TimeoutError):
        return ModelError(
            f"could not reach the Hugging Face Hub to download {base}, and it is not in the cache",
            f"check the network connection (and HF_ENDPOINT if set), {_LOCAL_HINT}",
        )
    return None


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _fetch_model_index(base: str, revision: str | None) -> dict[str, Any] | None:
    """``model_index.json`` of a Hub model, from the cache or downloaded (one small file)."""
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(base, MODEL_INDEX, revision=revision)
    except OSError as exc:  # every Hub and cache failure is an OSError subclass (HfHubHTTPError included)
        error = _hub_error(base, revision, exc)
        if error is None:
            raise
        raise error from exc
    return _read_json(Path(path))


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
) -> DiffusionPipeline:
    """Load the diffusers pipeline ``base`` (a local folder or a Hub id) with its own pipeline class.

    SD pipelines come without their safety checker: tinv samples concept images, and the checker's weights
    would cost a download and a gigabyte of memory. ``device`` None leaves the pipeline on the CPU (for
    callers that enable CPU offload).
    """
    from diffusers import DiffusionPipeline

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
    try:
        with warnings.catch_warnings():
            # diffusers >= 0.36 renames torch_dtype to dtype; the old name works in every version tinv supports.
            warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
            pipe = DiffusionPipeline.from_pretrained(
                source, revision=None if folder is not None else revision, **kwargs
            )
    except OSError as exc:
        error = _hub_error(base, revision, exc) if folder is None else None
        if error is None:
            raise
        raise error from exc
    pipe.set_progress_bar_config(disable=True)
    if device is not None:
        pipe.to(device)
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
