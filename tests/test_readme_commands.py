"""Every `genie` command the README shows in its code blocks exists: the subcommand is registered
and the command line parses (each option is one the command accepts, each value one it takes).
Nothing is run: the lines are only parsed by the commands' Click objects."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from genie_cli.app import _click, app

README = Path(__file__).resolve().parents[1] / "README.md"
SHELL_BREAKS = {"|", "||", "&&", ";", "<", ">", ">>", "2>", "&"}


def documented_commands(text: str) -> list[list[str]]:
    """The argument lists (after ``genie`` / ``-m genie_cli``) of every genie command line in the
    fenced code blocks of ``text``: continuation lines joined, comments dropped, split at pipes
    and redirections."""
    commands: list[list[str]] = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            if "genie" not in line:
                continue
            lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;<>")
            lexer.whitespace_split, lexer.commenters = True, "#"
            try:
                tokens = list(lexer)
            except ValueError:  # not shell (a Python line, prose): not a command line
                continue
            start = 0
            for i, token in enumerate([*tokens, "|"]):
                if token in SHELL_BREAKS or i == len(tokens):
                    words = tokens[start:i]
                    if words[:1] == ["genie"]:
                        commands.append(words[1:])
                    elif "-m" in words and words[words.index("-m") + 1:][:1] == ["genie_cli"]:
                        commands.append(words[words.index("-m") + 2:])
                    start = i + 1
    return commands


COMMANDS = documented_commands(README.read_text())
ROOT = typer.main.get_command(app)


def test_the_readme_documents_commands() -> None:
    """The parser finds the commands the README is built around (a broken parser finds none)."""
    names = {words[0] for words in COMMANDS if words and not words[0].startswith("-")}
    assert {"tokenize", "reconstruct", "train", "play", "evaluate", "infer-actions", "record"} <= names
    assert ["tokenize", "-", "-o", "tokens/", "-c", "tok.safetensors"] in COMMANDS  # after a pipe


def test_parser_joins_lines_and_drops_comments() -> None:
    text = "```bash\ngenie train --preset small \\\n  --stage lam   # a comment\nls | genie play -w x\n```\n"
    assert documented_commands(text) == [["train", "--preset", "small", "--stage", "lam"],
                                         ["play", "-w", "x"]]


def _options(command: Any) -> set[str]:
    return {name for p in command.params if p.param_type_name == "option"
            for name in (*p.opts, *p.secondary_opts)} | {"--help"}


def problem(words: list[str]) -> str | None:
    """Why ``genie WORDS`` would not parse (None: it parses), from the commands' Click objects."""
    if not words or words[0].startswith("-"):  # genie --version / --help
        unknown = set(words) - _options(ROOT)
        return f"genie: unknown option(s) {sorted(unknown)}" if unknown else None
    name, args = words[0], words[1:]
    command = ROOT.commands.get(name)  # type: ignore[attr-defined]
    if command is None:
        return f"`genie {name}` is not a command"
    used = {a.split("=", 1)[0] for a in args if a.startswith("-") and a != "-"}
    if not used <= _options(command):
        return f"genie {name}: unknown option(s) {sorted(used - _options(command))}"
    try:  # option values, choices and required options, as the command would parse them
        command.make_context(f"genie {name}", list(args))
    except typer.Exit:  # an eager option such as --help
        pass
    except _click.exceptions.ClickException as err:
        return f"genie {' '.join(words)}: {err.format_message()}"
    return None


@pytest.mark.parametrize("words", COMMANDS, ids=lambda words: " ".join(words)[:60])
def test_documented_command_exists_and_parses(words: list[str]) -> None:
    assert problem(words) is None


@pytest.mark.parametrize("words, fragment", [
    (["trian", "--data", "clips/"], "not a command"),
    (["train", "--data", "clips/", "--stages", "all"], "--stages"),
    (["train", "--data", "clips/", "--stage", "everything"], "everything"),
    (["train", "--stage", "all"], "data"),
    (["play", "--world", "x", "--clips", "3"], "--clips"),
    (["--versions"], "--versions"),
])
def test_a_line_that_would_not_parse_is_caught(words: list[str], fragment: str) -> None:
    found = problem(words)
    assert found is not None and fragment in found
