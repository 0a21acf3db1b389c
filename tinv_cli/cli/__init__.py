"""The ``tinv`` command line. Importing this module imports no ML library."""

# isort: skip_file
# The import order is the order of the commands in `tinv --help`: the workflow first, then the registry.

from __future__ import annotations

from tinv_cli.cli import project_cmds  # noqa: F401  (init, check)
from tinv_cli.cli import train_cmd  # noqa: F401  (train)
from tinv_cli.cli import sample_cmd  # noqa: F401  (sample)
from tinv_cli.cli import eval_cmd  # noqa: F401  (eval)
from tinv_cli.cli import hub_cmds  # noqa: F401  (push, pull, search)
from tinv_cli.cli import registry_cmds  # noqa: F401  (list, show, rm, import, export, home)
from tinv_cli.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
