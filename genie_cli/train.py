"""`genie train`: train the tokenizer, the latent action model and the dynamics model on a folder
of videos (Genie §3), one stage or all in order; progress on stderr, results on stdout."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, get_args

import typer

from genie_cli import options as opt
from genie_cli.common import emit_json, fail, handle_errors, warn

StageName = Literal["tokenizer", "lam", "dynamics", "all"]
STAGE_CHOICES: tuple[str, ...] = get_args(StageName)
EXIT_INTERRUPTED = 130


class _Display:
    """Renders the loop's events: a Rich progress bar (step, loss, steps/s, ETA) on stderr."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]} steps/s"), TimeElapsedColumn(), TextColumn("eta"),
            TimeRemainingColumn(), console=self.console, transient=False)
        self.task: Any = None
        self.interrupted: dict[str, Any] | None = None
        self._t0, self._s0 = 0.0, 0

    def __call__(self, e: dict[str, Any]) -> None:
        kind = e["event"]
        if kind == "start":
            self.progress.start()
            if self.task is not None:
                self.progress.stop_task(self.task)
            self.task = self.progress.add_task(e["stage"], total=e["total"], completed=e["step"],
                                               loss=float("nan"), rate="-")
            self._t0, self._s0 = time.perf_counter(), e["step"]
            params = e.get("parameters")
            where = (f"step {e['step']} (up to {e['total']}), time budget {e['minutes']:g} min "
                     f"({e.get('wall', 0.0) / 60:.1f} spent), the schedule fitted to the steps that fit"
                     if e.get("minutes") else f"step {e['step']}/{e['total']}")
            self.console.print(f"{e['stage']}: {where}"
                               + (f", {params / 1e6:.2f}M parameters" if params else "")
                               + f" -> {e['dir']}")
        elif kind == "step":
            rate = (e["step"] - self._s0) / max(1e-9, time.perf_counter() - self._t0)
            self.progress.update(self.task, completed=e["step"], total=e["total"], loss=e["loss"],
                                 rate=f"{rate:.2f}")
        elif kind == "eval":
            shown = "  ".join(f"{k} {v:.4g}" for k, v in e["metrics"].items())
            self.console.print(f"{e['stage']} step {e['step']}: {shown}")
        elif kind in ("warning", "info"):
            self.console.print(("warning: " if kind == "warning" else "") + e["message"])
        elif kind == "interrupted":
            self.interrupted = e

    def close(self) -> None:
        self.progress.stop()


@handle_errors
def train(
    data: Annotated[Path, typer.Option("--data", "-d", help="Folder of videos (mp4, gif, webm, avi), searched recursively.")],
    preset: opt.Preset = "small",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default runs/<preset>-<time>).")] = None,
    stage: Annotated[StageName, typer.Option("--stage", help="The stage to train; all: every stage, in order.")] = "tokenizer",
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimiser steps per stage (default: the preset's); with a time budget, the most it may take.", min=1)] = None,
    minutes: Annotated[Optional[float], typer.Option("--minutes", help="Time budget per stage, in minutes (training, evaluations, checkpoints): train until it is spent or --steps is reached, the learning-rate schedule fitted to the steps that fit; 0: no budget (default: the preset's).", min=0, max=1e6)] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Clips per step per process.", min=1)] = None,
    overrides: opt.Overrides = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly where it stopped.")] = False,
    stop_after: Annotated[Optional[int], typer.Option("--stop-after", help="Stop with a checkpoint at this step (the schedule still spans --steps); continue later with --resume.", min=1)] = None,
    device: opt.Device = "auto",
    precision: opt.OptionalPrecision = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed (default: the preset's).", min=0, max=2 ** 63 - 1)] = None,
    threads: opt.OptionalThreads = None,
    compile_: Annotated[bool, typer.Option("--compile", help="Run the model and loss through torch.compile (inductor; the first steps wait for the compiler). Checkpoints are the same files.")] = False,
    json_out: Annotated[bool, opt.json_option("Print the final validation metrics as one JSON line per stage.")] = False,
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="Trained tokenizer (or world) checkpoint for --stage dynamics (default: RUN/tokenizer/last.safetensors).")] = None,
    lam: Annotated[Optional[Path], typer.Option("--lam", help="Trained LAM (or world) checkpoint for --stage dynamics (default: RUN/lam/last.safetensors).")] = None,
) -> None:
    """Train on a folder of videos. Writes RUN/config.yaml and, per stage, RUN/<stage>/ with
    last.safetensors, periodic step checkpoints, metrics.jsonl and samples/*.png.

    Examples:

      genie train --preset small --data clips/ --out runs/coinrun

      genie train --preset small --data clips/ --out runs/coinrun --resume --steps 8000

      genie train --preset small --data clips/ --out runs/quick --minutes 20

      torchrun --nproc_per_node=2 -m genie_cli train --preset small --data clips/ --out runs/ddp

    Ctrl-C saves a checkpoint and stops (exit 130); --resume continues exactly.
    """
    from genie_core.config import load_preset
    from genie_core.training.train import resolve_stages
    from genie_core.training.train import train as run_training

    names = resolve_stages(stage)
    sets = list(overrides or [])
    for name in names:  # explicit flags win over --set
        sets += [f"train.{name}.steps={steps}"] if steps is not None else []
        sets += [f"train.{name}.batch_size={batch_size}"] if batch_size is not None else []
        sets += [f"train.{name}.minutes={minutes}"] if minutes is not None else []
    sets += [f"train.precision={precision}"] if precision is not None else []
    sets += [f"train.seed={seed}"] if seed is not None else []
    sets += [f"train.num_threads={threads}"] if threads is not None else []
    cfg = load_preset(preset, sets)
    if out is None:
        if resume:
            fail("--resume needs --out RUN (the run folder to continue)")
        out = Path("runs") / f"{Path(preset).stem}-{time.strftime('%Y%m%d-%H%M%S')}"

    _check_run_folder(out, data, names, tokenizer, lam)

    rank0 = int(os.environ.get("RANK", "0")) == 0
    display = _Display() if rank0 else None
    try:
        results = run_training(cfg, data, out, stage=stage, resume=resume, device=device,
                               stop_at=stop_after, on_event=display,
                               inputs={"tokenizer": tokenizer, "lam": lam}, compile=compile_)
    finally:
        if display is not None:
            display.close()
    if not rank0:
        return
    if display is not None and display.interrupted:
        warn(f"interrupted at step {display.interrupted['step']}; checkpoint saved, continue with "
             f"--resume --out {out}")
        raise typer.Exit(EXIT_INTERRUPTED)
    for name, metrics in results.items():
        path = out / name / "last.safetensors"
        if json_out:
            emit_json({"stage": name, "checkpoint": str(path), **metrics})
        else:
            shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            typer.echo(f"{name}: {shown}  -> {path}")


def _check_run_folder(out: Path, data: Path, stages: list[str], *checkpoints: Optional[Path]) -> None:
    """Before any work: the run folder is writable, is not the data folder, and none of the files
    the run writes is a checkpoint given with --tokenizer / --lam (same path, hard or symbolic link)."""
    from genie_core.errors import OutputError
    from genie_core.io.outputs import InputGuard, check_writable

    check_writable(out, folder=True)
    if data.is_dir() and out.is_dir() and os.path.samefile(out, data):
        raise OutputError(f"--out {out} is the data folder; choose another run folder")
    guard = InputGuard(checkpoints)
    for name in stages:
        guard.check(out / name / "last.safetensors")
    if "dynamics" in stages:
        guard.check(out / "world.safetensors")

