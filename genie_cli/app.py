"""The Typer app. Command modules import torch only inside their functions, so help is instant."""

from __future__ import annotations

import errno
import sys
from typing import Any

import typer
import typer.core
from typer.core import TyperGroup

# The click Typer runs on (recent Typer versions vendor their own copy).
_click: Any = getattr(typer.core, "_click", None) or __import__("click")

from genie_cli import evaluate as evaluate_cmd  # noqa: E402  (after _click)
from genie_cli import infer_actions as infer_actions_cmd  # noqa: E402  (after _click)
from genie_cli import play as play_cmd  # noqa: E402  (after _click)
from genie_cli import reconstruct, tokenize  # noqa: E402  (after _click)
from genie_cli import record as record_cmd  # noqa: E402  (after _click)
from genie_cli import train as train_cmd  # noqa: E402  (after _click)


class OneLineErrors(TyperGroup):
    """Click's own usage errors (a value out of range, a missing option, an unknown flag) as one
    line ``error: ...`` on stderr with exit code 2, like every other bad input, instead of the
    boxed usage panel."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _click.exceptions.NoArgsIsHelpError as err:  # bare `genie`: the help, as before
            try:
                from typer import rich_utils

                rich_utils.rich_format_error(err)
            except ImportError:
                err.show()
            sys.exit(err.exit_code)
        except _click.exceptions.ClickException as err:
            # Typer checks typed values (Literal choices) through pydantic, whose messages start
            # with "Value error, "; the line reads the same without it.
            message = err.format_message().replace("Value error, ", "")
            lines = [line.strip() for line in message.splitlines() if line.strip()]
            _click.echo(f"error: {lines[0] if lines else type(err).__name__}", err=True)
            sys.exit(2 if isinstance(err, _click.exceptions.UsageError) else err.exit_code)
        except typer.Abort:
            _click.echo("interrupted", err=True)
            sys.exit(130)
        except OSError as err:  # a closed pipe (`genie --help | head`): stop quietly, as click does
            if err.errno != errno.EPIPE:
                raise
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="genie",
    cls=OneLineErrors,
    help="Learn a playable world model from unlabelled video (after DeepMind's Genie).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)

app.command("tokenize")(tokenize.tokenize)
app.command("reconstruct")(reconstruct.reconstruct)
app.command("train")(train_cmd.train)
app.command("play")(play_cmd.play)
app.command("worlds")(play_cmd.worlds)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("infer-actions")(infer_actions_cmd.infer_actions)
app.command("record")(record_cmd.record)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from genie_core.version import __version__
        typer.echo(__version__)
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        raise _click.exceptions.UsageError("missing command (genie --help lists them)")


def main() -> None:
    app()
