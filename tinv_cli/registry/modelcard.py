"""The README.md of a registry entry: a Hugging Face model card with YAML front matter.

The card is written when an entry is added and uploaded as-is by ``tinv push``, so it has to read well on the
Hub (front matter the Hub indexes: license, base model, tags) and tell a reader how to use the concept both with
tinv and with plain diffusers. Pure string work: no yaml library, every value quoted when it needs to be.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from tinv_cli import families
from tinv_cli.errors import ModelError
from tinv_cli.families.base import Encoder
from tinv_cli.formats.layout import IMAGES_DIR, SAFE_NAME

# A Hub model id (owner/name). Local folders are "known" to tinv but mean nothing to the Hub, whose metadata
# check flags a base_model that is not a repository, so only ids like this go into the front matter.
_HUB_ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*\Z")

# Scalars YAML reads back as the same string when written bare; anything else is double-quoted. Starting with
# a letter rules out numbers, dates and versions ("1.5", "2024-01-01"), which YAML would turn into other types.
_PLAIN_RE = re.compile(r"\A[A-Za-z][A-Za-z0-9._/-]*\Z")
_YAML_SPECIAL = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}

_DEFAULT_TAG = "stable-diffusion"


def yaml_scalar(value: str) -> str:
    """``value`` as a YAML scalar that reads back as the same string.

    A JSON string is a valid YAML double-quoted scalar, so quoting goes through ``json.dumps``.
    """
    if _PLAIN_RE.match(value) and value.lower() not in _YAML_SPECIAL:
        return value
    return json.dumps(value)


def _code(text: str) -> str:
    """Inline markdown code; a token is always shown this way because ``<cat-toy>`` would vanish as HTML."""
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}" if fence == "`" else f"{fence} {text} {fence}"


def _hub_id(value: Any) -> str | None:
    return value if isinstance(value, str) and _HUB_ID_RE.match(value) else None


def _front_matter(info: Mapping[str, Any]) -> list[str]:
    lines = ["---", f"license: {yaml_scalar(str(info.get('license') or 'mit'))}"]
    base = _hub_id(info.get("base_model"))
    if base:
        lines.append(f"base_model: {yaml_scalar(base)}")
    known = families.variant_by_id(info.get("family"))
    family_tag = known.hub_tag if known else _DEFAULT_TAG
    lines.append("tags:")
    lines.extend(f"- {tag}" for tag in ("textual_inversion", family_tag, "tinv"))
    lines.extend(["library_name: diffusers", "---"])
    return lines


def _describe(info: Mapping[str, Any]) -> str:
    token = str(info.get("token") or "")
    kind = "a style" if info.get("kind") == "style" else "an object"
    vectors = info.get("vectors")
    count = f"{vectors} vector{'s' if vectors != 1 else ''}" if isinstance(vectors, int) else "its vectors"
    widths = [w for w in info.get("widths") or () if isinstance(w, int)]
    known = families.variant_by_id(info.get("family"))
    family = known.title if known else None
    if len(widths) > 1:
        width_text = f"for {' + '.join(str(w) for w in widths)}-wide text encoders"
    elif widths:
        width_text = f"for a {widths[0]}-wide text encoder"
    else:
        width_text = ""
    model_text = f" ({family})" if family else ""
    learned = " ".join(part for part in (count, width_text) if part)
    return f"{_code(token)} is a textual inversion concept: {kind}, learned as {learned}{model_text}."


def _provenance(info: Mapping[str, Any]) -> str | None:
    source: Mapping[str, Any] = info["source"] if isinstance(info.get("source"), Mapping) else {}
    kind = source.get("type")
    base = info.get("base_model")
    if kind == "trained":
        return f"Trained with tinv on {_code(str(base))}." if base else "Trained with tinv."
    if kind == "imported":
        fmt = source.get("format")
        return f"Imported from a {fmt} embedding file." if fmt else "Imported from an embedding file."
    if kind == "pulled":
        # source.repo is where it came from; hub.repo becomes the push target when a pulled concept is re-shared.
        hub: Mapping[str, Any] = info["hub"] if isinstance(info.get("hub"), Mapping) else {}
        repo = source.get("repo") or hub.get("repo")
        return f"Pulled from the Hugging Face Hub repository {_code(str(repo))}." if repo else None
    return None


def _example_prompt(token: str, kind: Any) -> str:
    if kind == "style":
        return f"a castle on a hill in the style of {token}"
    return f"a {token} on a beach"


def _tinv_usage(info: Mapping[str, Any], repo: str | None, prompt: str) -> list[str]:
    lines = ["## Use it with tinv", "", "```bash"]
    if repo:
        lines.append(f"tinv pull {shlex.quote(repo)}")
    lines.append(f"tinv sample {shlex.quote(prompt)}")
    lines.append("```")
    if not repo and info.get("name") and info.get("version"):
        ref = f"{info.get('name')}@{info.get('version')}"
        lines += ["", f"In the local tinv registry this is {_code(ref)}."]
    return lines


def _diffusers_usage(info: Mapping[str, Any], repo: str | None, prompt: str) -> list[str]:
    known = families.variant_by_id(info.get("family"))
    base = _hub_id(info.get("base_model")) or (known.example_base if known else None) or "<a base model>"
    keys = _file_keys(info)
    where = repo or "path/to/this/folder"
    imports = ["import torch", "from diffusers import AutoPipelineForText2Image"]
    body = [
        f"pipe = AutoPipelineForText2Image.from_pretrained({json.dumps(base)}, torch_dtype=torch.float16)",
        'pipe = pipe.to("cuda")',
    ]
    if keys is not None:
        # load_textual_inversion takes one text encoder at a time; the file holds a tensor for each, by key.
        token = json.dumps(str(info.get("token")))
        if repo:
            imports.append("from huggingface_hub import hf_hub_download")
            source = f"hf_hub_download({json.dumps(repo)}, {json.dumps(SAFE_NAME)})"
        else:
            source = json.dumps(f"{where}/{SAFE_NAME}")
        imports.append("from safetensors.torch import load_file")
        body.append(f"state_dict = load_file({source})")
        body += [
            f"pipe.load_textual_inversion(state_dict[{json.dumps(key)}], token={token}, "
            f"text_encoder=pipe.{encoder.text_encoder}, tokenizer=pipe.{encoder.tokenizer})"
            for key, encoder in keys
        ]
    else:
        body.append(f"pipe.load_textual_inversion({json.dumps(where)})")
    body.append(f"image = pipe({json.dumps(prompt)}).images[0]")
    return ["## Use it with diffusers", "", "```python", *imports, "", *body, "```"]


def _file_keys(info: Mapping[str, Any]) -> list[tuple[str, Encoder]] | None:
    """(file key, encoder) of each text encoder when the entry's family keys its files (SDXL), else None."""
    widths = info.get("widths")
    if not isinstance(widths, list) or not widths:
        return None
    known = families.variant_by_id(info.get("family"))
    try:
        family = families.for_widths(known.widths if known else widths)
    except ModelError:  # no family has that many text encoders: the card shows the one-file snippet
        return None
    keys = families.file_keys(family)
    return None if keys is None else list(zip(keys, family.encoders, strict=True))


