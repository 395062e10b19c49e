"""`genie reconstruct`: encode a video to tokens and decode it back, with PSNR / SSIM (Genie §2.1,
the video tokenizer; MagViT-2 §4 reports reconstruction quality the same way)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from genie_cli import options as opt
from genie_cli.common import check_suffix, emit_json, fail, handle_errors, json_number, open_tokenizer, parse_size
from genie_core.io.outputs import check_outputs

VIDEO_OUT = (".mp4", ".gif")


@handle_errors
def reconstruct(
    source: Annotated[Path, typer.Argument(metavar="INPUT", help="The video to reconstruct.")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="The reconstruction (.mp4 or .gif): same frame count and fps.")],
    checkpoint: opt.Checkpoint = None,
    preset: opt.OptionalPreset = None,
    overrides: opt.Overrides = None,
    compare: Annotated[Optional[Path], typer.Option(
        "--compare", help="Also write a side-by-side PNG: originals above reconstructions "
        "(up to --compare-frames evenly spaced frames).")] = None,
    compare_frames: Annotated[int, typer.Option(
        "--compare-frames", help="Frames shown in the --compare picture.", min=1)] = 8,
    size: opt.Size = None,
    window: opt.Window = None,
    batch: opt.BatchWindows = 4,
    device: opt.Device = "auto",
    precision: opt.Precision = "auto",
    threads: opt.Threads = 0,
    json_out: opt.JsonResult = False,
) -> None:
    """Reconstruct a video through the tokenizer and print PSNR (dB) and SSIM.

    Metrics compare the fitted input and the decoded frames on [0, 1],
    before the output file's video compression.

      genie reconstruct clip.mp4 -o rec.mp4 -c tok.safetensors --compare side.png

    Exit codes: 0 done; 2 bad input (nothing written).
    """
    hw = parse_size(size)
    if not source.is_file():
        fail(f"file not found: {source}" if not source.exists() else f"not a file: {source}")
    check_suffix(output, VIDEO_OUT, "output")
    if compare is not None:
        check_suffix(compare, (".png",), "--compare picture")
    check_outputs([output, compare], inputs=[source, checkpoint], videos=[source])
    tok = open_tokenizer(checkpoint, preset, overrides, device, precision, threads, window, hw)

    from genie_core.tasks import tokenize as api
    rec = api.reconstruct_to_file(tok, source, output, compare=compare, compare_frames=compare_frames,
                                  size=hw, batch_windows=batch, precision=precision)
    m = rec.metrics
    h, w = rec.frame_size
    if json_out:
        emit_json({"input": str(source), "output": str(output),
                   "compare": str(compare) if compare else None, "status": "ok",
                   "num_frames": rec.num_frames, "fps": rec.fps, "frame_size": [h, w],
                   "psnr": json_number(m["psnr"]), "ssim": json_number(m["ssim"]),
                   "seconds": round(rec.seconds, 4)})
    else:
        typer.echo(f"{source} -> {output}: {rec.num_frames} frames {h}x{w} at {rec.fps:g} fps "
                   f"({rec.seconds:.2f} s)")
        typer.echo(f"PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.4f}")
        if compare is not None:
            typer.echo(f"comparison: {compare}")
