"""tinv's own error types.

Core code raises these; the CLI turns each into a one-line ``Error: ...`` with an optional hint and exit code 1.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class TinvError(Exception):
    """A problem the user can fix. ``hint`` says what to do next."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class NotFoundError(TinvError):
    """A concept, registry entry, file or model that does not exist."""


class FormatError(TinvError):
    """An embedding file that cannot be read, is unsafe, or holds unusable tensors."""


class RegistryError(TinvError):
    """A registry operation that cannot be carried out."""


class ModelError(TinvError):
    """A base model that is missing or does not fit a concept (e.g. a text-encoder width mismatch)."""


class DataError(TinvError):
    """Training images that cannot be used."""


class HubError(TinvError):
    """A Hugging Face Hub request that failed: access refused, Hub unreachable, or offline mode."""


@dataclass(frozen=True)
class Problem:
    """One mistake in a project file, located by file and line (line 0: the file as a whole)."""

    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.message}"


class ProjectError(TinvError):
    """A project file with one or more problems, all reported at once."""

    def __init__(self, problems: list[Problem], hint: str | None = None) -> None:
        self.problems = problems
        first = problems[0]
        message = str(first) if len(problems) == 1 else f"{first.path}: {len(problems)} problems"
        super().__init__(message, hint or "fix the file and run `tinv check` again")
