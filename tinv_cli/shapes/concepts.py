"""Held-out concepts of builtin:scenes and how well a trained embedding shows them: the learning benchmark's
measure (``benchmarks/learning.py``), shared with the test that holds the default recipe to its figures.

An object concept is a colour and shape drawn on one ground at random sizes and fills; a style concept is a
fill and ground under random colours, shapes and sizes. *Reconstruction* is the fraction of samples of the
concept's own prompt that the judge reads as the concept; *editability* the fraction of samples of prompts that
add an attribute the model renders from words (another ground, a size, a fill; for a style, other coloured
shapes) that show both the concept and the attribute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli.shapes import scenes

if TYPE_CHECKING:
    from tinv_cli.embedding import Embedding
    from tinv_cli.shapes.judge import Judge

RECON_SAMPLES = 16
EDIT_SAMPLES = 24
SAMPLE_STEPS = 20
GUIDANCE = 7.5


@dataclass(frozen=True)
class ConceptSpec:
    """A held-out concept: an object (colour and shape, on one ground) or a style (fill and ground)."""

    name: str
    kind: str  # "object" or "style"
    fixed: dict[str, str]  # the attributes every training image shares
    initializer: str
    world_seed: int

    @property
    def target(self) -> dict[str, str]:
        """What the judge must read for the concept to count as shown."""
        keys = ("colour", "shape") if self.kind == "object" else ("fill", "background")
        return {k: self.fixed[k] for k in keys}


# Objects on one ground with size and fill varying; styles with colour, shape and size varying.
TUNING = (
    ConceptSpec("tune-red-square", "object", {"colour": "red", "shape": "square", "background": "black"}, "square", 301),
    ConceptSpec("tune-blue-triangle", "object", {"colour": "blue", "shape": "triangle", "background": "white"}, "triangle", 302),
    ConceptSpec("tune-outlined-gray", "style", {"fill": "outlined", "background": "gray"}, "outlined", 303),
)  # fmt: skip
TEST = (
    ConceptSpec("test-green-cross", "object", {"colour": "green", "shape": "cross", "background": "gray"}, "cross", 401),
    ConceptSpec("test-yellow-circle", "object", {"colour": "yellow", "shape": "circle", "background": "black"}, "circle", 402),
    ConceptSpec("test-purple-triangle", "object", {"colour": "purple", "shape": "triangle", "background": "white"}, "triangle", 403),
    ConceptSpec("test-outlined-white", "style", {"fill": "outlined", "background": "white"}, "outlined", 404),
)  # fmt: skip


def edit_prompts(spec: ConceptSpec) -> list[tuple[str, dict[str, str]]]:
    """(prompt with ``{}`` for the token, what the judge must read) for the editability score."""
    if spec.kind == "style":
        pairs = [("red", "circle"), ("blue", "square"), ("green", "diamond"), ("orange", "triangle")]
        return [
            (f"a painting of a {c} {s} in the style of {{}}", {**spec.target, "colour": c, "shape": s})
            for c, s in pairs
        ]
    others = [g for g in scenes.GROUNDS if g != spec.fixed["background"]]
    return [
        *((f"a photo of a {{}} on {g}", {**spec.target, "background": g}) for g in others),
        ("a photo of a tiny {}", {**spec.target, "size": "tiny"}),
        ("a photo of a big {}", {**spec.target, "size": "big"}),
        ("a photo of a outlined {}", {**spec.target, "fill": "outlined"}),
        ("a photo of a filled {}", {**spec.target, "fill": "filled"}),
    ]


def recon_prompt(spec: ConceptSpec) -> str:
    return "a painting in the style of {}" if spec.kind == "style" else "a photo of a {}"


def write_images(spec: ConceptSpec, folder: Path, count: int, *, masks: bool = False) -> None:
    """The concept's training images ``00.png ..`` (and ``NN.mask.png``, the shape's own pixels, with masks)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        item = scenes.scene(spec.world_seed, i, **spec.fixed)
        scenes.render(item).save(folder / f"{i:02d}.png")
        if masks:
            solid = scenes.Scene(
                **{**item.__dict__, "colour": "yellow", "background": "black", "fill": "filled"}
            )
            mask = scenes.render(solid).convert("L").point(lambda v: 255 if v > 60 else 0)
            Image.merge("RGB", (mask, mask, mask)).save(folder / f"{i:02d}.mask.png")


def score(
    pipe: Any,
    judge: Judge,
    spec: ConceptSpec,
    vectors: Embedding,
    seed: int,
    *,
    recon_samples: int = RECON_SAMPLES,
    edit_samples: int = EDIT_SAMPLES,
) -> dict[str, float]:
    """Reconstruction and editability of ``vectors`` on ``pipe`` (which gains their token under a fresh name:
    rows are only ever added), sample ``i`` seeded ``seed * 10000 + i`` whatever the vectors."""
    from tinv_cli.embedding import Embedding
    from tinv_cli.sampling import loader
    from tinv_cli.shapes.measure import judged_samples

    embedding = Embedding(f"<scored-{len(pipe.tokenizer)}>", vectors.vectors)
    token = embedding.token
    loader.load_concepts(pipe, [embedding])
    edits = edit_prompts(spec)
    jobs = [(recon_prompt(spec), spec.target)] * recon_samples
    jobs += [edits[i % len(edits)] for i in range(edit_samples)]
    prompts = [loader.expand_prompt(p.format(token), [embedding]) for p, _ in jobs]
    seeds = [seed * 10_000 + i for i in range(len(jobs))]
    verdicts = judged_samples(pipe, judge, prompts, seeds, steps=SAMPLE_STEPS, guidance=GUIDANCE)
    right = [v.matches(target) for v, (_, target) in zip(verdicts, jobs, strict=True)]
    return {
        "reconstruction": sum(right[:recon_samples]) / recon_samples,
        "editability": sum(right[recon_samples:]) / edit_samples,
    }
