"""Checks of a project that need the base model's tokenizer: placeholders that are already words, and
initializer words that are not one token each."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli.embedding import token_names
from tinv_cli.errors import ModelError, Problem, ProjectError
from tinv_cli.project.config import INITIALIZER_INITS, ModelConfig, Project
from tinv_cli.project.schema import quote, table_label
from tinv_cli.project.toml_lines import KeyPath, key_lines, line_of

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

# ---------------------------------------------------------------------------------------------------------------
# Checks that need the base model's tokenizer.


def initializer_plan(num_tokens: int, vectors: int) -> list[list[int]]:
    """For each of ``vectors`` vectors, the initializer token indices whose embeddings it starts from (mean).

    Token j goes to vector ``j % vectors``; when there are more vectors than tokens, the tokens are cycled,
    so every vector gets at least one token and every token is used.
    """
    if num_tokens < 1 or vectors < 1:
        raise ValueError(
            f"initializer_plan needs at least one token and one vector, got {num_tokens}, {vectors}"
        )
    plan: list[list[int]] = [[] for _ in range(vectors)]
    for j in range(max(vectors, num_tokens)):
        plan[j % vectors].append(j % num_tokens)
    return plan


# Either file set is a complete tokenizer: the original CLIP files, or the single file transformers >= 5 saves.
_TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",))


def initializer_ids(tokenizer: Any, initializer: str) -> list[int]:
    """Token ids of each word of ``initializer``; every word must be one token the tokenizer knows."""
    ids = []
    for word in initializer.split():
        word_ids = tokenizer.encode(word, add_special_tokens=False)
        if len(word_ids) != 1 or word_ids[0] == tokenizer.unk_token_id:
            pieces = " ".join(tokenizer.convert_ids_to_tokens(word_ids))
            raise ModelError(
                f"initializer word {word!r} is not in the base model's vocabulary (it splits into {pieces})",
                "use a common word close to the concept (e.g. toy, cat, painting), or --init random",
            )
        ids.append(word_ids[0])
    if not ids:
        raise ModelError("the initializer is empty", "use a word close to the concept, or --init random")
    return ids


def _local_tokenizer(model: ModelConfig) -> CLIPTokenizer | None:
    """The base model's tokenizer if it is on this machine (a local folder or the HF cache), else None."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    from tinv_cli.models.refs import builtin_folder
    from tinv_cli.models.single_file import config_folder_for

    local = (
        builtin_folder(model.base)
        or config_folder_for(model.base, config=model.config, prediction=model.prediction)
        or Path(model.base)
    )
    if local.is_dir():
        folder = local / "tokenizer"
        if not any(all((folder / name).is_file() for name in names) for names in _TOKENIZER_FILES):
            return None
    else:
        for names in _TOKENIZER_FILES:
            try:
                cached = [
                    try_to_load_from_cache(model.base, f"tokenizer/{name}", revision=model.revision)
                    for name in names
                ]
            except HFValidationError:  # not a Hub id at all (e.g. a folder that does not exist)
                return None
            if all(isinstance(c, str) for c in cached):
                folder = Path(str(cached[0])).parent
                break
        else:
            return None
    # Checked by hand above because transformers >= 5 quietly builds an empty tokenizer when files are missing.
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


def _check_base_model(project: Project, lines: dict[KeyPath, int]) -> str | None:
    """Refuses a ``[model] base`` written as a path that is not there, with its line, and a checkpoint file
    that is no base model tinv knows (its header is read, no weights). A Hub id that is not downloaded yet is
    fine: it is only fetched (and checked) when a command loads it. Returns what a checkpoint was found to be."""
    from tinv_cli.models.refs import looks_like_path
    from tinv_cli.models.single_file import open_single_file, single_file_path

    model = project.model
    base = model.base
    if looks_like_path(base) and not Path(base).expanduser().exists():
        problem = Problem(
            project.path, line_of(lines, ("model", "base")), f"[model] base: {base} does not exist"
        )
        raise ProjectError(
            [problem], "point base at a model folder or file, or write a Hub id such as org/name"
        )
    checkpoint = single_file_path(base)
    if checkpoint is None:
        return None
    try:
        return open_single_file(checkpoint, config=model.config, prediction=model.prediction).detail
    except ModelError as error:
        key = "config" if model.config and "config" in error.message else "base"
        problem = Problem(project.path, line_of(lines, ("model", key)), f"[model] {key}: {error.message}")
        raise ProjectError([problem], error.hint) from None


def check_project(project: Project) -> list[str]:
    """Check every concept's placeholder and initializer against the base model's tokenizer.

    Returns notes (including one saying the checks were skipped when the tokenizer is not on this machine);
    raises ``ProjectError`` with every problem at once.
    """
    try:
        lines = key_lines(project.path.read_text(encoding="utf-8"))
    except OSError:
        lines = {}
    found = _check_base_model(project, lines)
    tokenizer = _local_tokenizer(project.model)
    if tokenizer is None:
        return [f"tokenizer of {project.model.base} not available locally; token checks skipped"]

    vocab = tokenizer.get_vocab()
    notes: list[str] = [found] if found else []
    problems: list[Problem] = []
    for name, concept in project.concepts.items():
        label = table_label(("concepts", name))
        for entry in token_names(concept.token, concept.vectors):
            pieces = tokenizer.tokenize(entry)
            if entry in vocab or (
                len(pieces) == 1 and pieces[0] in vocab and pieces[0] != tokenizer.unk_token
            ):
                problems.append(
                    Problem(
                        project.path,
                        line_of(lines, ("concepts", name, "token")),
                        f"{label} {entry} is already a word of the tokenizer; pick another token",
                    )
                )
                break
        if concept.init not in INITIALIZER_INITS or concept.initializer is None:
            continue
        try:
            ids = initializer_ids(tokenizer, concept.initializer)
        except ModelError as error:
            line = line_of(lines, ("concepts", name, "initializer"))
            problems.append(Problem(project.path, line, f"{label} {error.message}; {error.hint}"))
            continue
        if len(ids) > 1:
            n = concept.vectors
            notes.append(
                f"concept {name}: initializer {quote(concept.initializer)} is {len(ids)} words; "
                f"with {n} vector{'s' if n > 1 else ''}, vector i starts from the mean of the initializer's "
                f"words j where j % {n} == i (words cycled when {n} > {len(ids)})"
            )
    if problems:
        raise ProjectError(
            sorted(problems, key=lambda p: p.line), "change the token or initializer and run again"
        )
    return notes
