"""Shared CLI plumbing: one-line errors with exit code 2, input expansion (file, folder, stdin),
JSON lines and a progress bar. No torch here: help must stay instant."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USAGE = 2  # bad input (also Typer/Click's code for usage errors)
EXIT_SKIPPED = 3  # folder/stdin mode: some inputs were skipped, the rest was processed


def fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print a one-line error on stderr and exit (no traceback)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn GenieError (expected user errors) and any OSError the command did not catch (a file
    it cannot read or write) into one line on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from genie_core.errors import GenieError
        from genie_core.io.outputs import describe_os_error

        try:
            return func(*args, **kwargs)
        except GenieError as err:
            fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
        except OSError as err:
            fail(describe_os_error(err))
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


def stdin_paths() -> list[Path]:
    return [Path(line.strip()) for line in sys.stdin if line.strip()]


# ---- inputs: one file, a folder (mirrored), or paths on stdin ------------------------------

@dataclass(frozen=True)
class Job:
    """One input file and the output it becomes."""

    src: Path
    dst: Path


@dataclass
class Inputs:
    jobs: list[Job]
    batch: bool  # folder or stdin mode: bad files are skipped (exit 3), not fatal
    missing: list[Path] = field(default_factory=list)  # stdin paths that do not exist
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # folders that cannot be listed


def _mirror(files: list[Path], root: Path, out_dir: Path, suffix: str) -> list[Job]:
    """Mirror ``files`` (under ``root``) into ``out_dir`` with ``suffix``; ``a.mp4`` and ``a.gif``
    side by side keep their full names (``a.mp4.npz``) so neither overwrites the other."""
    rels = [f.relative_to(root) for f in files]
    plain = [r.with_suffix(suffix) for r in rels]
    clash = {p for p in plain if plain.count(p) > 1}
    return [Job(f, out_dir / (p if p not in clash else r.with_name(r.name + suffix)))
            for f, r, p in zip(files, rels, plain)]


def expand_inputs(source: str, output: Path, suffix: str, writes: bool = True,
                  also_read: tuple[Path | None, ...] = ()) -> Inputs:
    """Resolve INPUT (a file, a folder searched recursively, or ``-`` for paths on stdin, one
    per line) and OUTPUT (a file, or a folder that mirrors the input tree) into jobs. With
    ``writes``, every output is checked before any work (``check_jobs``)."""
    inputs = _expand(source, output, suffix)
    if writes:
        check_jobs(inputs, output, also_read)
    return inputs


def check_jobs(inputs: Inputs, output: Path, also_read: tuple[Path | None, ...] = ()) -> None:
    """No output may be an input, another file the command reads (``also_read``: a checkpoint)
    or the ground-truth sidecar beside an input video (same path, hard link or symlink), and the
    output folder must be writable. Exit 2 before anything is written."""
    from genie_core.io.outputs import InputGuard, check_writable

    srcs = [job.src for job in inputs.jobs]
    guard = InputGuard([*srcs, *also_read], videos=srcs)
    for job in inputs.jobs:
        guard.check(job.dst)
    if inputs.batch:
        check_writable(output, folder=True)
    else:
        check_writable(inputs.jobs[0].dst)


def _expand(source: str, output: Path, suffix: str) -> Inputs:
    from genie_core.io.video import find_videos

    if source == "-":
        if output.exists() and not output.is_dir():
            fail(f"with '-' the output must be a folder, and {output} is a file")
        paths = stdin_paths()
        if not paths:
            fail("no paths on stdin")
        found = [p for p in paths if p.is_file()]
        missing = [p for p in paths if not p.is_file()]
        files = list(dict.fromkeys(p.resolve() for p in found))
        root = Path(os.path.commonpath([f.parent for f in files])) if files else Path.cwd()
        return Inputs(_mirror(files, root, output, suffix), batch=True, missing=missing)
    path = Path(source)
    if path.is_dir():
        if output.exists() and not output.is_dir():
            fail(f"input {path} is a folder, so the output must be a folder, and {output} is a file")
        unreadable: list[tuple[Path, str]] = []
        files = find_videos(path, unreadable)
        if not files:
            fail(f"no videos found in {path}" + (f" ({unreadable[0][0]}: {unreadable[0][1]})"
                                                 if unreadable else ""))
        return Inputs(_mirror(files, path, output, suffix), batch=True, unreadable=unreadable)
    if not path.exists():
        fail(f"file not found: {path}")
    if output.is_dir():
        return Inputs([Job(path, output / (path.stem + suffix))], batch=False)
    return Inputs([Job(path, output)], batch=False)


def check_suffix(path: Path, allowed: tuple[str, ...], what: str) -> None:
    if path.suffix.lower() not in allowed:
        fail(f"{what} {path} must end in {' or '.join(allowed)}")


def parse_size(text: str | None, option: str = "--size", minimum: int = 1) -> tuple[int, int] | None:
    """``64x96`` (H x W) or ``64`` (square) to (H, W), each side in [minimum, MAX_FRAME_SIDE]."""
    if text is None:
        return None
    from genie_core.config.train import MAX_FRAME_SIDE

    parts = text.lower().split("x")
    try:
        if len(parts) in (1, 2):
            h, w = int(parts[0]), int(parts[-1])
            if minimum <= min(h, w) and max(h, w) <= MAX_FRAME_SIDE:
                return h, w
            fail(f"{option} must be between {minimum}x{minimum} and {MAX_FRAME_SIDE}x{MAX_FRAME_SIDE}, "
                 f"got '{text}'")
    except ValueError:
        pass
    fail(f"{option} expects HxW or N (e.g. 64x64 or 64), got '{text}'")
    raise AssertionError  # unreachable: fail() exits


# ---- output: JSON lines or a human summary on stdout, progress on stderr -------------------

def json_number(value: float) -> float | None:
    """JSON has no inf/nan: a perfect reconstruction's PSNR (inf) becomes null."""
    return float(value) if math.isfinite(value) else None


