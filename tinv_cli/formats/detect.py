"""Reading every embedding file format people meet, and telling them apart.

Formats are told apart by what a file holds, not by its name, because the same suffix means different things
in different tools (a kohya ``.pt`` and an A1111 ``.pt`` differ; ``.bin`` files are sometimes safetensors).
The tensors come from ``tensors.load_tensors``, the only place tinv opens a tensor file (A1111's image
embeddings are read by ``a1111_png``). Every file read out of a folder passes ``contained``'s rule first: a
regular file really inside the folder, and under ``concept_images/`` a real image of bounded size.

``read`` reads one embedding; ``read_all`` every embedding a file holds (a LoRA may bundle several), and each
result's ``files`` say which files the read used (the second file of diffusers' SDXL pair, read with the
first), so a folder import reads each once.

Longer than 450 lines: every format's detection stays in this one module, so the order in which a file's
contents are tested (which decides its format) reads top to bottom.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli.embedding import Embedding, check_token, token_names
from tinv_cli.errors import FormatError, NotFoundError

if TYPE_CHECKING:
    import torch
from tinv_cli import families
from tinv_cli.formats import a1111_png, foreign, modelspec
from tinv_cli.formats.contained import check_image, contained, contained_folder, read_text
from tinv_cli.formats.layout import (
    BIN_NAME,
    IMAGES_DIR,
    KIND_FILE,
    KINDS,
    SAFE_NAME,
    TOKEN_FILE,
    diffusers_names,
)
from tinv_cli.formats.tensors import (
    BUNDLE_PREFIX,
    check_shapes,
    is_safetensors,
    load_tensors,
    read_head,
    safetensors_metadata,
)

_DAMAGED = "the file is damaged or not a textual inversion embedding; download or export it again"
_KNOWN_LAYOUTS = ", ".join(
    [
        "{token: tensor} (diffusers)",
        "string_to_param (A1111)",
        "emb_params (kohya)",
        "emp_params (OneTrainer)",
    ]
    + [
        f"{' + '.join(keys)} ({family.label})"
        for family in families.FAMILIES
        if (keys := families.file_keys(family)) is not None
    ]
    + [f"{' + '.join(layout.keys)} ({layout.label.split(' ')[0]})" for layout in foreign.layouts()]
    + ["A1111 .png/.webp embeddings", "bundle_emb keys in a LoRA"]
)
# OneTrainer's own SD 1.x key (sic: "emp", not kohya's "emb").
ONETRAINER_KEY = "emp_params"
# OneTrainer saves the output embeddings it can train beside the input vectors as KEY_out; other tools ignore them.
_OUTPUT_SUFFIX = "_out"
# Formats whose file holds no token: A1111 and the UIs name such an embedding after its file.
_UNNAMED = {"a1111", "kohya", "onetrainer"}


@dataclass(frozen=True)
class Imported:
    """An embedding read from a file or folder, with what the file said about itself."""

    embedding: Embedding
    format: str
    source: Path
    kind: str | None = None
    images: tuple[Path, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    # Every file the read used (the second file of diffusers' SDXL pair too): a folder import skips them.
    files: tuple[Path, ...] = ()

    @property
    def architecture(self) -> str | None:
        """What the file's ``modelspec.architecture`` says it was made for, if it says."""
        spec = self.meta.get("modelspec") or {}
        return spec.get("architecture")


# Detecting a format in a dict of tensors


@dataclass(frozen=True)
class _Found:
    format: str
    token: str
    vectors: tuple[Any, ...]
    meta: dict[str, Any]


