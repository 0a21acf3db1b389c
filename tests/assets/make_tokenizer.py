"""Regenerates ``tests/assets/tokenizer/``: a small CLIP-format BPE tokenizer for the tiny test pipelines.

    python tests/assets/make_tokenizer.py [OUT_DIR]      # default: the tokenizer/ folder next to this file

The files have the layout of openai/clip-vit-large-patch14's tokenizer (``vocab.json`` + ``merges.txt`` +
``tokenizer_config.json``), so ``CLIPTokenizer.from_pretrained`` reads them as it reads the real one. The vocabulary
is the 256 byte symbols, their ``</w>`` (end of word) forms, one entry per merge, then ``<|startoftext|>`` and
``<|endoftext|>``, in that order, as in CLIP. Merges are found by simulating BPE: each listed word is run through
the merges so far and, while it still splits into more than one symbol, the merge of its first adjacent pair is
appended. Merges appended later rank lower than every merge an earlier word used, so they never change how an
earlier word splits: every listed word ends as one token. The output depends only on this file (running it twice
gives identical bytes). The BPE construction itself lives in ``tinv_cli/clip_bpe.py``, which the shapes model's
tokenizer uses too.

``ReferenceTokenizer`` is a pure-Python port of CLIP's own ``simple_tokenizer`` for the tests to cross-check
transformers against.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from pathlib import Path

from tinv_cli.shapes.clip_bpe import (
    SPECIAL_TOKENS,
    WORD_RE,
    bpe,
    bytes_to_unicode,  # noqa: F401  (re-exported: tests check the byte map)
    to_symbols,
    words_of,
    write_tokenizer,
)

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

MODEL_MAX_LENGTH = 77


def word_list() -> list[str]:
    """Every word that must be one token: the templates' words and EXTRA_WORDS, first occurrence order."""
    return words_of(" ".join(OBJECT_TEMPLATES + STYLE_TEMPLATES).replace("{}", " ") + " " + EXTRA_WORDS)


def write(out_dir: Path) -> list[Path]:
    """Writes the tokenizer files into ``out_dir`` and returns their paths."""
    return write_tokenizer(word_list(), out_dir, model_max_length=MODEL_MAX_LENGTH)


class ReferenceTokenizer:
    """CLIP's ``simple_tokenizer`` over the files ``write`` produced, without transformers."""

    def __init__(self, folder: Path) -> None:
        self.encoder: dict[str, int] = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
        self.ranks = {tuple(line.split()): i for i, line in enumerate(lines)}

    def tokenize(self, text: str) -> list[str]:
        text = " ".join(unicodedata.normalize("NFC", text).split()).lower()
        pieces: list[str] = []
        for word in WORD_RE.findall(text):
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
