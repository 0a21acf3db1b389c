"""The configuration folders tinv ships for single-file checkpoints: configs and tokenizers, no weights.

``configs_data/NAME/`` holds the small JSON files of a diffusers pipeline folder (``model_index.json``, the
scheduler's, UNet's, VAE's and text encoders' configs, the tokenizers' settings) for stable-diffusion-v1-5,
stable-diffusion-2-1 (v-prediction, 768 px), stable-diffusion-2-1-base (epsilon, 512 px) and
stable-diffusion-xl-base-1.0. Every tokenizer of these models has the same CLIP BPE vocabulary, so it ships once,
as its 48,894 merges gzip'd (``clip_merges.txt.gz``, 200 kB instead of four copies of 1.5 MB); ``vocab.json`` is
derived from the merges exactly as CLIP builds it.

The first use of a folder materialises it, complete, under ``$TINV_HOME/configs/`` (built aside and renamed in,
so a reader never sees half of one). A folder on disk, rather than tokenizers built in memory, because
``from_single_file(config=FOLDER)`` reads every component from a folder, and because the rest of tinv (the
project's token checks, the family found from config files) then reads a single-file model exactly as it reads
a diffusers folder. The folder's name carries a digest of the shipped files, so a tinv whose configs changed
never reads an older copy.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import shutil
from pathlib import Path

from tinv_cli.atomic import replace_dir
from tinv_cli.errors import ModelError
from tinv_cli.paths import tinv_home

DATA = Path(__file__).resolve().parent / "configs_data"
MERGES_FILE = DATA / "clip_merges.txt.gz"
# The names under configs_data/ a family's variant may name (families/*.py, Variant.checkpoint_configs).
SHIPPED = (
    "stable-diffusion-v1-5",
    "stable-diffusion-2-1",
    "stable-diffusion-2-1-base",
    "stable-diffusion-xl-base-1.0",
)
MERGES_HEADER = "#version: 0.2"


@functools.cache
def clip_merges() -> tuple[tuple[str, str], ...]:
    """CLIP's 48,894 BPE merges, in rank order."""
    lines = gzip.decompress(MERGES_FILE.read_bytes()).decode("utf-8").splitlines()
    return tuple((a, b) for a, b in (line.split(" ") for line in lines))


def clip_vocab() -> dict[str, int]:
    """CLIP's vocabulary as CLIP builds it from the merges: the 256 byte symbols, their ``</w>`` forms, one token
    per merge, then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407): 49,408 entries."""
    from tinv_cli.shapes.clip_bpe import build_vocab

    return build_vocab(list(clip_merges()))


def _digest(name: str) -> str:
    """A digest of what a materialised folder is made from: the shipped files of ``name`` and the merges."""
    sha = hashlib.sha256(MERGES_FILE.read_bytes())
    for path in sorted((DATA / name).rglob("*.json")):
        sha.update(path.relative_to(DATA / name).as_posix().encode() + b"\0" + path.read_bytes())
    return sha.hexdigest()[:12]


def config_folder(name: str) -> Path:
    """The complete configuration folder ``name`` (one of ``SHIPPED``), materialised on first use."""
    if name not in SHIPPED:
        raise ModelError(f"tinv ships no configuration {name!r}", "pass a folder with [model] config")
    target = tinv_home() / "configs" / f"{name}-{_digest(name)}"
    if (target / "model_index.json").is_file():
        return target

    def build(folder: Path) -> None:
        shutil.copytree(DATA / name, folder, dirs_exist_ok=True)
        vocab = json.dumps(clip_vocab(), ensure_ascii=False)
        merges = MERGES_HEADER + "\n" + "".join(f"{a} {b}\n" for a, b in clip_merges())
        for tokenizer in sorted(p for p in folder.iterdir() if (p / "tokenizer_config.json").is_file()):
            (tokenizer / "vocab.json").write_text(vocab, encoding="utf-8")
            (tokenizer / "merges.txt").write_text(merges, encoding="utf-8")

    # Two processes materialising at once each build a whole folder; the last rename wins, both are complete.
    return replace_dir(target, build)