def _detect(data: dict[str, Any], path: Path, stem: str | None = None) -> _Found:
    """Which format a loaded dict is, its token (``stem``, by default the file's, where the format has none)
    and its tensors."""
    import torch

    stem = stem or path.stem
    if "string_to_param" in data:
        return _detect_a1111(data, path, stem)
    # OneTrainer's trained output embeddings (KEY_out beside KEY) are not input vectors: set aside, noted.
    outputs = sorted(k for k in data if isinstance(k, str) and k.endswith(_OUTPUT_SUFFIX) and k[:-4] in data)
    noted: dict[str, Any] = {"ignored_keys": outputs} if outputs else {}
    data = {k: v for k, v in data.items() if k not in outputs}
    keys = [str(k) for k in data]
    tensor_keys = [k for k, v in data.items() if isinstance(v, torch.Tensor)]
    layout = foreign.for_keys(keys)
    if layout is not None and len(tensor_keys) == len(keys):
        return _Found(layout.id, stem, tuple(data[k] for k in layout.keys), {"layout": layout.label, **noted})
    if keys == [ONETRAINER_KEY] and tensor_keys:
        return _Found("onetrainer", stem, (data[ONETRAINER_KEY],), noted)
    keyed = families.for_file_keys(keys)
    if keyed is not None:
        # A family of several text encoders keys each encoder's vectors by name (SDXL: clip_l and clip_g).
        expected = families.file_keys(keyed) or ()
        missing = [k for k in expected if k not in data]
        if missing:
            needs = "both" if len(expected) == 2 else "all of " + ", ".join(expected)
            raise FormatError(
                f"{path} holds {_listing(keys)} but no {missing[0]}; an {keyed.label} embedding needs {needs}",
                _DAMAGED,
            )
        extra = [k for k in keys if k not in expected]
        if extra:
            raise FormatError(
                f"{path} holds {keyed.label} keys {' and '.join(expected)} plus unexpected {_listing(extra)}",
                _DAMAGED,
            )
        return _Found(keyed.id, stem, tuple(data[k] for k in expected), noted)
    if keys == ["emb_params"] and tensor_keys:
        return _Found("kohya", stem, (data["emb_params"],), {})
    if len(data) == 1 and tensor_keys:
        return _Found("diffusers", str(tensor_keys[0]), (data[tensor_keys[0]],), {})
    if len(tensor_keys) == len(data) > 1:
        split = _merge_split(data, path)
        if split is not None:
            return split
        raise FormatError(
            f"{path} holds {len(data)} embeddings for different tokens ({_listing(keys)}); "
            "tinv reads one concept per file",
            "split the file into one file per token with the tool that made it",
        )
    if not data:
        raise FormatError(f"{path} holds an empty dict; it has no embedding in it", _DAMAGED)
    raise FormatError(
        f"{path} holds keys {_listing(keys)}; not an embedding format tinv knows",
        f"tinv reads {_KNOWN_LAYOUTS}",
    )


def _detect_a1111(data: dict[str, Any], path: Path, stem: str) -> _Found:
    import torch

    params = data["string_to_param"]
    # The original textual-inversion code (and A1111 files made with it) stored the terms in an nn.ParameterDict.
    if isinstance(params, torch.nn.ParameterDict):
        params = dict(params.items())
    if not isinstance(params, dict):
        raise FormatError(
            f"{path}: string_to_param is a {type(params).__name__}, not a dict of terms", _DAMAGED
        )
    if len(params) != 1:
        raise FormatError(
            f"{path}: string_to_param holds {len(params)} terms; an A1111 embedding has exactly one",
            "split it into one file per term with A1111",
        )
    tensor = next(iter(params.values()))
    if not isinstance(tensor, torch.Tensor):
        raise FormatError(f"{path}: string_to_param holds a {type(tensor).__name__}, not a tensor", _DAMAGED)
    meta = {}
    for key in ("name", "step", "sd_checkpoint", "sd_checkpoint_name", "hash"):
        value = _json_scalar(data.get(key))
        if value is not None:
            meta[key] = value
    # A1111 names an embedding after its file, whatever the stored name says.
    return _Found("a1111", stem, (tensor,), meta)


