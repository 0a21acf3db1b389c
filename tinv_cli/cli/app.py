"""The Typer application and its one error funnel.

Every command is registered through ``TinvTyper.command``, which wraps it so that tinv's own errors become
``Error: ...`` plus ``Hint: ...`` on stderr and exit code 1. Other exceptions are bugs and keep their traceback.
``TINV_DEBUG=1`` re-raises tinv's errors too, with the traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import typer
from typer.core import TyperGroup

from tinv_cli.errors import ProjectError, TinvError

F = TypeVar("F", bound=Callable[..., Any])


def report(error: TinvError) -> None:
    """Print a tinv error the way every command does: problems first, then one Error line and a hint."""
    if isinstance(error, ProjectError) and len(error.problems) > 1:
        for problem in error.problems:
            typer.echo(f"  {problem}", err=True)
    typer.echo(f"Error: {error.message}", err=True)
    if error.hint:
        typer.echo(f"Hint: {error.hint}", err=True)


def funnel(fn: F) -> F:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TinvError as error:
            if os.environ.get("TINV_DEBUG") == "1":
                raise
            report(error)
            raise typer.Exit(1) from None

    return run  # type: ignore[return-value]


class TinvGroup(TyperGroup):
    """The command group, whose usage errors (``-n 0``, an unknown option) end like every other error: one
    ``Error:`` line, a ``Hint:`` naming the command's help, and exit code 1 (Click's own ending is the usage
    text and exit code 2)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        def run() -> Any:
            return super(TinvGroup, self).main(
                args, prog_name, complete_var, False, windows_expand_args, **extra
            )

        if not standalone_mode:
            return run()
        try:
            result = run()
        except typer.Abort:
            typer.echo("Aborted.", err=True)
            sys.exit(1)
        except Exception as error:
            # Click's exceptions (Typer carries its own copy of Click, so they are recognised by their
            # interface): a message, an exit code and, for usage errors, the context of the command.
            if not (hasattr(error, "format_message") and hasattr(error, "exit_code")):
                raise
            if type(error).__name__ == "NoArgsIsHelpError":  # a bare `tinv`: the help is the answer
                typer.echo(error.format_message())
                sys.exit(0)
            context = getattr(error, "ctx", None)
            where = context.command_path if context is not None else "tinv"
            report(TinvError(error.format_message(), f"see `{where} --help`"))
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


class TinvTyper(typer.Typer):
    """A Typer app whose commands all go through the error funnel."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        register = super().command(*args, **kwargs)

        def decorator(fn: F) -> F:
            register(funnel(fn))
            return fn

        return decorator


app = TinvTyper(
    name="tinv",
    cls=TinvGroup,
    help="Textual Inversion for Stable Diffusion: train, sample, share and convert concept embeddings.",
    no_args_is_help=True,
    rich_markup_mode=None,  # help texts mention [train] and [hub] tables: print them as written
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from tinv_cli import __version__

        typer.echo(f"tinv {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print tinv's version and exit."
    ),
) -> None:
    """Textual Inversion for Stable Diffusion: train, sample, share and convert concept embeddings.

    A project file (concepts.toml) describes your concepts; a registry ($TINV_HOME) keeps every embedding you
    train, import or pull, so any project can use it.
    """
