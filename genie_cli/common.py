"""Shared CLI plumbing: one-line errors with exit code 2, input expansion (file, folder, stdin)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USAGE = 2  # bad input (also Typer/Click's code for usage errors)
EXIT_SKIPPED = 3  # folder/stdin mode: some inputs were skipped, the rest was processed


def fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print a one-line error on stderr and exit (no traceback)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn GenieError (expected user errors) into one line on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from genie_core.errors import GenieError

        try:
            return func(*args, **kwargs)
        except GenieError as err:
            fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


def stdin_paths() -> list[Path]:
    return [Path(line.strip()) for line in sys.stdin if line.strip()]
