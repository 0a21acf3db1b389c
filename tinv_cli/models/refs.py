"""What names a base model: a ``builtin:NAME`` shipped with tinv, a local diffusers folder, a single-file
checkpoint (``single_file.py``), or a Hub id."""

from __future__ import annotations

from pathlib import Path

from tinv_cli.errors import ModelError, NotFoundError

MODEL_INDEX = "model_index.json"

_LOCAL_HINT = "or pass a local diffusers folder with --model"


BUILTIN_PREFIX = "builtin:"
# Models that ship inside tinv, by name: the folder (diffusers layout) under the tinv_cli package.
BUILTIN_MODELS = {"shapes": Path("shapes") / "model", "scenes": Path("shapes") / "scenes_model"}


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
    folder = Path(__file__).resolve().parent.parent / BUILTIN_MODELS[name]
    if not (folder / MODEL_INDEX).is_file():
        raise NotFoundError(
            f"the weights of {base} are missing from this installation ({folder})",
            f"reinstall tinv, or rebuild them with `python -m tinv_cli.shapes.build --world {name} --out "
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


def looks_like_path(base: str) -> bool:
    """True for text that can only mean a folder: ``./x``, ``../x``, ``/x``, ``~/x``, ``C:\\x`` or ``a/b/c``."""
    return (
        base.startswith((".", "/", "~", "\\"))
        or (len(base) > 1 and base[1] == ":")
        or base.count("/") > 1
        or "\\" in base
    )


def check_model_ref(base: str, *, config: str | None = None, prediction: str = "auto") -> Path | None:
    """The local folder ``base`` names (for a single-file checkpoint: its config folder), or None for a valid
    Hub id; ModelError for anything else. A checkpoint is opened here (its header only), so a file that is not
    a base model tinv knows is refused before any weights load."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    from tinv_cli.models.single_file import looks_like_checkpoint, open_single_file, single_file_path

    checkpoint = single_file_path(base)
    if checkpoint is not None:
        return open_single_file(checkpoint, config=config, prediction=prediction).config
    if looks_like_checkpoint(base) and not Path(base).expanduser().is_dir():
        raise NotFoundError(f"checkpoint file {base} does not exist", "check the path given as the model")
    folder = _local_folder(base)
    if folder is not None:
        if not (folder / MODEL_INDEX).is_file():
            raise ModelError(
                f"{folder} is not a diffusers pipeline folder (it has no {MODEL_INDEX})",
                "pass a folder written by save_pretrained (model_index.json, unet/, vae/, text_encoder/, ...) "
                "or a Hub id such as stable-diffusion-v1-5/stable-diffusion-v1-5",
            )
        return folder
    if looks_like_path(base):
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
    """A short name for a model in image metadata: the Hub id, a local folder's name, or a checkpoint's stem
    (as A1111 names its "Model")."""
    if base.startswith(BUILTIN_PREFIX):
        return base
    folder = _local_folder(base)
    if folder is None and Path(base).expanduser().is_file():
        return Path(base).expanduser().stem
    return folder.resolve().name if folder is not None else base
