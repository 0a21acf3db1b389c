"""The one rule for a concept's name: a project's ``[concepts.NAME]``, a registry entry and a Hub repository.

The project file, the registry and ``tinv push`` all check names with this rule, so a name ``tinv check``
accepts is one the registry stores after training and the Hub takes unchanged.
"""

from __future__ import annotations

import re

from tinv_cli.errors import RegistryError

# The same rule as a Hub repository name, so a registry name can be pushed unchanged.
NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,95}\Z")
NAME_RULE = "use letters, digits, '-', '_' and '.', starting with a letter or digit (at most 96 characters)"


def check_name(name: str) -> None:
    """Raise RegistryError unless ``name`` can name a registry entry."""
    if not NAME_RE.match(name):
        raise RegistryError(f"{name!r} cannot name a registry entry", NAME_RULE)


def name_from_token(token: str) -> str:
    """A registry name for a token: ``"<cat-toy>"`` -> ``"cat-toy"``; characters a name cannot hold become '-'."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", token.strip().strip("<>"))
    name = name.lstrip("-._")[:96].rstrip("-.")
    return name or "concept"
