"""Regenerates ``tests/assets/tokenizer/``: a small CLIP-format BPE tokenizer for the tiny test pipelines.

    python tests/assets/make_tokenizer.py [OUT_DIR]      # default: the tokenizer/ folder next to this file

The files have the layout of openai/clip-vit-large-patch14's tokenizer (``vocab.json`` + ``merges.txt`` +
``tokenizer_config.json``), so ``CLIPTokenizer.from_pretrained`` reads them as it reads the real one. The vocabulary
is the 256 byte symbols, their ``</w>`` (end of word) forms, one entry per merge, then ``<|startoftext|>`` and
``<|endoftext|>``, in that order, as in CLIP. Merges are found by simulating BPE: each listed word is run through
the merges so far and, while it still splits into more than one symbol, the merge of its first adjacent pair is
appended. Merges appended later rank lower than every merge an earlier word used, so they never change how an
earlier word splits: every listed word ends as one token. The output depends only on this file (running it twice
gives identical bytes).

``ReferenceTokenizer`` is a pure-Python port of CLIP's own ``simple_tokenizer`` for the tests to cross-check
transformers against.
"""

from __future__ import annotations

import itertools
import json
import sys
import unicodedata
from pathlib import Path

import regex

# The diffusers textual inversion example's prompt templates (examples/textual_inversion/textual_inversion.py).
OBJECT_TEMPLATES = [
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
]
STYLE_TEMPLATES = [
    "a painting in the style of {}",
    "a rendering in the style of {}",
    "a cropped painting in the style of {}",
    "the painting in the style of {}",
    "a clean painting in the style of {}",
    "a dirty painting in the style of {}",
    "a dark painting in the style of {}",
    "a picture in the style of {}",
    "a cool painting in the style of {}",
    "a close-up painting in the style of {}",
    "a bright painting in the style of {}",
    "a cropped painting in the style of {}",
    "a good painting in the style of {}",
    "a close-up painting in the style of {}",
    "a rendition in the style of {}",
    "a nice painting in the style of {}",
    "a small painting in the style of {}",
    "a weird painting in the style of {}",
    "a large painting in the style of {}",
]

# Words that prompts, initializers and test data use, beyond the templates' own.
EXTRA_WORDS = """
cat toy dog backpack beach kitten puppy teddy bear bird horse cow fish duck rabbit mouse lion tiger owl fox
red blue green yellow orange purple pink brown black white gray grey gold silver color colors colour
colorful square circle triangle rectangle star heart diamond shape shapes line lines dot dots stripe stripes
pattern style painting sculpture object objects statue figure drawing sketch illustration render art artwork
poster size sizes big tiny medium huge short tall long wide narrow thin thick round flat number numbers zero
one two three four five six seven eight nine ten first second third on with and at by an is are for from to
under over near next front back top bottom side inside outside behind above below between into onto it this
that these those his her its their our your table chair sofa bed lamp window door wall floor room house home
kitchen garden park street road city town forest mountain mountains hill sky sun moon cloud clouds water
river lake sea ocean sand snow rain desert grass field tree trees flower flowers leaf leaves rock stone wood
car bike boat train plane bus truck man woman person people girl boy child baby face hand eyes hair cup mug
bowl plate bottle glass vase box bag hat shirt shoe shoes book clock ball wooden metal plastic paper glass
ceramic fabric leather cotton wool old new modern vintage ancient retro cute pretty beautiful ugly happy sad
angry funny high low quality detailed realistic photorealistic sharp soft blurry smooth rough shiny matte
light shadow night day morning evening sunset sunrise summer winter spring autumn oil watercolor acrylic
pencil ink digital pixel anime cartoon comic abstract minimal simple portrait landscape scene view image
picture photograph camera lens studio background wearing holding sitting standing running walking riding
playing eating sleeping flying swimming made covered full empty open closed van gogh monet picasso very more
most best much many some all no not
"""

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
MODEL_MAX_LENGTH = 77

# CLIP's pre-tokenizer: words of letters, single digits, and runs of other non-space characters.
_WORD_RE = regex.compile(
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


_BYTE_CHARS = bytes_to_unicode()


def to_symbols(text: str) -> str:
    """The byte-level spelling of one pre-tokenized word."""
    return "".join(_BYTE_CHARS[b] for b in text.encode("utf-8"))


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


def word_list() -> list[str]:
    """Every word that must be one token: the templates' words and EXTRA_WORDS, first occurrence order."""
    text = " ".join(OBJECT_TEMPLATES + STYLE_TEMPLATES).replace("{}", " ") + " " + EXTRA_WORDS
    seen: dict[str, None] = {}
    for word in _WORD_RE.findall(text.lower()):
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
    symbols = list(_BYTE_CHARS.values())
    ordered = (
        symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in merges] + list(SPECIAL_TOKENS)
    )
    vocab: dict[str, int] = {}
    for token in ordered:
        # Two merges can spell the same token ("c"+"at</w>", "ca"+"t</w>"); it gets one id, the first.
        vocab.setdefault(token, len(vocab))
    return vocab


def tokenizer_config() -> dict[str, object]:
    return {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "bos_token": SPECIAL_TOKENS[0],
        "eos_token": SPECIAL_TOKENS[1],
        "unk_token": SPECIAL_TOKENS[1],
        "pad_token": SPECIAL_TOKENS[1],
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
    }


def write(out_dir: Path) -> list[Path]:
    """Writes the tokenizer files into ``out_dir`` and returns their paths."""
    merges = build_merges(word_list())
    vocab = build_vocab(merges)
    special_map = {
        key: tokenizer_config()[key] for key in ("bos_token", "eos_token", "unk_token", "pad_token")
    }
    files = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False, indent=1) + "\n",
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
        "tokenizer_config.json": json.dumps(tokenizer_config(), indent=2) + "\n",
        "special_tokens_map.json": json.dumps(special_map, indent=2) + "\n",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = out_dir / name
        path.write_bytes(text.encode("utf-8"))
        written.append(path)
    return written


class ReferenceTokenizer:
    """CLIP's ``simple_tokenizer`` over the files ``write`` produced, without transformers."""

    def __init__(self, folder: Path) -> None:
        self.encoder: dict[str, int] = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
        self.ranks = {tuple(line.split()): i for i, line in enumerate(lines)}

    def tokenize(self, text: str) -> list[str]:
        text = " ".join(unicodedata.normalize("NFC", text).split()).lower()
        pieces: list[str] = []
        for word in _WORD_RE.findall(text):
            pieces.extend(bpe(to_symbols(word), self.ranks))  # type: ignore[arg-type]
        return pieces

    def encode(self, text: str) -> list[int]:
        """Ids with the start and end tokens, unpadded, as ``tokenizer(text).input_ids``."""
        body = [self.encoder[piece] for piece in self.tokenize(text)]
        return [self.encoder[SPECIAL_TOKENS[0]], *body, self.encoder[SPECIAL_TOKENS[1]]]


def main(argv: list[str]) -> int:
    out_dir = Path(argv[0]) if argv else Path(__file__).resolve().parent / "tokenizer"
    for path in write(out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
