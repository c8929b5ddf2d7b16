"""The ``normpipe`` command line's app, its console, and the one-line error rule.

Bad input prints one line starting with ``error:`` and exits with status 2; no
traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console

from normpipe import __version__
from normpipe.errors import NormpipeError

app = typer.Typer(
    name="normpipe",
    help="Global, out-of-core normalization of partitioned Parquet datasets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Wide enough for the stats table when the output is a pipe or a file.
console = Console(width=None if sys.stdout.isatty() else 160)

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def clean_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn normpipe's errors into one line on stderr and a non-zero exit."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except NormpipeError as err:
            raise fail(str(err)) from None
        except KeyboardInterrupt:
            raise fail("interrupted; no output was committed", 130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"normpipe {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Global, out-of-core normalization of partitioned Parquet datasets."""