def _merge_split(data: dict[str, Any], path: Path) -> _Found | None:
    """``{tok: [d], tok_1: [d], ...}``, one vector per key, merged into one ``[n, d]`` tensor in index order."""
    import torch

    for base in data:
        if not isinstance(base, str):
            continue
        names = token_names(base, len(data))
        if set(names) != set(data):
            continue
        rows = [data[name] for name in names]
        if any(t.ndim not in (1, 2) or (t.ndim == 2 and t.shape[0] != 1) for t in rows):
            raise FormatError(
                f"{path}: {base} is split over {len(names)} keys but they are not one vector each", _DAMAGED
            )
        widths = {t.shape[-1] for t in rows}
        if len(widths) != 1:
            raise FormatError(
                f"{path}: the vectors of {base} have different widths {sorted(widths)}", _DAMAGED
            )
        return _Found("diffusers", base, (torch.stack([t.reshape(-1) for t in rows]),), {})
    return None


def _json_scalar(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (str, int, float, bool)):
        return value
    return None


def _listing(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _embedding(token: str, vectors: Sequence[torch.Tensor], path: Path) -> Embedding:
    """Embedding's own checks, with the file named in the message."""
    try:
        return Embedding(token, tuple(vectors))
    except FormatError as e:
        if str(path) in e.message:
            raise
        raise FormatError(
            f"{path}: {e.message}", e.hint or "the file does not hold a usable embedding"
        ) from e


# Reading files and folders


def read(path: Path, token: str | None = None, *, root: Path | None = None) -> Imported:
    """Read any embedding file or concepts-library folder; ``token`` replaces the token the file gives.

    Every file read must really lie inside ``root`` (``contained``): by default the folder read, or the folder
    of the file named; a pull passes the repository's cache folder, which its snapshot's symlinks lead into.
    A LoRA that bundles several embeddings is refused here: ``read_all`` reads each.
    """
    found = read_all(path, token, root=root)
    if len(found) > 1:
        names = ", ".join(item.embedding.token for item in found)
        raise FormatError(
            f"{path} bundles {len(found)} embeddings ({names}); this reads one",
            "tinv import imports each as its own entry",
        )
    return found[0]


def read_all(path: Path, token: str | None = None, *, root: Path | None = None) -> list[Imported]:
    """Every embedding ``path`` holds, in file order: one for an embedding file or folder, one per bundled
    embedding for a LoRA (whose own weights are never read). ``token`` applies where there is one."""
    path = Path(path)
    if path.is_dir():
        return [_read_folder(path, token, root or path)]
    if path.name in (SAFE_NAME, BIN_NAME) and _is_concept_folder(path.parent):
        return [_read_folder(path.parent, token, root or path.parent, embeds=path)]
    if root is not None:
        contained(path, root)
    head = read_head(path)
    if a1111_png.is_image(path):
        return [_read_image(path, token)]
    data = load_tensors(path)
    meta: dict[str, Any] = {}
    if is_safetensors(head):
        metadata = safetensors_metadata(path)
        if metadata:
            meta["safetensors_metadata"] = metadata
        spec = modelspec.read(metadata)
        if spec:
            meta["modelspec"] = spec
    if any(isinstance(k, str) and k.startswith(BUNDLE_PREFIX) for k in data):
        return _read_bundles(data, path, token, meta)
    found = _detect(data, path)
    first = _pair_first(path, found, root or path.parent)
    if first is not None:
        return [read(first, token, root=root or path.parent)]
    vectors = found.vectors
    files: tuple[Path, ...] = (path,)
    if found.format == "diffusers" and len(found.vectors) == 1:
        later = _later_files(path, found.token, root or path.parent)
        vectors += tuple(vector for _, vector in later)
        files += tuple(file for file, _ in later)
    name = token or (found.token if found.format == "diffusers" else _spec_token(meta) or found.token)
    embedding = _embedding(name, vectors, path)
    return [Imported(embedding, found.format, path, meta={**found.meta, **meta}, files=files)]


def consumed_files(path: Path) -> tuple[Path, ...]:
    """The files reading ``path`` uses: ``path`` itself, and the partner files read with it (diffusers' SDXL
    pair: ``NAME.safetensors`` with ``NAME_2.safetensors``, from either of them)."""
    return tuple(dict.fromkeys(file for item in read_all(path) for file in item.files))


def _spec_token(meta: dict[str, Any]) -> str | None:
    """kohya's ``modelspec.trigger_phrase``, else its title, where it is a usable token (one word)."""
    spec = meta.get("modelspec") or {}
    for key in ("trigger_phrase", "title"):
        value = str(spec.get(key) or "").strip()
        if value and check_token(value) is None:
            return value
    return None


def _read_image(path: Path, token: str | None) -> Imported:
    import torch

    data, carrier = a1111_png.read(path)
    params = data.get("string_to_param")
    tensors = list(params.values()) if isinstance(params, dict) else []
    check_shapes(path, [list(t.shape) for t in tensors if isinstance(t, torch.Tensor)])
    # A1111 names an image embedding by the name its data holds, not by the image's file name.
    stored = data.get("name")
    stem = stored if isinstance(stored, str) and check_token(stored) is None else path.stem
    found = _detect_a1111(data, path, stem)
    meta = {**found.meta, "carrier": carrier}
    return Imported(
        _embedding(token or found.token, found.vectors, path), "a1111-png", path, meta=meta, files=(path,)
    )


def _read_bundles(
    data: dict[str, Any], path: Path, token: str | None, meta: dict[str, Any]
) -> list[Imported]:
    """The embeddings bundled in a LoRA: ``bundle_emb.NAME.string_to_param.*`` (A1111's layout, SD 1.x),
    ``bundle_emb.NAME.KEY`` with the family's file keys (SDXL), or the first of them alone (OneTrainer's SD 1.x
    bundles); NAME is the word prompts use."""
    bundles: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        rest = str(key)[len(BUNDLE_PREFIX) :]
        if ".string_to_param." in rest:
            name, _, term = rest.partition(".string_to_param.")
            bundles.setdefault(name, {})["string_to_param"] = {term: value}
        else:
            name, _, part = rest.rpartition(".")
            bundles.setdefault(name, {})[part] = value
    if len(bundles) > 1 and token:
        raise FormatError(
            f"{path} bundles {len(bundles)} embeddings; --token names one", "import it without --token"
        )
    single = foreign.single_encoder_key()
    found = []
    for name, keyed in bundles.items():
        if not name:
            raise FormatError(f"{path}: a bundle_emb key without an embedding name", _DAMAGED)
        if list(keyed) == [single]:
            # OneTrainer bundles an SD 1.x embedding under the CLIP ViT-L key alone.
            item = _Found("onetrainer", name, (keyed[single],), {})
        else:
            item = _detect(keyed, path, stem=name)
        embedding = _embedding(token or name, item.vectors, path)
        lora = {**meta, **item.meta, "lora_bundle": name}
        found.append(Imported(embedding, f"lora-bundle ({item.format})", path, meta=lora, files=(path,)))
    return found


def _partner_names(path: Path, count: int) -> list[str]:
    """The files of text encoders 2..count beside ``path``: diffusers' learned_embeds_2.safetensors, ... or
    NAME_2.safetensors, ... for a file renamed NAME.safetensors."""
    if path.name == SAFE_NAME:
        return diffusers_names(count)[1:]
    return [f"{path.stem}_{i}{path.suffix}" for i in range(2, count + 1)]


def _pair_first(path: Path, found: _Found, root: Path) -> Path | None:
    """For the second (third, ...) file of a diffusers pair, the first file, which is read instead."""
    import re

    match = re.fullmatch(r"(.+)_([2-9])", path.stem)
    if match is None or found.format != "diffusers" or len(found.vectors) != 1:
        return None
    first = path.with_name(match[1] + path.suffix)
    if not first.is_file():
        return None
    contained(first, root)
    other = _detect(load_tensors(first), first)
    if other.format != "diffusers" or other.token != found.token:
        return None
    return first


def _later_files(path: Path, token: str, root: Path) -> list[tuple[Path, Any]]:
    """The vectors of the second, third, ... text encoder from the partner files beside ``path`` that hold
    the same token (diffusers' SDXL example writes one file per encoder, each ``{token: [n, d]}``)."""
    later: list[tuple[Path, Any]] = []
    most = max(len(family.encoders) for family in families.FAMILIES)
    for name in _partner_names(path, most):
        partner = path.parent / name
        if not partner.is_file():
            break
        contained(partner, root)
        found = _detect(load_tensors(partner), partner)
        if found.format != "diffusers" or len(found.vectors) != 1:
            raise FormatError(
                f"{partner} should hold one text encoder's {{token: tensor}}, found {found.format} data",
                _DAMAGED,
            )
        if found.token != token and path.name != SAFE_NAME:
            break  # a file of another concept that happens to be named like a partner
        later.append((partner, found.vectors[0]))
    return later


def _is_concept_folder(folder: Path) -> bool:
    return (folder / TOKEN_FILE).is_file() or (folder / KIND_FILE).is_file() or (folder / IMAGES_DIR).is_dir()


def _read_folder(folder: Path, token: str | None, root: Path, embeds: Path | None = None) -> Imported:
    source = embeds or folder
    if embeds is None:
        # The safetensors copy is the one that cannot run code and keeps the full [n, d] shape.
        embeds = folder / SAFE_NAME if (folder / SAFE_NAME).is_file() else folder / BIN_NAME
        if not embeds.is_file():
            raise NotFoundError(
                f"{folder} has no {SAFE_NAME} or {BIN_NAME}",
                "pass a concepts-library folder or an embedding file",
            )
    contained(embeds, root)
    found = _detect(load_tensors(embeds), embeds)
    vectors = found.vectors
    fmt = "concepts-library"
    later = (
        _later_files(embeds, found.token, root)
        if embeds.name == SAFE_NAME and found.format == "diffusers"
        else []
    )
    if later:
        vectors = vectors + tuple(vector for _, vector in later)
        fmt = "diffusers"
    # Formats without a token in the file are named after the file; here the file name is generic.
    default = found.token if found.format == "diffusers" else folder.name
    # The token file is read even with --token, so a link out of the folder is refused either way.
    stored = read_text(folder / TOKEN_FILE, root)
    embedding = _embedding(token or stored or default, vectors, embeds)
    kind = (read_text(folder / KIND_FILE, root) or "").lower()
    files = (embeds, *(file for file, _ in later))
    return Imported(
        embedding, fmt, source, kind if kind in KINDS else None, _images(folder, root), found.meta, files
    )


def _images(folder: Path, root: Path) -> tuple[Path, ...]:
    """The images of ``folder/concept_images``, each checked to be a real image inside ``root``.

    The paths keep their spelling under ``folder`` (the registry copies each under its own name; a pulled
    snapshot's real files are named by their hash). Hidden files are skipped: macOS litters folders with
    ``._photo.jpg`` resource forks.
    """
    images_dir = folder / IMAGES_DIR
    if contained_folder(images_dir, root) is None:
        return ()
    images = sorted(p for p in images_dir.iterdir() if not p.name.startswith("."))
    for image in images:
        check_image(image, contained(image, root))
    return tuple(images)


def read_entry_embedding(folder: Path) -> Embedding:
    """The embedding of a concepts-library folder from its safetensors file: the registry's fast path."""
    folder = Path(folder)
    path = folder / SAFE_NAME
    if not path.is_file():
        raise NotFoundError(
            f"{path} does not exist", "the entry is incomplete; remove it and import it again"
        )
    contained(path, folder)
    found = _detect(load_tensors(path), path)
    return _embedding(read_text(folder / TOKEN_FILE, folder) or found.token, found.vectors, path)
