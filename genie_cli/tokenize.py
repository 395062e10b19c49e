"""`genie tokenize`: videos to token files (.npz) with a trained video tokenizer (Genie §2.1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from genie_cli import options as opt
from genie_cli.common import (
    Job,
    Progress,
    check_jobs,
    check_suffix,
    exit_if_skipped,
    expand_inputs,
    handle_errors,
    open_tokenizer,
    parse_size,
    run_jobs,
)


@handle_errors
def tokenize(
    source: Annotated[str, typer.Argument(
        metavar="INPUT", help="A video, a folder of videos (searched recursively), or - to read "
        "paths from stdin, one per line.")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="A .npz for one video; for a folder or -, a folder that mirrors "
        "the input tree.")],
    checkpoint: opt.Checkpoint = None,
    preset: opt.OptionalPreset = None,
    overrides: opt.Overrides = None,
    size: opt.Size = None,
    window: opt.Window = None,
    batch: opt.BatchWindows = 4,
    device: opt.Device = "auto",
    precision: opt.Precision = "auto",
    threads: opt.Threads = 0,
    json_out: opt.Json = False,
) -> None:
    """Turn videos into token files (.npz: int32 tokens (T', h, w) and JSON metadata).

    Examples:

      genie tokenize clip.mp4 -o clip.npz --checkpoint tok.safetensors

      genie tokenize videos/ -o tokens/ -c tok.safetensors --json

      find videos -name '*.mp4' | genie tokenize - -o tokens/ -c tok.safetensors

    Exit codes: 0 all done; 2 bad input (nothing written);
    3 folder or stdin mode: some inputs were skipped (each named on stderr), the rest tokenized.
    """
    hw = parse_size(size)
    inputs = expand_inputs(source, output, ".npz", writes=False)
    if not inputs.batch:
        check_suffix(inputs.jobs[0].dst, (".npz",), "output")
    check_jobs(inputs, output, also_read=(checkpoint,))
    tok = open_tokenizer(checkpoint, preset, overrides, device, precision, threads, window, hw)

    from genie_core.io.tokens import save_tokens
    from genie_core.tasks import tokenize as api

    def work(job: Job) -> tuple[Any, dict]:
        ids, meta = api.tokenize_video(tok, job.src, size=hw, batch_windows=batch,
                                       precision=precision)
        save_tokens(job.dst, ids, meta)
        return ids, meta

    def report(bar: Progress, job: Job, result: tuple[Any, dict], seconds: float) -> None:
        _report_ok(bar, job.src, job.dst, result[0].shape, result[1], seconds, json_out)

    skipped = run_jobs(inputs, "tokenize", json_out, work, report)
    exit_if_skipped(inputs, skipped, "tokenized")


def _report_ok(bar: Progress, src: Path, dst: Path, shape: tuple[int, ...], meta: dict,
               seconds: float, json_out: bool) -> None:
    if json_out:
        bar.out(json.dumps({"input": str(src), "output": str(dst), "status": "ok",
                            "shape": list(shape), "num_frames": meta["num_frames"],
                            "fps": meta["fps"], "frame_size": meta["frame_size"],
                            "seconds": round(seconds, 4)}))
    else:
        h, w = meta["frame_size"]
        bar.out(f"{src} -> {dst}: tokens {tuple(shape)} from {meta['num_frames']} frames "
                f"{h}x{w} at {meta['fps']:g} fps ({seconds:.2f} s)")


