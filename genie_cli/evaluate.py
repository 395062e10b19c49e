"""`genie evaluate`: how controllable a world is, Genie §3.1: ΔtPSNR at t = 4 on held-out clips
(frames generated with the LAM's inferred actions vs random ones), PSNR and SSIM per generated
frame, and the baselines the world must beat (the last prompt frame held still, in pixels and
as its tokens decode)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from genie_cli import options as opt
from genie_cli.common import (
    EXIT_SKIPPED,
    fail,
    handle_errors,
    json_number,
    open_world,
    progress,
    set_sampling,
    skipped_line,
    stdin_paths,
    warn,
)


@handle_errors
def evaluate(
    clips: Annotated[Path, typer.Argument(
        metavar="CLIPS", help="A folder of held-out videos (searched recursively), one video, or - "
        "to read paths from stdin (e.g. < RUN/heldout.txt, written by genie train).")],
    world: opt.World = None,
    preset: Annotated[Optional[str], opt.preset_option(
        "Without --world: an UNTRAINED world of this preset (smoke tests; expect ΔtPSNR near 0).")] = None,
    overrides: opt.Overrides = None,
    num_clips: Annotated[int, typer.Option(
        "--clips", "-n", help="Clip windows to evaluate, spread over the videos (seeded).", min=1)] = 32,
    horizon: Annotated[int, typer.Option(
        "--horizon", "-t", help="Generated frames per clip; ΔtPSNR is taken at the last (the "
        "paper's t = 4). Windows need --prompt-frames + --horizon frames.", min=1)] = 4,
    prompt_frames: Annotated[int, typer.Option(
        "--prompt-frames", help="Real frames that start each rollout.", min=1)] = 1,
    steps: Annotated[Optional[int], typer.Option(
        "--steps", help="MaskGIT decoding steps per frame (default: the world's).", min=1)] = None,
    temperature: opt.Temperature = None,
    unmask: opt.Unmask = None,
    keep_bias: opt.KeepBias = None,
    top_p: opt.TopP = None,
    render: opt.Render = None,
    batch: Annotated[int, typer.Option("--batch", help="Clips per rollout batch.", min=1)] = 8,
    seed: opt.Seed = 0,
    device: opt.Device = "auto",
    precision: opt.Precision = "auto",
    threads: opt.OneThread = 1,
    json_out: Annotated[bool, opt.json_option(
        "Print one JSON object (summary and per-clip scores) instead of a table.")] = False,
) -> None:
    """Measure controllability: ΔtPSNR = PSNR(x_t, x̂_t) - PSNR(x_t, x̂'_t).

    From each clip's first frame(s), t frames are generated with the same sampling seed:
    with the latent actions the LAM infers from the real clip (x̂), with random latent
    actions drawn uniformly (x̂', the headline ΔtPSNR, as in Genie) and drawn from the LAM's
    code frequencies on these clips. Higher ΔtPSNR means the actions control the world;
    Genie reports 1.3 to 2.1 dB. Printed per t: PSNR of each rollout and of two baselines,
    the last prompt frame held still (copy, pixels) and its tokens decoded (copy, tokens:
    the tokenizer's share of the loss). Per-window PSNR is capped at 50 dB before averaging.

      genie evaluate heldout/ -w run/world.safetensors --clips 64 --json

      genie evaluate - -w run/world.safetensors < run/heldout.txt

    Exit codes: 0 done; 2 bad input (no videos, clips too short, ...);
    3 some videos could not be read (each named on stderr), the rest evaluated.
    """
    from genie_core.io.video import VIDEO_SUFFIXES, find_videos
    from genie_core.tasks.evaluate import check_evaluation_memory, controllability, sample_windows

    folders: list[tuple[Path, str]] = []  # folders that cannot be listed
    if str(clips) == "-":
        videos = stdin_paths()
        if not videos:
            fail("no paths on stdin")
        missing = [v for v in videos if not v.is_file()]
        if missing:
            fail(f"not a file: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    elif clips.is_dir():
        videos = find_videos(clips, folders)
        for path, reason in folders:  # counted with the unreadable videos below
            warn(skipped_line(path, reason))
        if not videos:
            fail(f"no videos found in {clips}")
    elif clips.is_file():
        if clips.suffix.lower() not in VIDEO_SUFFIXES:
            fail(f"{clips} is not a video (expected one of {', '.join(VIDEO_SUFFIXES)})")
        videos = [clips]
    else:
        fail(f"not found: {clips}")
    game = open_world(world, preset, overrides, device, precision, threads, seed)
    set_sampling(game, steps, temperature, render, unmask=unmask, keep_bias=keep_bias, top_p=top_p)
    length = prompt_frames + horizon
    check_evaluation_memory(game, num_clips, length, batch)
    unreadable: list[Path] = []

    def skip(path: Path, reason: str) -> None:
        unreadable.append(path)
        warn(skipped_line(path, reason))

    windows = list(sample_windows(videos, num_clips, length, game.resolution, seed=seed, warn=warn,
                                  on_error=skip))
    if not windows:
        if unreadable and len(unreadable) == len(videos):
            fail(f"no readable video in {clips} ({len(unreadable)} skipped)")
        fail(f"no video in {clips} has the {length} frames a window needs (--prompt-frames + --horizon)")
    if len(windows) < num_clips:
        warn(f"evaluated {len(windows)} clip(s), fewer than --clips {num_clips}")
    with progress(len(windows), "evaluate") as bar:
        report = controllability(game, windows, horizon=horizon, prompt_frames=prompt_frames, seed=seed,
                                 batch_size=batch, on_batch=bar.advance)
    summary = report.summary()
    if json_out:
        from genie_core.runtime import resolve_precision  # torch: not at import (genie --help)
        record = {**_finite(summary), "steps": game.sampling.steps, "temperature": game.sampling.temperature,
                  "sampling": dataclasses.asdict(game.sampling),
                  "precision": resolve_precision(game.precision, game.device),  # what ran, auto resolved
                  "world": str(world) if world else f"preset:{preset}", "per_clip": _finite(report.per_clip())}
        typer.echo(json.dumps(record))
    else:
        _print_table(summary, game)
    if unreadable or folders:
        typer.echo(f"evaluated {len(windows)} clip(s), skipped {len(unreadable) + len(folders)} "
                   "unreadable video(s) or folder(s)", err=True)
        raise typer.Exit(EXIT_SKIPPED)


def _finite(value: Any) -> Any:
    """JSON has no inf/nan: such numbers become null, recursively."""
    if isinstance(value, float):
        return json_number(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _print_table(summary: dict[str, Any], game: Any) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    t = summary["horizon"]
    source = "the game's true" if summary["action_source"] == "truth" else "the LAM's inferred"
    console = Console()
    console.print(f"Controllability: {summary['clips']} windows, {summary['prompt_frames']} prompt frame(s), "
                  f"{game.sampling.steps} MaskGIT steps, frames drawn by {game.sampling.render}, seed {summary['seed']}. "
                  "PSNR in dB, the mean of "
                  f"per-window PSNR capped at {summary['psnr_cap_db']:g} dB. inferred: {source} actions; "
                  "random: uniform over all codes; random (freq): drawn from the codes' frequencies on "
                  "these clips; copy (pixels): the last prompt frame held still; copy (tokens): its "
                  "tokens decoded; Δ: inferred - random; vs copy: inferred - copy (pixels) per window, ± its "
                  "standard error.", highlight=False)
    by_t = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    columns = ("inferred", "random", "random_freq", "copy", "copy_tokens")
    for title in ("t", "inferred", "random", "random (freq)", "copy (pixels)", "copy (tokens)", "Δ",
                  "vs copy"):
        whole = title == "vs copy"  # "+0.59±0.52" kept on one line
        by_t.add_column(title, justify="right", no_wrap=whole, min_width=10 if whole else None)
    vs_sem = summary["world_vs_copy_sem_by_t"]
    for k in range(t):
        cells = [f"{summary[f'psnr_{name}_by_t'][k]:.2f}" for name in columns]
        vs_cell = f"{summary['world_vs_copy_by_t'][k]:+.2f}" + (f"±{vs_sem[k]:.2f}" if vs_sem else "")
        by_t.add_row(str(k + 1), *cells, f"{summary['delta_psnr_by_t'][k]:.3f}", vs_cell)
    console.print(by_t)

    def pm(key: str) -> str:
        sem = summary[f"{key}_sem"]
        return f"{summary[key]:+.3f}" + (f" ± {sem:.3f} (s.e.)" if sem is not None else "")

    vs = summary["world_vs_copy_db"]
    verdict = (f"world vs copy: {vs:+.2f} dB" if vs >= 0 else f"world loses to copy by {-vs:.2f} dB")
    usage = summary["code_usage"]
    lines = [
        f"Δ{t}PSNR = {pm('delta_psnr')} dB  (headline: random actions uniform over all codes, Genie's)",
        f"Δ{t}PSNR with random actions drawn from the codes' frequencies: {pm('delta_psnr_freq')} dB",
        f"at t = {t}: {verdict} (median {summary['world_vs_copy_median_db']:+.2f} dB; the world wins "
        f"{100 * summary['world_beats_copy_share']:.0f}% of windows); a world copying the prompt's "
        f"tokens: {summary[f'psnr_copy_tokens_t{t}']:.2f} dB",
        f"SSIM at t = {t}: inferred {summary['ssim_inferred_by_t'][-1]:.3f}, random "
        f"{summary['ssim_random_by_t'][-1]:.3f}, copy {summary['ssim_copy_by_t'][-1]:.3f}",
        f"actions used: {usage['used']} of {len(usage['counts'])} (counts {usage['counts']}, "
        f"perplexity {usage['perplexity']:.2f})",
    ]
    for line in lines:
        console.print(line, highlight=False)
