"""Time to resolve and load 1, 10 and 50 concepts named in a prompt (the part of `tinv sample` before denoising).

    .venv/bin/python benchmarks/concept_loading.py            # writes its section of docs/benchmarks.md
    .venv/bin/python benchmarks/concept_loading.py --no-write # prints only

Each measurement is what `tinv sample` does between reading the prompt and the first denoising step, minus
reading the model itself: find every <word> in a registry of 200 entries (tinv.json files on disk), read each
concept's learned_embeds.safetensors, add its tokens to the tokenizer and its rows to the text encoder, and spell
out the multi-vector tokens of the prompt. The pipeline is tests/tiny.py's with a 768-wide text encoder (SD 1.x
shapes where they matter here: the embedding table is 768 wide); concepts have 1 to 4 vectors. Every repeat
loads into a fresh copy of the pipeline (copying is not timed), in a fresh temporary $TINV_HOME.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from report import machine, markers, write_section  # this folder's shared machine line and docs writer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

START, END = markers("concept_loading")
COUNTS = (1, 10, 50)
REGISTRY_SIZE = 200
WIDTH = 768
SD_VOCAB = 49408  # CLIP's vocabulary, as in every SD 1.x / 2.x tokenizer


def populate(registry, count: int) -> None:
    import torch

    from tinv_cli.embedding import Embedding

    generator = torch.Generator().manual_seed(0)
    for i in range(count):
        vectors = torch.randn(1 + i % 4, WIDTH, generator=generator) * 0.02
        registry.add(
            f"concept-{i:03d}", Embedding(f"<concept-{i:03d}>", (vectors,)), source={"type": "imported"}
        )


def measure(registry, pipe, count: int, repeats: int) -> dict[str, float]:
    from tinv_cli.sampling import loader
    from tinv_cli.sampling.prompt import resolve_concepts

    # Spread over the registry, so the words are not all at the front of its listing.
    step = REGISTRY_SIZE // count
    prompt = "a photo of " + " and ".join(f"<concept-{i * step:03d}>" for i in range(count))
    resolve_s, load_s, total_s = [], [], []
    for _ in range(repeats):
        fresh = copy.deepcopy(pipe)
        start = time.perf_counter()
        concepts = resolve_concepts([prompt], registry, lambda: None)
        embeddings = [concept.embedding() for concept in concepts]
        resolved = time.perf_counter()
        loader.load_concepts(fresh, embeddings)
        loader.expand_prompt(prompt, embeddings)
        end = time.perf_counter()
        assert len(concepts) == count
        resolve_s.append(resolved - start)
        load_s.append(end - resolved)
        total_s.append(end - start)
    return {
        "resolve_ms": statistics.median(resolve_s) * 1000,
        "load_ms": statistics.median(load_s) * 1000,
        "total_ms": statistics.median(total_s) * 1000,
        "min_total_ms": min(total_s) * 1000,
    }


def measure_full_table(count: int, repeats: int) -> tuple[float, float]:
    """Median ms to grow an SD 1.x-sized token table (49,408 x 768) by ``count`` concepts' rows: the way
    load_concepts does it (``loader.grow_input_embeddings``: one copy) and through transformers'
    ``resize_token_embeddings``, alternating (the tiny tokenizer cannot show this cost)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from tinv_cli.sampling.loader import grow_input_embeddings

    encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=SD_VOCAB,
            hidden_size=WIDTH,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
        )
    )
    base = encoder.get_input_embeddings().weight.detach().clone()

    def fresh_table() -> None:
        # A new SD-sized table each time: resize_token_embeddings swaps the data of the module it is given.
        encoder.set_input_embeddings(torch.nn.Embedding(SD_VOCAB, WIDTH, _weight=base.clone()))
        encoder.config.vocab_size = SD_VOCAB

    rows = sum(1 + i % 4 for i in range(count))
    ours, theirs = [], []
    for _ in range(repeats):
        fresh_table()
        start = time.perf_counter()
        grow_input_embeddings(encoder, SD_VOCAB + rows)
        ours.append(time.perf_counter() - start)
        fresh_table()
        start = time.perf_counter()
        encoder.resize_token_embeddings(SD_VOCAB + rows, mean_resizing=False)
        theirs.append(time.perf_counter() - start)
        if encoder.get_input_embeddings().weight.shape[0] != SD_VOCAB + rows:
            raise RuntimeError("the table did not grow")
    return statistics.median(ours) * 1000, statistics.median(theirs) * 1000


def section(results: dict[int, dict[str, float]], repeats: int) -> str:
    lines = [
        START,
        "## Concept loading (`benchmarks/concept_loading.py`)",
        "",
        "Time from a prompt to a pipeline ready to denoise, model loading excluded: resolve every `<word>` against",
        f"a registry of {REGISTRY_SIZE} entries, read the embeddings, load them into the tokenizer and text encoder",
        f"(768 wide, SD 1.x's width), expand multi-vector tokens. Median of {repeats} runs; concepts have 1-4 vectors.",
        "",
        "The tiny pipeline's tokenizer has 1,452 entries where SD's has 49,408. Growing a real 49,408 x 768 token",
        "table, once per text encoder, adds the time in the last columns: `load_concepts` copies the old rows into",
        "a table with room for the new ones; transformers' `resize_token_embeddings` (what diffusers'",
        "`load_textual_inversion` calls) first fills a whole new table with random values, shown beside it.",
        "",
        "Command: `.venv/bin/python benchmarks/concept_loading.py`",
        "",
        f"Machine: {machine()}",
        "",
        "| concepts | resolve + read (ms) | load into pipeline (ms) | total (ms) | best total (ms) | per concept (ms) "
        "| + growing a 49,408-row table (ms) | transformers' resize instead (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for count, r in results.items():
        lines.append(
            f"| {count} | {r['resolve_ms']:.1f} | {r['load_ms']:.1f} | {r['total_ms']:.1f} | "
            f"{r['min_total_ms']:.1f} | {r['total_ms'] / count:.2f} | {r['grow_ms']:.1f} | {r['resize_ms']:.0f} |"
        )
    lines += ["", f"Measured {time.strftime('%Y-%m-%d')}.", END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="print the table without updating the docs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        os.environ["TINV_HOME"] = home
        from tests.tiny import build_tiny_pipeline
        from tinv_cli.registry.store import Registry

        registry = Registry()
        populate(registry, REGISTRY_SIZE)
        pipe = build_tiny_pipeline(WIDTH)
        measure(registry, pipe, 1, 1)  # warm-up: first imports of safetensors and the tokenizer code paths
        results = {count: measure(registry, pipe, count, args.repeats) for count in COUNTS}
        for count in COUNTS:
            grow, resize = measure_full_table(count, max(3, args.repeats // 2))
            results[count].update(grow_ms=grow, resize_ms=resize)

    text = section(results, args.repeats)
    print(text)
    if not args.no_write:
        write_section(ROOT / "docs" / "benchmarks.md", "concept_loading", text)


if __name__ == "__main__":
    main()
