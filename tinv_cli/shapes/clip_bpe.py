"""CLIP-format BPE tokenizers over a fixed word list: ``vocab.json`` + ``merges.txt`` that ``CLIPTokenizer`` reads.

The vocabulary is the 256 byte symbols, their ``</w>`` (end of word) forms, one entry per merge, then
``<|startoftext|>`` and ``<|endoftext|>``, in that order, as in CLIP. Merges are found by simulating BPE: each
listed word is run through the merges so far and, while it still splits into more than one symbol, the merge of
its first adjacent pair is appended. Merges appended later rank lower than every merge an earlier word used, so
they never change how an earlier word splits: every listed word ends as one token, and any other text still
tokenizes (into smaller pieces, down to bytes). The output depends only on the word list.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import regex

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")

# CLIP's pre-tokenizer: words of letters, single digits, and runs of other non-space characters.
WORD_RE = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters (so no byte is whitespace or a control)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


BYTE_CHARS = bytes_to_unicode()


def to_symbols(text: str) -> str:
    """The byte-level spelling of one pre-tokenized word."""
    return "".join(BYTE_CHARS[b] for b in text.encode("utf-8"))


def bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE of one byte-level word: its last symbol carries ``</w>``; lowest-rank pair merged first."""
    parts = [*word[:-1], word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = set(itertools.pairwise(parts))
        best = min(pairs, key=lambda pair: ranks.get(pair, len(ranks) + 1))
        if best not in ranks:
            break
        merged: list[str] = []
        i = 0
        while i < len(parts):
            if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def words_of(text: str) -> list[str]:
    """The distinct pre-tokenized words of ``text``, lower-cased, in first-occurrence order."""
    seen: dict[str, None] = {}
    for word in WORD_RE.findall(text.lower()):
        seen.setdefault(word, None)
    return list(seen)


def build_merges(words: list[str]) -> list[tuple[str, str]]:
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        parts = bpe(to_symbols(word), ranks)
        while len(parts) > 1:
            pair = (parts[0], parts[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            parts = bpe(to_symbols(word), ranks)
    return merges


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    symbols = list(BYTE_CHARS.values())
    ordered = (
        symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in merges] + list(SPECIAL_TOKENS)
    )
    vocab: dict[str, int] = {}
    for token in ordered:
        # Two merges can spell the same token ("c"+"at</w>", "ca"+"t</w>"); it gets one id, the first.
        vocab.setdefault(token, len(vocab))
    return vocab


def tokenizer_config(model_max_length: int) -> dict[str, object]:
    return {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "bos_token": SPECIAL_TOKENS[0],
        "eos_token": SPECIAL_TOKENS[1],
        "unk_token": SPECIAL_TOKENS[1],
        "pad_token": SPECIAL_TOKENS[1],
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
    }


def write_tokenizer(words: list[str], out_dir: Path, *, model_max_length: int = 77) -> list[Path]:
    """Writes a tokenizer in which every one of ``words`` is one token into ``out_dir``; returns the paths."""
    merges = build_merges(words)
    vocab = build_vocab(merges)
    config = tokenizer_config(model_max_length)
    special_map = {key: config[key] for key in ("bos_token", "eos_token", "unk_token", "pad_token")}
    files = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False, indent=1) + "\n",
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
        "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
        "special_tokens_map.json": json.dumps(special_map, indent=2) + "\n",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = out_dir / name
        path.write_bytes(text.encode("utf-8"))
        written.append(path)
    return written
