"""What several test files share: readers the tests check tinv's output with (which tinv itself never needs),
and a small training project with a recorder of the trainer's callbacks.

``parse_parameters`` and ``read_metadata`` read back the PNG chunks ``tinv sample`` writes, parsing the
``parameters`` text as AUTOMATIC1111's ``parse_generation_parameters`` does, so a test that round-trips through
them shows other tools read what tinv writes. ``encode_prompt`` is the text-encoder output a pipeline conditions
on for a prompt using the concepts loaded into it, to compare with diffusers' own.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from tinv_cli.errors import FormatError
from tinv_cli.sampling.loader import _expand, encoder_pairs
from tinv_cli.sampling.pngmeta import NEGATIVE_PREFIX, PARAMETERS_KEY, TINV_KEY
from tinv_cli.training.request import TrainCallbacks

if TYPE_CHECKING:
    import torch

# A1111's re_param: "Key: value" pairs, a value being a JSON string or text up to the next comma.
_PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
# The settings line is the last line and holds at least three "Key: value" pairs (A1111's own test).
_MIN_SETTINGS = 3


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return str(json.loads(text))
        except ValueError:
            return text
    return text


def parse_parameters(text: str) -> dict[str, str]:
    """Read an A1111 ``parameters`` text into ``{"Prompt": ..., "Negative prompt": ..., "Steps": "30", ...}``.

    Values stay strings, as A1111 keeps them; quoted values are unquoted.
    """
    *lines, last = text.strip().split("\n")
    if len(_PARAM_RE.findall(last)) < _MIN_SETTINGS:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    target = prompt
    for line in lines:
        # Everything from the first "Negative prompt:" line on is the negative prompt (it may span lines).
        if target is prompt and line.startswith(NEGATIVE_PREFIX):
            target = negative
            line = line[len(NEGATIVE_PREFIX) :].lstrip()
        target.append(line)
    result = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in _PARAM_RE.findall(last):
        result[key.strip()] = _unquote(value.strip())
    return result


def read_png_text(path: Path) -> dict[str, str]:
    """Every text chunk of a PNG file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()  # text chunks after the image data are read only with the pixels
            return {str(k): str(v) for k, v in getattr(image, "text", {}).items()}
    except (OSError, UnidentifiedImageError) as exc:
        raise FormatError(f"{path}: not a readable PNG ({exc})") from None


def read_metadata(path: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """The parsed ``parameters`` and ``tinv`` chunks of an image written by ``tinv sample``."""
    text = read_png_text(path)
    if PARAMETERS_KEY not in text or TINV_KEY not in text:
        raise FormatError(
            f"{path}: no generation parameters in this image", "only PNGs written by `tinv sample` carry them"
        )
    try:
        tinv = json.loads(text[TINV_KEY])
    except ValueError as exc:
        raise FormatError(f"{path}: the tinv metadata chunk is not JSON ({exc})") from None
    return parse_parameters(text[PARAMETERS_KEY]), tinv


def _loaded_counts(tokenizer: Any) -> dict[str, int]:
    """Vector counts of the tokens added to a tokenizer, read from the ``token_1, token_2, ...`` names."""
    added = set(tokenizer.added_tokens_encoder) - set(tokenizer.all_special_tokens)
    counts = {}
    for token in added:
        count = 1
        while f"{token}_{count}" in added:
            count += 1
        counts[token] = count
    return counts


def encode_prompt(pipe: Any, prompt: str) -> torch.Tensor:
    """The first text encoder's last hidden state ``[1, 77, width]`` for ``prompt``, with multi-vector tokens of
    the concepts loaded into the pipeline expanded, as the pipeline conditions on it."""
    import torch

    # The loader's own pair lookup and expansion, so a pipeline it refuses is refused here with its message.
    tokenizer, encoder = encoder_pairs(pipe)[0]
    text = _expand(prompt, _loaded_counts(tokenizer))
    inputs = tokenizer(
        text,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    mask = None
    if getattr(encoder.config, "use_attention_mask", False):
        mask = inputs.attention_mask.to(encoder.device)
    with torch.no_grad():
        return encoder(inputs.input_ids.to(encoder.device), attention_mask=mask)[0]


# A training project and the trainer's callbacks, recorded.

FAST = {"resolution": 32, "mixed_precision": "no", "gradient_accumulation": 1, "checkpoint_every": 0}


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def make_project(
    root: Path,
    model: Path,
    *,
    train: dict[str, Any] | None = None,
    concept: dict[str, Any] | None = None,
    images: int = 3,
) -> Path:
    """A concepts.toml with one concept, cat-toy, and ``images`` small random images."""
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(images):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    settings = {**FAST, **(train or {})}
    fields = {"token": "<cat-toy>", "initializer": "toy", "images": "images", **(concept or {})}
    lines = ["[model]", f"base = {_toml(str(model))}", "", "[train]"]
    lines += [f"{key} = {_toml(value)}" for key, value in settings.items()]
    lines += ["", "[concepts.cat-toy]"]
    lines += [f"{key} = {_toml(value)}" for key, value in fields.items() if value is not None]
    path = root / "concepts.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class Recorder(TrainCallbacks):
    def __init__(self, interrupt_at: int | None = None, sig: int = signal.SIGINT) -> None:
        self.steps: list[int] = []
        self.losses: dict[int, float] = {}
        self.messages: list[str] = []
        self.checkpoints: list[int] = []
        self.validations: list[Path] = []
        self.interrupt_at, self.sig = interrupt_at, sig

    def on_step(self, step: int, loss: float | None, lr: float, it_s: float | None) -> None:
        self.steps.append(step)
        if loss is not None:
            self.losses[step] = loss
        if step == self.interrupt_at:
            os.kill(os.getpid(), self.sig)  # a real signal, delivered to the handler the trainer installed

    def on_message(self, message: str) -> None:
        self.messages.append(message)

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.checkpoints.append(step)

    def on_validation(self, step: int, path: Path) -> None:
        self.validations.append(path)
