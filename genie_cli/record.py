"""`genie record`: real gameplay clips with true-action sidecars (Procgen, Atari through the ALE),
in the format `genie train` and `infer-actions --against-truth` read; `--verify` checks a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, get_args

import typer

from genie_cli import options as opt
from genie_cli.common import emit_json, fail, handle_errors, parse_size, progress

PolicyName = Literal["random", "sticky"]
POLICIES: tuple[str, ...] = get_args(PolicyName)


def parse_resolution(text: str) -> tuple[int, int]:
    """``64`` (square) or ``HxW``, at least 8 pixels a side."""
    return parse_size(text, option="--resolution", minimum=8)


class _Ticker:
    """Progress on stderr: a bar on a terminal, else a line at every tenth of the work."""

    def __init__(self, bar: Any, verb: str) -> None:
        self.bar, self.verb, self.shown = bar, verb, 0

    def __call__(self, done: int, total: int) -> None:
        self.bar.advance()
        if self.bar.bar is None and (done * 10 // total > self.shown or done == total):
            self.shown = done * 10 // total
            typer.echo(f"{self.verb} {done}/{total} clips", err=True)


@handle_errors
def record(
    env: Annotated[str, typer.Option(
        "--env", help="procgen:GAME (coinrun, starpilot, ...) or atari:GAME (Breakout, Pong, ...).")]
        = "procgen:coinrun",
    num_clips: Annotated[int, typer.Option("--num-clips", help="Clips to record.", min=1)] = 200,
    frames: Annotated[int, typer.Option("--frames", help="Frames per clip.", min=2)] = 32,
    policy: Annotated[PolicyName, typer.Option(
        "--policy", help="random (uniform actions) or sticky (repeat the previous action with "
        "probability --p-repeat: motion builds up over frames).")] = "sticky",
    p_repeat: Annotated[float, typer.Option(
        "--p-repeat", help="Sticky policy: probability of repeating the previous action.",
        min=0.0, max=1.0, callback=opt.finite)] = 0.75,
    seed: opt.Seed = 0,
    resolution: Annotated[str, typer.Option(
        "--resolution", help="Frame size: N (square) or HxW; the whole screen is resized.")] = "64",
    num_envs: Annotated[int, typer.Option(
        "--num-envs", help="Games played side by side.", min=1, max=256)] = 16,
    clips_per_episode: Annotated[int, typer.Option(
        "--clips-per-episode", help="At most this many clips from one episode, for more levels "
        "(0: no limit).", min=0)] = 4,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="A new folder: clips/clip_000000.mp4 + .json sidecars, meta.json.")]
        = None,
    verify: Annotated[Optional[Path], typer.Option(
        "--verify", help="Check a recorded folder instead of recording: every clip decodes, "
        "sidecars match the frames, actions in range.")] = None,
    json_out: opt.Json = False,
) -> None:
    """Record gameplay clips with the true action at every frame.

    actions\\[t] is applied at frame t and produces frame t+1 (actions_effective: same-effect ids merged).

    Examples:

      genie record --env procgen:coinrun --num-clips 200 --frames 32 --policy sticky -o data/coinrun

      genie record --env atari:Breakout --num-clips 200 --frames 32 --seed 0 -o data/breakout

      genie record --verify data/coinrun

    Needs pip install 'genie\\[record]' and, for Procgen, pip install --no-deps procgen-mirror==0.10.7 gym3==0.3.3

    Exit codes: 0 done (or verified); 2 bad input, missing packages, or a folder that fails --verify.
    """
    if (output is None) == (verify is None):
        fail("give -o OUT to record, or --verify FOLDER to check a recording")
    if verify is not None:
        _verify(verify, json_out)
        return
    assert output is not None
    from genie_core.tasks import record as rec
    size = parse_resolution(resolution)
    rec.parse_env(env)  # a bad --env fails before anything else
    rec.check_new_folder(output)
    source = rec.open_source(env, num_envs, size, seed)
    try:
        player = rec.Policy(policy, source.action_set, source.num, seed, p_repeat)
        with progress(num_clips, "record") as bar:
            meta = rec.record(source, output, num_clips, frames, player, seed,
                              clips_per_episode=clips_per_episode, on_clip=_Ticker(bar, "recorded"))
    finally:
        source.close()
    if json_out:
        emit_json({"output": str(output), "status": "ok",
                   **{k: meta[k] for k in ("env", "num_clips", "frames_per_clip", "resolution", "fps",
                                           "seed", "policy", "stats", "seconds")}})
    else:
        h, w = meta["resolution"]
        typer.echo(f"{output}: {meta['num_clips']} clips of {frames} frames ({h}x{w}) from "
                   f"{meta['env']}, {policy} policy, seed {seed}, "
                   f"{meta['stats']['distinct_level_seeds']} levels, {meta['seconds']:.1f} s")


def _verify(folder: Path, json_out: bool) -> None:
    from genie_core.tasks.record import load_meta, verify_recording

    total = len(load_meta(folder)["clips"])
    with progress(total, "verify") as bar:
        report = verify_recording(folder, on_clip=_Ticker(bar, "verified"))
    if json_out:
        emit_json({"folder": str(folder), "status": "ok" if report.ok else "error",
                   "clips": report.clips, "frames": report.frames, "problems": report.problems})
    for problem in report.problems[:10]:
        typer.echo(problem, err=True)
    if len(report.problems) > 10:
        typer.echo(f"... and {len(report.problems) - 10} more", err=True)
    if not report.ok:
        fail(f"{folder}: {len(report.problems)} problem(s) in {report.clips} clips")
    if not json_out:
        typer.echo(f"{folder}: {report.clips} clips, {report.frames} frames, all good")
