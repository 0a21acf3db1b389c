"""Negative embeddings in a prompt: a concept trained as ``kind = "negative"`` is what images should avoid, so
written in the prompt it most likely belongs in the negative prompt, where it is moved (with a note saying so)."""

from __future__ import annotations

from collections.abc import Sequence

from tinv_cli.sampling.prompt import PromptConcept

NEGATIVE_KIND = "negative"


def move_negatives(
    prompt: str, negative: str, concepts: Sequence[PromptConcept]
) -> tuple[str, str, list[str]]:
    """``(prompt, negative prompt, notes)`` with every negative concept's word taken out of the prompt and added
    to the end of the negative prompt (once: a word already there is not repeated), one note per word moved.
    The prompt's comma-separated parts that become empty are dropped, so "<bad>, a cat" becomes "a cat"."""
    notes = []
    for concept in concepts:
        word = concept.word
        if concept.entry.kind != NEGATIVE_KIND or word not in prompt:
            continue
        parts = [" ".join(part.replace(word, " ").split()) for part in prompt.split(",")]
        prompt = ", ".join(part for part in parts if part)
        if word not in negative:
            negative = f"{negative}, {word}" if negative.strip() else word
        notes.append(
            f"{word} is a negative embedding: moved from the prompt to the negative prompt "
            f"(it is trained as what images should not look like)"
        )
    return prompt, negative, notes
