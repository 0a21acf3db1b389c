"""The file names of the concepts library layout (a registry entry, a pushed repository) and the kinds of concept.

Every module that reads or writes an entry's files names them from here."""

from __future__ import annotations

KINDS: tuple[str, ...] = ("object", "style", "negative")

SAFE_NAME = "learned_embeds.safetensors"
BIN_NAME = "learned_embeds.bin"
# diffusers' convention for a model of several text encoders: encoder i's vectors in a file of their own,
# learned_embeds_{i+1}.safetensors after the first, each loaded by its own ``load_textual_inversion`` call
# naming that encoder and its tokenizer.
SECOND_NAME = "learned_embeds_2.safetensors"
# Where a concepts-library folder (a registry entry, a pushed repository) keeps those files for a concept of such
# a family, beside the keyed file ({clip_l, clip_g}) the other tools read:
# ``load_textual_inversion(repo, subfolder="diffusers")``.
DIFFUSERS_DIR = "diffusers"


def diffusers_names(encoders: int) -> list[str]:
    """The diffusers file of each text encoder: learned_embeds.safetensors, learned_embeds_2.safetensors, ..."""
    return [SAFE_NAME] + [f"learned_embeds_{i}.safetensors" for i in range(2, encoders + 1)]


TOKEN_FILE = "token_identifier.txt"
KIND_FILE = "type_of_concept.txt"
IMAGES_DIR = "concept_images"
# The model card: written into every entry, and rebuilt for the repository on each push.
README_FILE = "README.md"
# tinv's own record of an entry (token, widths, provenance, local paths): it stays in the registry, never pushed.
INFO_FILE = "tinv.json"
