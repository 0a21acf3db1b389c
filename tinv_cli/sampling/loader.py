"""Putting concepts into a diffusers pipeline, and writing prompts that use them.

``load_concepts`` does what diffusers' ``pipe.load_textual_inversion(file)`` does (same token names, same ids,
same embedding rows, hence the same text-encoder output), but for every text encoder of the pipeline at once
(SDXL's two), from tinv's ``Embedding``, and only after checking that everything fits, so a refused concept leaves
the pipeline as it was.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tinv_cli import families
from tinv_cli.embedding import Embedding, token_names
from tinv_cli.errors import ModelError


def encoder_pairs(pipe: Any) -> list[tuple[Any, Any]]:
    """The pipeline's (tokenizer, text_encoder) pairs in its family's order, the order of ``Embedding.vectors``."""
    family = families.for_pipeline(pipe)
    return [(getattr(pipe, e.tokenizer), getattr(pipe, e.text_encoder)) for e in family.encoders]


def model_widths(pipe: Any) -> tuple[int, ...]:
    """Hidden sizes of the pipeline's text encoders: ``(768,)`` for SD 1.x, ``(768, 1280)`` for SDXL."""
    # The input-embedding width is what a concept's rows must match, whatever the config claims.
    return tuple(int(encoder.get_input_embeddings().weight.shape[1]) for _, encoder in encoder_pairs(pipe))


def _describe_model(widths: tuple[int, ...]) -> str:
    known = families.variant(widths)
    label = f" ({known.label})" if known else ""
    verb = "is" if len(widths) == 1 else "are"
    return f"this model's {verb} " + " + ".join(str(w) for w in widths) + label


def check_fits(embedding: Embedding, widths: tuple[int, ...]) -> None:
    """Refuses a concept whose vectors do not match the text encoders' widths, naming both model families."""
    if embedding.widths == tuple(widths):
        return
    from tinv_cli.formats import foreign

    refusal = foreign.refusal(embedding.widths, "sample or train")
    if refusal is not None:
        raise refusal
    trained_for = families.describe_widths(embedding.widths)
    trained_article = "a " if len(embedding.widths) == 1 else ""
    known = families.variant(embedding.widths)
    if known:
        # Every label so far is read letter by letter ("ess-dee"), hence "an".
        article = "an" if known.label.startswith("SD") else "a"
        hint = f"use {article} {known.label} base model (--model) or another concept"
    else:
        hint = f"use a base model with a {trained_for} (--model) or another concept"
    raise ModelError(
        f"{embedding.token} was trained for {trained_article}{trained_for}; {_describe_model(tuple(widths))}",
        hint,
    )


def _check_tokens_free(tokenizer: Any, names: list[str]) -> None:
    vocab = tokenizer.get_vocab()
    # The CLIP tokenizer lowercases prompts before it looks for added tokens, so two tokens that differ only in
    # case would make one of them unreachable.
    taken = {token.lower(): token for token in tokenizer.added_tokens_encoder}
    seen: dict[str, str] = {}
    for name in names:
        clash = name if name in vocab else taken.get(name.lower())
        if clash is not None:
            raise ModelError(
                f"token {name} is already in this model's tokenizer (as {clash})",
                "each concept needs a token of its own: load it once, or give one of them another token",
            )
        if name.lower() in seen:
            raise ModelError(
                f"token {name} is used by two of the concepts being loaded",
                "give one of them another token",
            )
        seen[name.lower()] = name


