"""`genie infer-actions`: one latent action per frame transition of a video, from a trained latent
action model (Genie §2.1); ``--against-truth`` shows what each latent action means."""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from genie_cli import options as opt
from genie_cli.common import (
    Job,
    Progress,
    check_jobs,
    check_suffix,
    exit_if_skipped,
    expand_inputs,
    fail,
    handle_errors,
    parse_size,
    run_jobs,
    warn,
    world_file,
)


@handle_errors
def infer_actions(
    source: Annotated[str, typer.Argument(
        metavar="INPUT", help="A video, a folder of videos (searched recursively), or - to read "
        "paths from stdin, one per line.")],
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="A .json or .npz for one video; for a folder or -, a folder that "
        "mirrors the input tree. Without it nothing is written (results go to stdout).")] = None,
    checkpoint: opt.Checkpoint = None,
    world: Annotated[Optional[str], opt.world_option(
        "Use the latent action model inside this world: a shipped world's name "
        "(genie play --list) or a world file.")] = None,
    preset: Annotated[Optional[str], opt.preset_option(
        "Without a checkpoint: an UNTRAINED LAM from this preset "
        "(smoke tests only; its actions mean nothing).")] = None,
    overrides: opt.Overrides = None,
    file_format: Annotated[Literal["json", "npz"], typer.Option(
        "--format", help="Action file format in folder / stdin mode: json or npz.")] = "json",
    against_truth: Annotated[bool, typer.Option(
        "--against-truth", help="Compare with the ground-truth actions in the videos' JSON "
        "sidecars: table of latent against true actions, NMI, best-mapping accuracy.")] = False,
    size: Annotated[Optional[str], opt.size_option("Frame size HxW (default: the size the LAM was trained at).")] = None,
    window: Annotated[Optional[int], opt.window_option("Frames per window (default: the LAM's context_frames).",
                                                       min=2)] = None,
    overlap: Annotated[Optional[int], typer.Option(
        "--overlap", help="Frames shared by consecutive windows (default: the LAM's).", min=1)] = None,
    device: opt.Device = "auto",
    precision: opt.Precision = "fp32",
    threads: opt.Threads = 0,
    json_out: opt.Json = False,
) -> None:
    """Infer latent actions: T frames give T-1 actions, actions\\[t] takes frame t to frame t+1.

    Examples:

      genie infer-actions clip.mp4 -c lam.safetensors -o actions.json

      genie infer-actions clips/ --world world.safetensors -o actions/ --json

      genie infer-actions clips/ -c lam.safetensors --against-truth

    Exit codes: 0 all done; 2 bad input (nothing written);
    3 folder or stdin mode: some inputs were skipped (each named on stderr), the rest processed.
    """
    if sum(x is not None for x in (checkpoint, world, preset)) != 1:
        fail("give exactly one of --checkpoint FILE, --world BUNDLE or --preset NAME")
    if overrides and preset is None:
        fail("--set changes a preset; a checkpoint carries its own config")
    hw = parse_size(size)
    world_path = world_file(world)[0] if world is not None else None
    # Without -o nothing is written: jobs still need a (never used) destination.
    target = output if output is not None else Path(tempfile.gettempdir()) / f"genie-unused-{uuid.uuid4().hex}"
    inputs = expand_inputs(source, target, "." + file_format, writes=False)
    if output is not None:
        if not inputs.batch:
            check_suffix(inputs.jobs[0].dst, (".json", ".npz"), "output")
        check_jobs(inputs, output, also_read=(checkpoint, world_path))

    from genie_core.runtime import set_threads
    from genie_core.tasks import infer_actions as api

    set_threads(threads)
    lam = api.load_lam(checkpoint, world=world_path, preset=preset, overrides=overrides or (), device=device)
    if preset is not None:
        warn(f"using an UNTRAINED latent action model from preset '{preset}' (its actions mean nothing)")

    pairs: list[tuple[Any, Any]] = []
    names: dict[int, str] = {}
    no_truth: list[Path] = []
    bad_truth: list[str] = []  # sidecars that exist but cannot be used, with the reason

    def work(job: Job) -> tuple[Any, dict]:
        actions, meta = api.infer_video_actions(lam, job.src, size=hw, window=window,
                                                overlap=overlap, precision=precision)
        if output is not None:
            api.save_actions(job.dst, actions, meta)
        return actions, meta

    def report(bar: Progress, job: Job, result: tuple[Any, dict], seconds: float) -> None:
        actions, meta = result
        _report_ok(bar, job.src, job.dst if output else None, actions, meta, seconds, json_out)
        if against_truth:
            problems: list[str] = []
            truth, true_names = api.read_true_actions(job.src, meta["num_frames"], warn=problems.append)
            if problems:
                bad_truth.extend(problems)
                for message in problems:
                    bar.err(f"warning: {message}; left out of the comparison")
            elif truth is None:
                no_truth.append(job.src)
            else:
                pairs.append((actions, truth))
                names.update({i: n for i, n in enumerate(true_names or []) if n != str(i)})

    skipped = run_jobs(inputs, "infer-actions", json_out, work, report, show_dst=output is not None)
    if against_truth:
        if no_truth:
            warn(f"{len(no_truth)} video(s) have no ground-truth sidecar and are left out of the "
                 f"comparison (first: {no_truth[0]})")
        if not pairs:
            if bad_truth:
                fail(f"--against-truth: no usable ground-truth sidecar ({len(bad_truth)} malformed, "
                     f"first: {bad_truth[0]})")
            fail("--against-truth: none of the videos has a JSON sidecar with ground-truth actions")
        report = api.compare_with_truth(pairs, lam.num_actions, names)
        if json_out:
            typer.echo(json.dumps({"against_truth": report.to_dict()}))
        else:
            _print_report(report)
    exit_if_skipped(inputs, skipped, "inferred actions for")


