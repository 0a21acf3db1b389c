"""The ``tinv`` command line. Importing this module imports no ML library."""

from __future__ import annotations

from tinv_cli.cli import project_cmds, registry_cmds  # noqa: F401  (registers the commands)
from tinv_cli.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