def _cell(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, tuple, bool)) or value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _training_rows(training: Mapping[str, Any], prefix: str = "") -> list[str]:
    rows = []
    for key, value in training.items():
        if isinstance(value, Mapping):
            rows += _training_rows(value, f"{prefix}{key}.")
        else:
            rows.append(f"| {_cell(prefix + str(key))} | {_cell(value)} |")
    return rows


def _image_lines(images: Sequence[str]) -> list[str]:
    lines = ["## Images", ""]
    for image in images:
        path = PurePosixPath(image)
        if path.parts[:1] != (IMAGES_DIR,):
            path = PurePosixPath(IMAGES_DIR, image)
        alt = re.sub(r"[\[\]\\]", "", path.stem)
        lines.append(f"![{alt}]({quote(path.as_posix())})")
    return lines


def model_card(info: Mapping[str, Any], images: Sequence[str] = ()) -> str:
    """A README.md for a registry entry described by its ``tinv.json`` ``info``.

    ``images`` are paths relative to the entry folder (``concept_images/0.png``); bare file names are taken to
    be in ``concept_images/``. ``info["hub"]["repo"]``, when set, is what the usage snippets load from.
    """
    token = str(info.get("token") or "")
    hub: Mapping[str, Any] = info["hub"] if isinstance(info.get("hub"), Mapping) else {}
    repo = hub.get("repo") if isinstance(hub.get("repo"), str) else None
    prompt = _example_prompt(token, info.get("kind"))
    title = info.get("name") or token

    lines = _front_matter(info)
    lines += ["", f"# {_code(str(title))}" if title == token else f"# {title}", "", _describe(info)]
    provenance = _provenance(info)
    if provenance:
        lines += ["", provenance]
    lines += ["", *_tinv_usage(info, repo, prompt), "", *_diffusers_usage(info, repo, prompt)]
    training = info.get("training")
    if isinstance(training, Mapping) and training:
        lines += [
            "",
            "## Training settings",
            "",
            "| setting | value |",
            "|---|---|",
            *_training_rows(training),
        ]
    if images:
        lines += ["", *_image_lines(images)]
    return "\n".join(lines) + "\n"
