"""The shapes world: 32x32 images of one coloured shape on a plain or patterned background, with captions.

Everything here is a pure function of its seed: ``scene(seed, i)`` is the i-th scene of a world, whatever else
was drawn before, so a data set, a held-out set and a concept's training images never depend on call order.
Shapes are drawn at 4x and box-filtered down, which gives anti-aliased edges without any randomness.
Every shape is left-right symmetric, so the horizontal flips that training uses never change the label.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tinv_cli.training.templates import OBJECT_TEMPLATES, STYLE_TEMPLATES

if TYPE_CHECKING:
    from PIL import Image, ImageDraw

SIZE = 32
_SUPER = 4

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (235, 215, 30),
    "green": (40, 170, 60),
    "blue": (40, 90, 230),
    "purple": (150, 50, 200),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
# "plain" is the default and half of all scenes; the patterns are gray on the same dark ground, so they never
# compete with a shape's colour, and serve as styles ("in the style of stripes").
BACKGROUNDS: tuple[str, ...] = ("plain", "stripes", "dots")
PATTERNS: tuple[str, ...] = BACKGROUNDS[1:]
_GROUND = (30, 30, 30)
_PATTERN_INK = (105, 105, 105)

# Words the model's captions use beyond the templates'; the tokenizer makes each of them one token.
EXTRA_WORDS = ("shape", "on", "plain", *COLOURS, *SHAPES, *PATTERNS)

# What the judge reads (judge.py): a head per attribute; a style concept is read by the background.
HEADS: dict[str, tuple[str, ...]] = {"colour": tuple(COLOURS), "shape": SHAPES, "background": BACKGROUNDS}
STYLE_HEADS: tuple[str, ...] = ("background",)
JUDGE_POOL = "max"


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    background: str
    x: float  # centre, in pixels of the 32x32 image
    y: float
    radius: float
    phase: int  # offset of the background pattern, in pixels


def scene(
    seed: int,
    index: int,
    *,
    colour: str | None = None,
    shape: str | None = None,
    background: str | None = None,
) -> Scene:
    """The ``index``-th scene of world ``seed``; fixing colour, shape or background leaves the rest random."""
    rng = random.Random(f"shapes:{seed}:{index}")
    drawn_colour = rng.choice(list(COLOURS))
    drawn_shape = rng.choice(SHAPES)
    drawn_background = "plain" if rng.random() < 0.5 else rng.choice(PATTERNS)
    radius = rng.uniform(6.0, 12.0)
    x = rng.uniform(radius + 1, SIZE - radius - 1)
    y = rng.uniform(radius + 1, SIZE - radius - 1)
    return Scene(
        colour=colour or drawn_colour,
        shape=shape or drawn_shape,
        background=background or drawn_background,
        x=x,
        y=y,
        radius=radius,
        phase=rng.randrange(6),
    )


def render(item: Scene) -> Image.Image:
    """The scene as a 32x32 RGB image."""
    from PIL import Image, ImageDraw

    big = SIZE * _SUPER
    image = Image.new("RGB", (big, big), _GROUND)
    draw = ImageDraw.Draw(image)
    step = 6 * _SUPER
    offset = item.phase * _SUPER
    if item.background == "stripes":
        for start in range(-big, big, step):
            at = start + offset
            draw.polygon(
                [(at, 0), (at + 2 * _SUPER, 0), (at + 2 * _SUPER + big, big), (at + big, big)],
                fill=_PATTERN_INK,
            )
    elif item.background == "dots":
        for gx in range(offset - step, big + step, step):
            for gy in range(offset - step, big + step, step):
                r = 1.2 * _SUPER
                draw.ellipse([gx - r, gy - r, gx + r, gy + r], fill=_PATTERN_INK)
    _draw_shape(
        draw, item.shape, item.x * _SUPER, item.y * _SUPER, item.radius * _SUPER, COLOURS[item.colour]
    )
    return image.resize((SIZE, SIZE), resample=Image.Resampling.BOX)


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple[int, int, int]
) -> None:
    # Sizes are matched roughly by area, so no shape is recognisable by its size alone.
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        h = r * 0.85
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + 0.85 * r, cy), (cx, cy + r), (cx - 0.85 * r, cy)], fill=fill)
    elif shape == "cross":
        t = r * 0.38
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def caption(item: Scene, seed: int, index: int) -> str:
    """A caption for the scene, drawn from the same templates ``tinv train`` uses, so a concept's prompts read
    like the model's own. One in ten is empty: the model then learns the unconditional image that
    classifier-free guidance steers away from."""
    rng = random.Random(f"caption:{seed}:{index}")
    roll = rng.random()
    if roll < 0.1:
        return ""
    subject_roll = rng.random()
    if subject_roll < 0.8:
        subject = f"{item.colour} {item.shape}"
    elif subject_roll < 0.9:
        subject = item.shape
    else:
        subject = f"{item.colour} shape"
    if item.background != "plain" and rng.random() < 0.3:
        text = rng.choice(STYLE_TEMPLATES).format(item.background)
        return f"{text}, {subject}" if rng.random() < 0.7 else text
    text = rng.choice(OBJECT_TEMPLATES).format(subject) if rng.random() < 0.85 else subject
    if item.background != "plain" and rng.random() < 0.7:
        text = f"{text} on {item.background}"
    elif item.background == "plain" and rng.random() < 0.2:
        text = f"{text} on plain"
    return text


def vocabulary(extra_words: tuple[str, ...] = EXTRA_WORDS) -> list[str]:
    """Every word the captions can use (the templates' and ``extra_words``), in a fixed order: the tokenizer's
    one-token words."""
    from tinv_cli.shapes.clip_bpe import words_of

    text = " ".join(OBJECT_TEMPLATES + STYLE_TEMPLATES).replace("{}", " ") + " " + " ".join(extra_words)
    return words_of(text)


def images(seed: int, count: int, start: int = 0, **fixed: str) -> list[Image.Image]:
    """Scenes ``start .. start+count-1`` of world ``seed`` rendered; ``fixed`` as for ``scene``."""
    return [render(scene(seed, i, **fixed)) for i in range(start, start + count)]
