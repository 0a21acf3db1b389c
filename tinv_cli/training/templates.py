"""The prompts a concept is trained with: the diffusers textual inversion example's templates, and captions.

Each training step pairs an image with one prompt drawn at random from its image's prompt list. Without a
caption that list is the templates of the concept's kind with the placeholder filled in. A caption file
(``img.txt`` next to ``img.png``) joins in one of two ways:

- a caption that mentions the placeholder (or holds ``{}``) is a prompt of its own and replaces the templates
  for that image, e.g. ``a {} sitting on a red chair``;
- any other caption describes what is in the image besides the concept and is appended to every template,
  e.g. ``a photo of a <cat-toy>, on a red chair``, so the new vectors need not learn the chair.
"""

from __future__ import annotations

from collections.abc import Sequence

# examples/textual_inversion/textual_inversion.py in diffusers (imagenet_templates_small), verbatim.
OBJECT_TEMPLATES: tuple[str, ...] = (
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
)

# The same file's imagenet_style_templates_small, verbatim (duplicates included: they weight the draw).
STYLE_TEMPLATES: tuple[str, ...] = (
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
)

# A negative embedding is used in negative prompts, which are lists of what to avoid ("low quality, blurry,
# bad anatomy"), not sentences; so it trains on such prompts: the bare token (how it is most often written),
# the token among quality words (where it sits in a real negative prompt) and a few photo and rendering
# phrasings (so it learns the look of the images whatever their subject). Its images are examples of what
# should be avoided, and these prompts tie that look to the token alone, not to a subject word.
NEGATIVE_TEMPLATES: tuple[str, ...] = (
    "{}",
    "{}",
    "a photo of {}",
    "an image of {}",
    "a rendering of {}",
    "low quality {}",
    "{}, low quality",
    "{}, worst quality",
    "a picture with {}",
    "{}, blurry",
)

TEMPLATES: dict[str, tuple[str, ...]] = {
    "object": OBJECT_TEMPLATES,
    "style": STYLE_TEMPLATES,
    "negative": NEGATIVE_TEMPLATES,
}


def templates_for(kind: str) -> tuple[str, ...]:
    """The templates of a concept kind (``object`` or ``style``)."""
    try:
        return TEMPLATES[kind]
    except KeyError:
        raise ValueError(f"unknown concept kind {kind!r}; expected one of {', '.join(TEMPLATES)}") from None


def prompts_for(kind: str, placeholder: str, token: str, caption: str | None = None) -> list[str]:
    """The prompts one image trains with.

    ``placeholder`` is what goes in the text (``<t> <t>_1 ...`` for a multi-vector concept); ``token`` is the
    concept's token as a user writes it in a caption.
    """
    caption = (caption or "").strip()
    if caption and ("{}" in caption or token in caption):
        # str.replace, not str.format: a caption may hold other braces. One pass each, so a placeholder that
        # contains the token (``<t> <t>_1``) is not expanded twice.
        return [caption.replace("{}", token).replace(token, placeholder)]
    filled = [template.format(placeholder) for template in templates_for(kind)]
    if caption:
        return [f"{prompt}, {caption}" for prompt in filled]
    return filled


def all_prompts(kind: str, placeholder: str, token: str, captions: Sequence[str | None]) -> list[list[str]]:
    """``prompts_for`` of every image, in image order."""
    return [prompts_for(kind, placeholder, token, caption) for caption in captions]