def grow_input_embeddings(encoder: Any, size: int) -> None:
    """Gives ``encoder`` a token table of ``size`` rows, the old rows copied and the new ones left for the caller.

    transformers' ``resize_token_embeddings`` would first fill a whole new table with random values (and, by
    default, mean-resize from the old rows' covariance) only for the new rows to be overwritten: about a second
    for SD's 49,408 x 768 table, against a single copy here.
    """
    import torch

    old = encoder.get_input_embeddings()
    weight = old.weight
    if size <= weight.shape[0]:
        return
    grown = torch.empty(size, weight.shape[1], dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        grown[: weight.shape[0]] = weight
        grown[weight.shape[0] :] = 0
    encoder.set_input_embeddings(torch.nn.Embedding.from_pretrained(grown, freeze=not weight.requires_grad))
    encoder.config.vocab_size = size


def load_concepts(pipe: Any, embeddings: Sequence[Embedding]) -> None:
    """Adds each concept's tokens (``token, token_1, ...``) and rows to every tokenizer and text encoder.

    Everything is checked before anything changes: a concept that does not fit, or a token the tokenizer already
    has, raises ``ModelError`` and leaves the pipeline untouched.
    """
    import torch

    if not embeddings:
        return
    pairs = encoder_pairs(pipe)
    widths = model_widths(pipe)
    for embedding in embeddings:
        check_fits(embedding, widths)
    names = [name for embedding in embeddings for name in token_names(embedding.token, embedding.num_vectors)]
    for tokenizer, _ in pairs:
        _check_tokens_free(tokenizer, names)

    for index, (tokenizer, encoder) in enumerate(pairs):
        rows = torch.cat([embedding.vectors[index] for embedding in embeddings])
        # diffusers sizes the matrix from the tokenizer, not the old matrix; doing the same keeps ids and rows
        # identical to pipe.load_textual_inversion.
        grow_input_embeddings(encoder, len(tokenizer) + len(names))
        weight = encoder.get_input_embeddings().weight
        with torch.no_grad():
            for name, row in zip(names, rows, strict=True):
                # One token at a time, as diffusers adds them, so every token gets the id diffusers gives it.
                tokenizer.add_tokens(name)
                token_id = tokenizer.convert_tokens_to_ids(name)
                weight[token_id] = row.to(dtype=weight.dtype, device=weight.device)


def _expand(prompt: str, counts: dict[str, int]) -> str:
    """Replaces each token with ``count > 1`` by its ``count`` token names; other tokens are left as written."""
    if not any(count > 1 for count in counts.values()):
        return prompt
    # Longest first, so at each position the longest token wins, as in the tokenizer's own added-token split
    # ("<x>_1" is not "<x>" followed by "_1"). Case-insensitive because the tokenizer lowercases prompts first.
    ordered = sorted(counts, key=len, reverse=True)
    canonical = {name.lower(): name for name in ordered}
    pattern = re.compile("|".join(re.escape(name) for name in ordered), re.IGNORECASE)

    def replace(match: re.Match[str]) -> str:
        name = canonical[match.group(0).lower()]
        count = counts[name]
        return " ".join(token_names(name, count)) if count > 1 else match.group(0)

    return pattern.sub(replace, prompt)


def expand_prompt(prompt: str, embeddings: Sequence[Embedding]) -> str:
    """Spells out multi-vector tokens: ``"a <x> toy"`` becomes ``"a <x> <x>_1 <x>_2 toy"`` for a 3-vector <x>.

    This is diffusers' ``maybe_convert_prompt``, except that it also matches the token in another case (the
    tokenizer does) and never inside a longer token.
    """
    counts: dict[str, int] = {}
    for embedding in embeddings:
        for name in token_names(embedding.token, embedding.num_vectors):
            counts.setdefault(name, 1)
        counts[embedding.token] = embedding.num_vectors
    return _expand(prompt, counts)


def unload_concepts(pipe: Any, embeddings: Sequence[Embedding]) -> None:
    """Takes concepts that ``load_concepts`` put into ``pipe`` out again: their tokens leave every tokenizer and
    their rows every text encoder, through diffusers' own ``unload_textual_inversion``; other concepts stay."""
    names = [name for embedding in embeddings for name in token_names(embedding.token, embedding.num_vectors)]
    if not names:
        return
    pairs = encoder_pairs(pipe)
    for tokenizer, _ in pairs:
        missing = [name for name in names if name not in tokenizer.added_tokens_encoder]
        if missing:
            raise ModelError(
                f"token {missing[0]} is not loaded in this pipeline", "unload only what was loaded"
            )
    for tokenizer, encoder in pairs:
        pipe.unload_textual_inversion(names, tokenizer=tokenizer, text_encoder=encoder)
        encoder.config.vocab_size = encoder.get_input_embeddings().weight.shape[0]


def use_tinv_expansion(pipe: Any) -> Any:
    """Makes the pipeline take prompts as ``expand_prompt`` spells them out; returns the pipeline.

    The pipeline would expand multi-vector tokens itself (diffusers' ``maybe_convert_prompt``), but only in the
    token's exact case and by plain substring replacement, and it would expand an already expanded prompt again
    (``"<x> <x>_1"`` into ``"<x> <x>_1 <x> <x>_1_1"``), so the pipeline's own pass must change nothing.
    """
    pipe.maybe_convert_prompt = lambda prompt, tokenizer: prompt
    return pipe


def prompt_overflow(pipe: Any, text: str, embeddings: Sequence[Embedding]) -> str | None:
    """What the text encoders would not read of ``text`` (already spelled out by ``expand_prompt``): None when it
    fits, else a note naming the words cut off. A prompt that would lose a concept's tokens is refused instead.

    CLIP reads 77 positions, two of them the start and end tokens; diffusers' pipelines cut a longer prompt there
    with only a log line, so a concept written late in a long prompt would silently do nothing while the image's
    metadata says it was used.
    """
    from tinv_cli.errors import TinvError

    note = None
    for tokenizer, _ in encoder_pairs(pipe):
        ids = tokenizer(text, truncation=False).input_ids
        limit = int(tokenizer.model_max_length)
        if len(ids) <= limit:
            continue
        dropped = set(ids[limit - 1 : -1])
        for embedding in embeddings:
            names = token_names(embedding.token, embedding.num_vectors)
            if dropped & set(tokenizer.convert_tokens_to_ids(names)):
                raise TinvError(
                    f"{embedding.token} falls past the text encoder's {limit - 2} tokens in this "
                    f"{len(ids) - 2}-token prompt, so it would be cut off and have no effect",
                    f"shorten the prompt, or move {embedding.token} nearer its start",
                )
        if note is None:
            cut = tokenizer.decode(ids[limit - 1 : -1]).strip()
            note = (
                f"the prompt is {len(ids) - 2} tokens and the text encoder reads {limit - 2}; "
                f"cut off: {cut!r}"
            )
    return note