def emit_json(record: dict[str, Any]) -> None:
    typer.echo(json.dumps(record, sort_keys=False))


def progress(total: int, label: str) -> "Progress":
    """A Rich progress bar on stderr for many files (none for one file or when stderr is not a
    terminal). ``with progress(n, "tokenize") as bar: bar.out(line); bar.err(line); bar.advance()``
    keeps result lines (stdout) and messages (stderr) above the bar."""
    return Progress(total, label)


class Progress:
    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.bar, self.task = total, label, None, None

    def __enter__(self) -> "Progress":
        from rich.console import Console

        console = Console(stderr=True)
        if self.total > 1 and console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(),
                                    TimeRemainingColumn(), console=console, transient=True,
                                    redirect_stdout=False, redirect_stderr=False)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total)
        return self

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)  # type: ignore[arg-type]

    def out(self, text: str) -> None:
        """A result line on stdout. While the bar is drawn and stdout is the same terminal, it is
        printed above the bar; piped stdout is written as is."""
        if self.bar is not None and sys.stdout.isatty():
            self.bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            typer.echo(text)

    def err(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            typer.echo(text, err=True)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


def skipped_line(path: Path, message: str) -> str:
    """Folder/stdin mode: the line naming a skipped input (stderr)."""
    return f"skipped {message}" if message.startswith(str(path)) else f"skipped {path}: {message}"


def report_skipped(bar: "Progress", src: Path, dst: Path | None, message: str, json_out: bool) -> None:
    """Folder/stdin mode: name a skipped file on stderr (and as a JSON error line with --json)."""
    bar.err(skipped_line(src, message))
    if json_out:
        bar.out(json.dumps({"input": str(src), "output": str(dst) if dst else None,
                            "status": "error", "error": message}))


def run_jobs(inputs: Inputs, label: str, json_out: bool, work: Callable[[Job], Any],
             report: Callable[["Progress", Job, Any, float], None],
             show_dst: bool = True) -> int:
    """Run ``work(job)`` for every input under a progress bar, then ``report(bar, job, result,
    seconds)``. One input: its GenieError or OSError propagates (exit 2). Folder/stdin mode: a
    file that fails (unreadable, corrupt, ...) is skipped and named on stderr (a JSON error line
    with --json); returns how many were. An output that cannot be written (OutputError: full
    disk, read-only folder) stops every mode with exit 2: the next file would fail the same way."""
    import time

    from genie_core.errors import GenieError, OutputError
    from genie_core.io.outputs import describe_os_error

    skipped = 0
    with progress(len(inputs.jobs), label) as bar:
        for path in inputs.missing:
            skipped += 1
            report_skipped(bar, path, None, "not a file", json_out)
        for path, reason in inputs.unreadable:
            skipped += 1
            report_skipped(bar, path, None, reason, json_out)
        for job in inputs.jobs:
            start = time.perf_counter()
            try:
                result = work(job)
            except (GenieError, OSError) as err:
                if not inputs.batch or isinstance(err, OutputError):
                    raise
                message = (describe_os_error(err) if isinstance(err, OSError)
                           else str(err).splitlines()[0] if str(err) else type(err).__name__)
                skipped += 1
                report_skipped(bar, job.src, job.dst if show_dst else None, message, json_out)
            else:
                report(bar, job, result, time.perf_counter() - start)
            bar.advance()
    return skipped


def exit_if_skipped(inputs: Inputs, skipped: int, done_what: str) -> None:
    """Folder/stdin mode: after a run that skipped files, say how many and exit 3."""
    if skipped:
        done = len(inputs.jobs) + len(inputs.missing) + len(inputs.unreadable) - skipped
        typer.echo(f"{done_what} {done} file(s), skipped {skipped}", err=True)
        raise typer.Exit(EXIT_SKIPPED)


def open_tokenizer(checkpoint: Path | None, preset: str | None, overrides: list[str] | None,
                   device: str, precision: str, threads: int, window: int | None,
                   size: tuple[int, int] | None) -> Any:
    """The tokenizer a command asked for (``genie_core.tasks.tokenize.LoadedTokenizer``); imports torch."""
    from genie_core.runtime import set_threads
    from genie_core.tasks import tokenize as api
    if checkpoint is not None and preset is not None:
        fail("give --checkpoint or --preset, not both")
    if checkpoint is not None and overrides:
        fail("--set changes a preset; a checkpoint carries its own config")
    if checkpoint is None and preset is None:
        fail("a tokenizer is needed: --checkpoint FILE (or --preset NAME for an untrained one)")
    set_threads(threads)
    tok = api.load_tokenizer(checkpoint, preset=preset, overrides=overrides or (), device=device,
                             window=window)
    if checkpoint is None:
        warn(f"no --checkpoint: using an UNTRAINED tokenizer from preset '{preset}' "
             "(fine for smoke tests, meaningless tokens)")
    if size is not None:
        api.frame_size(tok, size, size)  # a bad --size fails once here, not once per file
    elif tok.resolution is None:
        warn(f"{checkpoint} does not record the frame size it was trained at: frames keep their "
             f"own size (cropped to a multiple of {tok.space_downsample}); --size HxW to choose")
    return tok


def world_file(value: str | Path) -> tuple[Path, Any]:
    """A ``--world`` value (a file, or a shipped world's name) as (weights file, the shipped
    ``genie_core.tasks.worlds.ShippedWorld`` or None); a bad one exits 2 naming the shipped worlds."""
    from genie_core.errors import GenieError
    from genie_core.tasks.worlds import resolve_world

    try:
        return resolve_world(value)
    except GenieError as err:
        fail(str(err))
    raise AssertionError  # fail() exits


# ---- worlds (genie play, genie evaluate) -----------------------------------------------------

def open_world(world: Optional[str], preset: Optional[str], overrides: Optional[list[str]],
               device: str, precision: str, threads: int, seed: int = 0) -> Any:
    """The ``genie_core.models.world.World`` a command asked for (``world``: a file or a shipped world's
    name), on its device; imports torch."""
    if world is not None and preset is not None:
        fail("give --world or --preset, not both")
    if world is not None and overrides:
        fail("--set changes a preset; a world bundle carries its own config")
    if world is None and preset is None:
        fail("a world is needed: --world RUN/world.safetensors (from `genie train --stage all`), "
             "or --preset NAME for an UNTRAINED world to try the controls")
    import torch

    from genie_core.models.load import load_model
    from genie_core.models.world import World
    from genie_core.runtime import resolve_device, set_threads, valid_seed

    set_threads(threads)
    dev = resolve_device(device)
    if world is not None:
        path, _ = world_file(world)
        game = load_model(path, "world", device=str(dev))
    else:
        torch.manual_seed(valid_seed(seed))  # the same untrained world for the same seed
        game = World.from_preset(preset, tuple(overrides or ())).to(dev)
        warn(f"no --world: using an UNTRAINED world from preset '{preset}' (its frames mean "
             "nothing; train one with `genie train --stage all`)")
    game.precision = precision
    return game


def set_sampling(game: Any, steps: Optional[int], temperature: Optional[float],
                 render: Optional[str] = None, **more: Any) -> None:
    """Replace the world's default sampling (MaskGIT steps, temperature, rendering, and any other
    ``SamplingConfig`` field in ``more``) where given (not None)."""
    import dataclasses

    given = {"steps": steps, "temperature": temperature, "render": render, **more}
    changes = {k: v for k, v in given.items() if v is not None}
    game.sampling = dataclasses.replace(game.sampling, **changes)
