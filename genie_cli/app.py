"""The Typer app. Command modules import torch only inside their functions, so help is instant."""

from __future__ import annotations

import typer

from genie_cli import evaluate as evaluate_cmd
from genie_cli import infer_actions as infer_actions_cmd
from genie_cli import play as play_cmd
from genie_cli import reconstruct, tokenize
from genie_cli import train as train_cmd

app = typer.Typer(
    name="genie",
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
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("infer-actions")(infer_actions_cmd.infer_actions)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from genie_core.version import __version__
        typer.echo(__version__)
        raise typer.Exit(0)


def main() -> None:
    app()
