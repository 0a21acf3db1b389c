"""The file names of the concepts library layout (a registry entry, a pushed repository) and the kinds of concept.

Every module that reads or writes an entry's files names them from here."""

from __future__ import annotations

KINDS: tuple[str, ...] = ("object", "style")

SAFE_NAME = "learned_embeds.safetensors"
BIN_NAME = "learned_embeds.bin"
# diffusers' SDXL convention: the second text encoder's vectors in a file of their own, loaded by a second
# ``load_textual_inversion(..., text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)`` call.
SECOND_NAME = "learned_embeds_2.safetensors"
# Where a concepts-library folder (a registry entry, a pushed repository) keeps that pair for an SDXL concept,
# beside the {clip_l, clip_g} file the other tools read: ``load_textual_inversion(repo, subfolder="diffusers")``.
DIFFUSERS_DIR = "diffusers"
TOKEN_FILE = "token_identifier.txt"
KIND_FILE = "type_of_concept.txt"
IMAGES_DIR = "concept_images"
# The model card: written into every entry, and rebuilt for the repository on each push.
README_FILE = "README.md"
# tinv's own record of an entry (token, widths, provenance, local paths): it stays in the registry, never pushed.
INFO_FILE = "tinv.json"
