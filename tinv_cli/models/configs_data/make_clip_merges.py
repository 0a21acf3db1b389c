"""Regenerates ``clip_merges.txt.gz``, the CLIP BPE merges every shipped tokenizer is built from.

Maintainers only; tinv never runs this. The source is OpenCLIP's ``bpe_simple_vocab_16e6.txt.gz`` (MIT), the file
OpenAI's CLIP ships: its first line is a header, and CLIP uses the next 49152 - 256 - 2 = 48894 lines as merges.

    pip download open_clip_torch --no-deps -d /tmp/oc
    python tinv_cli/models/configs_data/make_clip_merges.py /tmp/oc/open_clip_torch-*.whl

The output is gzip'd with a fixed mtime, so the same source gives the same bytes.
"""

from __future__ import annotations

import gzip
import sys
import zipfile
from pathlib import Path

SOURCE = "open_clip/bpe_simple_vocab_16e6.txt.gz"
MERGES = 49152 - 256 - 2
OUT = Path(__file__).resolve().parent / "clip_merges.txt.gz"


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as archive:
        text = gzip.decompress(archive.read(SOURCE)).decode("utf-8")
    merges = text.split("\n")[1 : MERGES + 1]
    assert len(merges) == MERGES and all(len(m.split(" ")) == 2 for m in merges)
    OUT.write_bytes(gzip.compress(("\n".join(merges) + "\n").encode("utf-8"), compresslevel=9, mtime=0))
    print(f"{OUT}: {len(merges)} merges, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv[1])
