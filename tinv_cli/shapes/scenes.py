"""The scenes world (builtin:scenes): the shapes world's objects with attributes a prompt can edit.

A 32x32 image holds one shape (``world.SHAPES``) in one colour (``world.COLOURS``), and four more attributes,
each named by a word the captions use: the size (``tiny`` or ``big``), the fill (``filled`` or ``outlined``, a
ring of the colour around the ground) and the ground (``black``, ``white`` or ``gray``, plain). Every one of
them is a low-frequency property that an 8x8x4 latent keeps (the shapes world's stripes and dots were not),
so the judge can read each from a sample and a benchmark can ask whether a learned concept still takes an
attribute from the prompt (editability) and whether a learned style carries over to other objects.

Captions name a random subset of the attributes, in a fixed word order (``big red outlined circle on
white``); an unnamed attribute is drawn at random, so the model learns what each word adds. A fifth of the
captions name the fill and ground as a style (``a painting of a red circle in the style of outlined white``,
or one of the textual inversion style templates), which is how a style concept is prompted.
Like the shapes world, every scene is a pure function of ``(seed, index)`` and every shape is left-right
symmetric.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tinv_cli.shapes import world
from tinv_cli.shapes.world import COLOURS, SHAPES
from tinv_cli.training.templates import OBJECT_TEMPLATES, STYLE_TEMPLATES

if TYPE_CHECKING:
    from PIL import Image, ImageDraw

SIZE = 32
_SUPER = 4
GROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (25, 25, 25),
    "white": (235, 235, 235),
    "gray": (125, 125, 125),
}
SIZES: dict[str, tuple[float, float]] = {"tiny": (6.5, 8.0), "big": (11.5, 13.5)}  # radius, in pixels
FILLS: tuple[str, ...] = ("filled", "outlined")
_LINE = 2.3  # an outline's width, in pixels of the 32x32 image

EXTRA_WORDS = ("shape", "on", "painting", "of", *COLOURS, *SHAPES, *GROUNDS, *SIZES, *FILLS)

HEADS: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "background": tuple(GROUNDS),
    "size": tuple(SIZES),
    "fill": FILLS,
}
# A style here is how a shape is drawn and on what: the fill and the ground.
STYLE_HEADS: tuple[str, ...] = ("fill", "background")
JUDGE_POOL = "max+mean"


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    background: str
    size: str
    fill: str
    x: float  # centre, in pixels of the 32x32 image
    y: float
    radius: float


def scene(
    seed: int,
    index: int,
    *,
    colour: str | None = None,
    shape: str | None = None,
    background: str | None = None,
    size: str | None = None,
    fill: str | None = None,
) -> Scene:
    """The ``index``-th scene of world ``seed``; fixing attributes leaves the rest random."""
    rng = random.Random(f"scenes:{seed}:{index}")
    drawn = (
        rng.choice(list(COLOURS)),
        rng.choice(SHAPES),
        rng.choice(list(GROUNDS)),
        rng.choice(list(SIZES)),
        rng.choice(FILLS),
    )
    size = size or drawn[3]
    radius = rng.uniform(*SIZES[size])
    return Scene(
        colour=colour or drawn[0],
        shape=shape or drawn[1],
        background=background or drawn[2],
        size=size,
        fill=fill or drawn[4],
        x=rng.uniform(radius + 1, SIZE - radius - 1),
        y=rng.uniform(radius + 1, SIZE - radius - 1),
        radius=radius,
    )


def render(item: Scene) -> Image.Image:
    """The scene as a 32x32 RGB image."""
    from PIL import Image, ImageDraw

    big = SIZE * _SUPER
    image = Image.new("RGB", (big, big), GROUNDS[item.background])
    draw = ImageDraw.Draw(image)
    width = round(_LINE * _SUPER) if item.fill == "outlined" else 0
    _draw(
        draw, item.shape, item.x * _SUPER, item.y * _SUPER, item.radius * _SUPER, COLOURS[item.colour], width
    )
    return image.resize((SIZE, SIZE), resample=Image.Resampling.BOX)


def _outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        h = r * 0.85
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.85 * r, cy), (cx, cy + r), (cx - 0.85 * r, cy)]
    if shape == "cross":
        t = r * 0.42
        return [
            (cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t), (cx + r, cy + t),
            (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r), (cx - t, cy + t), (cx - r, cy + t),
            (cx - r, cy - t), (cx - t, cy - t),
        ]  # fmt: skip
    raise ValueError(f"unknown shape {shape!r}")


def _draw(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    r: float,
    ink: tuple[int, int, int],
    width: int,
) -> None:
    """A filled shape (``width`` 0) or its outline ``width`` pixels wide, drawn inside the filled one's edge."""
    if shape == "circle":
        box = [cx - r, cy - r, cx + r, cy + r]
        if width:
            draw.ellipse(box, outline=ink, width=width)
        else:
            draw.ellipse(box, fill=ink)
        return
    points = _outline(shape, cx, cy, r)
    if width:
        draw.polygon(points, outline=ink, width=width)
    else:
        draw.polygon(points, fill=ink)


def caption(item: Scene, seed: int, index: int) -> str:
    """A caption naming a random subset of the scene's attributes; one in ten is empty (for guidance)."""
    rng = random.Random(f"scenes-caption:{seed}:{index}")
    if rng.random() < 0.1:
        return ""
    colour = item.colour if rng.random() < 0.85 else ""
    shape = item.shape if rng.random() < 0.9 or not colour else "shape"
    if rng.random() < 0.2:
        style = f"{item.fill} {item.background}"
        roll = rng.random()
        if roll < 0.5:
            return f"a painting of a {' '.join(w for w in (colour, shape) if w)} in the style of {style}"
        text = rng.choice(STYLE_TEMPLATES).format(style)
        return f"{text}, {colour} {shape}".replace("  ", " ") if roll < 0.75 else text
    words = [
        item.size if rng.random() < 0.5 else "",
        colour,
        item.fill if rng.random() < 0.5 else "",
        shape,
    ]
    subject = " ".join(w for w in words if w)
    text = rng.choice(OBJECT_TEMPLATES).format(subject) if rng.random() < 0.85 else subject
    if rng.random() < 0.5:
        text = f"{text} on {item.background}"
    return text


def vocabulary() -> list[str]:
    """Every word the captions can use, in a fixed order: the tokenizer's one-token words."""
    return world.vocabulary(EXTRA_WORDS)


def images(seed: int, count: int, start: int = 0, **fixed: str) -> list[Image.Image]:
    """Scenes ``start .. start+count-1`` of world ``seed`` rendered; ``fixed`` as for ``scene``."""
    return [render(scene(seed, i, **fixed)) for i in range(start, start + count)]