def _report_ok(bar: Progress, src: Path, dst: Path | None, actions: Any, meta: dict,
               seconds: float, json_out: bool) -> None:
    if json_out:
        bar.out(json.dumps({"input": str(src), "output": str(dst) if dst else None, "status": "ok",
                            "actions": [int(a) for a in actions], "num_actions": meta["num_actions"],
                            "num_frames": meta["num_frames"], "fps": meta["fps"],
                            "seconds": round(seconds, 4)}))
        return
    shown = " ".join(str(int(a)) for a in actions[:24]) + (" ..." if len(actions) > 24 else "")
    where = f" -> {dst}" if dst else ""
    bar.out(f"{src}{where}: {len(actions)} actions from {meta['num_frames']} frames: {shown}")


def _print_report(report: Any) -> None:
    """Rows: latent actions; columns: true actions (counts); then what each latent maps to."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"latent vs true actions ({report.transitions} transitions, "
                        f"{report.files} videos)")
    table.add_column("latent", justify="right")
    for name in report.true_names:
        table.add_column(name, justify="right")
    table.add_column("share", justify="right")
    table.add_column("means (purity)")
    total = max(1, int(report.table.sum()))
    for latent, row in enumerate(report.table):
        n = int(row.sum())
        if n:
            best = int(row.argmax())
            means = f"{report.true_names[best]} ({row[best] / n:.0%})"
        else:
            means = "unused"
        cells = [f"[bold]{c}[/bold]" if n and j == int(row.argmax()) else str(c) for j, c in enumerate(row)]
        table.add_row(str(latent), *cells, f"{n / total:.1%}", means)
    console = Console()
    if not console.is_terminal:  # piped: no terminal width to respect, so never squeeze columns
        console = Console(width=max(80, 30 + 8 * len(report.true_names)
                                    + sum(len(n) for n in report.true_names)))
    console.print(table)
    console.print(f"NMI {report.nmi:.3f}   mapping accuracy {report.mapping_accuracy:.3f}   "
                  f"chance (majority) {report.majority_accuracy:.3f}", highlight=False)
    console.print(f"codebook usage {report.codebook_usage:.0%} of {report.num_actions} latent "
                  "actions; 'means' maps each latent to its most frequent true action", highlight=False)
