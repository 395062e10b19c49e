"""`genie play`: play a learned world (Genie §2.2, "action-controllable video generation"): a
prompt frame, then one generated frame per latent action, in a terminal or scripted."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from genie_cli import options as opt
from genie_cli.common import check_suffix, emit_json, fail, handle_errors, open_world, progress, set_sampling, world_file

WORLD_HELP = opt.WORLD_HELP
ACTION_KEYS = "1234567890"  # key i+1 picks latent action i (0 is the tenth)
DEFAULT_FPS = 10.0  # written videos, when the prompt is an image
OneThread = opt.OneThread


@handle_errors
def play(
    prompt: Annotated[Optional[Path], typer.Option(
        "--prompt", help="The first frame: an image (png, jpg, ...) or a video whose first "
        "--prompt-frames frames start the session. Any size; fitted to the world's. Default "
        "for a shipped world: its prompt frame.")] = None,
    world: Annotated[Optional[str], opt.world_option(WORLD_HELP + " Default: the default shipped world.")] = None,
    list_worlds: Annotated[bool, typer.Option(
        "--list", help="List the shipped worlds (the default marked *) and exit.")] = False,
    preset: Annotated[Optional[str], opt.preset_option(
        "Without --world: an UNTRAINED world of this preset (e.g. play), "
        "to try the controls; its frames mean nothing.")] = None,
    overrides: opt.Overrides = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write the session (prompt + generated frames) here: .mp4 or "
        ".gif (also .webm, .avi, ...). Required with --actions.")] = None,
    actions: Annotated[Optional[str], typer.Option(
        "--actions", help="Play without a terminal: latent action ids such as 0,3,3,1 (or - to "
        "read them from stdin), one generated frame each.")] = None,
    prompt_frames: Annotated[int, typer.Option(
        "--prompt-frames", help="Frames of a video prompt that start the session.", min=1)] = 1,
    steps: Annotated[Optional[int], typer.Option(
        "--steps", help="MaskGIT decoding steps per frame (default: the world's).", min=1)] = None,
    temperature: opt.Temperature = None,
    unmask: opt.Unmask = None,
    keep_bias: opt.KeepBias = None,
    top_p: opt.TopP = None,
    render: opt.Render = None,
    seed: opt.Seed = 0,
    fps: Annotated[Optional[float], typer.Option(
        "--fps", help="Frame rate of the written video (default: the prompt video's, else 10).",
        min=0.1, callback=opt.finite)] = None,
    device: opt.Device = "auto",
    precision: opt.Precision = "auto",
    threads: OneThread = 1,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Recompute each frame from the session's earlier frames instead of "
        "reading them from the KV cache: the same frames (exactly so under --precision fp32), "
        "slower, more so as the session grows up to how far back the model reaches.")] = False,
    compile_: Annotated[bool, typer.Option(
        "--compile", help="Run the dynamics model's per-frame layers through torch.compile "
        "(the first frame waits for the compiler; the same frames).")] = False,
    json_out: Annotated[bool, opt.json_option("Scripted mode: print the result as one JSON line.")] = False,
) -> None:
    """Play a world: pick latent actions, watch the next frame appear.

    Without --world: the default shipped world from its own prompt frame (genie play
    --list names the others). In a terminal: keys 1..N pick actions 0..N-1, r restarts
    from the prompt, s saves the session so far, q quits (the session is written to -o on exit).

    Scripted (no terminal needed): writes the prompt frame(s) followed by one generated
    frame per action.

      genie play

      genie play --actions 0,1,2 -o out.mp4

      genie play -w run/world.safetensors --prompt start.png -o session.mp4

      genie play -w run/world.safetensors --prompt clip.mp4 --actions 0,3,3,1 -o out.gif

      echo 1 1 2 2 | genie play -w run/world.safetensors --prompt start.png --actions - -o out.mp4

    Exit codes: 0 done; 2 bad input (a bad action id, no terminal and no --actions, ...);
    130 interrupted (an interactive session is still written to -o).
    """
    from genie_core.io.video_write import WRITE_SUFFIXES

    if list_worlds:
        print_worlds(json_out)
        return
    if world is None and preset is None:
        from genie_core.tasks.worlds import default_world

        try:
            world = default_world().name
        except ValueError as err:
            fail(str(err))
    world_path, shipped = world_file(world) if world is not None else (None, None)
    if prompt is None:
        if shipped is None:
            fail("--prompt FILE is needed (an image or a video): only a shipped world has its own")
        prompt = shipped.prompt
    scripted = actions is not None
    if not scripted and not (sys.stdin.isatty() and sys.stdout.isatty()):
        fail("no terminal to play in: give --actions 0,3,3,1 (or --actions - to read ids from "
             "stdin) for a scripted rollout")
    action_ids = parse_actions(sys.stdin.read() if actions == "-" else actions) if scripted else []
    if scripted and output is None:
        fail("scripted play writes a video: give -o out.mp4 (or .gif)")
    if output is not None:
        check_suffix(output, WRITE_SUFFIXES, "output")
    if not prompt.is_file():
        fail(f"prompt not found: {prompt}" if not prompt.exists() else f"prompt is not a file: {prompt}")
    if output is not None:
        from genie_core.io.outputs import check_outputs

        check_outputs([output], inputs=[prompt, world_path], videos=[prompt])

    game = open_world(world, preset, overrides, device, precision, threads, seed)
    bad = sorted({a for a in action_ids if not 0 <= a < game.num_actions})
    if bad:
        fail(f"--actions: latent action ids must be in 0..{game.num_actions - 1}, got "
             f"{', '.join(map(str, bad))}")
    set_sampling(game, steps, temperature, render, unmask=unmask, keep_bias=keep_bias, top_p=top_p)
    game.use_cache = not no_cache
    game.use_compile = compile_
    max_prompt = game.dynamics.context_frames - 1  # room for the frame being generated
    if prompt_frames > max_prompt:
        fail(f"--prompt-frames {prompt_frames} is more than this world's context allows ({max_prompt})")
    frames, source_fps = read_prompt(prompt, prompt_frames, game.resolution)
    out_fps = fps or source_fps or DEFAULT_FPS

    if scripted:
        _scripted(game, frames, action_ids, output, out_fps, seed, json_out)
    else:
        _interactive(game, frames, output, out_fps, seed)


# ---- shared with `genie evaluate` ----------------------------------------------------------

def print_worlds(json_out: bool = False) -> None:
    """One line per shipped world: name (* the default), size, headline figures, description."""
    from genie_core.tasks.worlds import list_worlds

    worlds = list_worlds()
    if not worlds:
        fail("no shipped worlds in this installation")
    for w in worlds:
        if json_out:
            emit_json(w.to_dict())
        else:
            mark = "*" if w.is_default else " "
            typer.echo(f"{mark} {w.name:<14} {w.size_bytes / 1e6:5.1f} MB  {w.headline()}  {w.description}")


@handle_errors
def worlds(json_out: Annotated[bool, opt.json_option("One JSON line per world.")] = False) -> None:
    """List the shipped worlds (the default marked *): genie play --world NAME plays one."""
    print_worlds(json_out)


def read_prompt(path: Path, count: int, resolution: tuple[int, int]) -> tuple[Any, Optional[float]]:
    """uint8 (T, H, W, 3) prompt frames at ``resolution`` and the source fps (None for an image)."""
    from genie_core.io.video import IMAGE_SUFFIXES, read_image, read_video

    if path.suffix.lower() in IMAGE_SUFFIXES:
        if count > 1:
            fail(f"--prompt-frames {count} needs a video prompt; {path} is an image")
        return read_image(path, size=resolution)[None], None
    frames, source_fps = read_video(path, size=resolution, max_frames=count)
    if len(frames) < count:
        fail(f"{path} has {len(frames)} frame(s), fewer than --prompt-frames {count}")
    return frames, source_fps


def parse_actions(text: str) -> list[int]:
    """``"0,3,3,1"`` (commas and/or whitespace) to ids; a bad token exits 2 naming it."""
    tokens = text.replace(",", " ").split()
    if not tokens:
        fail("--actions: no action ids given (e.g. --actions 0,3,3,1)")
    ids = []
    for token in tokens:
        try:
            ids.append(int(token))
        except ValueError:
            fail(f"--actions: '{token}' is not an action id (use integers such as 0,3,3,1)")
    return ids


def write_session(game: Any, path: Path, fps: float) -> int:
    """Write the session so far (batch row 0) to ``path``; returns the frame count."""
    from genie_core.io.video_write import write_video

    frames = game.session_frames()[0]  # (T, H, W, 3)
    write_video(path, frames, fps)
    return len(frames)


# ---- scripted ------------------------------------------------------------------------------

def _scripted(game: Any, frames: Any, action_ids: list[int], output: Path, fps: float, seed: int,
              json_out: bool) -> None:
    game.encode_prompt(frames, seed=seed)
    start = time.perf_counter()
    with progress(len(action_ids), "play") as bar:
        for action in action_ids:
            game.step(action)
            bar.advance()
    seconds = (time.perf_counter() - start) / max(1, len(action_ids))
    total = write_session(game, output, fps)
    record = {"output": str(output), "prompt_frames": len(frames), "generated_frames": len(action_ids),
              "frames": total, "actions": action_ids, "ms_per_frame": round(1000 * seconds, 2),
              "fps": round(1 / seconds, 2) if seconds > 0 else None}
    if json_out:
        from genie_core.runtime import resolve_precision  # torch: not at import (genie --help)
        record["precision"] = resolve_precision(game.precision, game.device)  # what ran, auto resolved
        emit_json(record)
    else:
        typer.echo(f"wrote {output}: {len(frames)} prompt + {len(action_ids)} generated frames "
                   f"({record['ms_per_frame']:.0f} ms/frame, {record['fps']} fps)")


# ---- interactive ---------------------------------------------------------------------------

class _Session:
    """What the interactive screen shows besides the frame: timings, the last event."""

    def __init__(self, game: Any, output: Optional[Path], fps: float) -> None:
        self.game, self.output, self.fps = game, output, fps
        self.keys = ACTION_KEYS[:min(game.num_actions, len(ACTION_KEYS))]
        self.last_ms: float | None = None
        self.total_s, self.generated = 0.0, 0
        self.message = "press a number key to act"
        self.frame = game.session_frames()[0, -1]  # the newest frame, (H, W, 3)

    def act(self, action: int) -> None:
        start = time.perf_counter()
        self.frame = self.game.step(action)[0]
        elapsed = time.perf_counter() - start
        self.last_ms = 1000 * elapsed
        self.total_s += elapsed
        self.generated += 1
        names = self.game.action_names
        self.message = f"action {names[action]}" if names else f"latent action {action}"

    def restart(self) -> None:
        self.game.reset()
        self.frame = self.game.session_frames()[0, -1]
        self.message = "restarted from the prompt"

    def save(self) -> None:
        path = self.output or Path(time.strftime("genie-play-%Y%m%d-%H%M%S.mp4"))
        count = write_session(self.game, path, self.fps)
        self.message = f"saved {count} frames to {path}"

    def legend(self) -> list[str]:
        n = len(self.keys)
        keys = f"keys 1-{self.keys[-1]}: latent actions 0-{n - 1}" if n > 1 else "key 1: latent action 0"
        if self.game.action_names:  # a world driven by the game's own, named actions
            keys = " ".join(f"{k} {name}" for k, name in zip(self.keys, self.game.action_names))
        if n < self.game.num_actions:
            keys += f" (of {self.game.num_actions})"
        if self.last_ms is None:
            speed = "-- ms/frame"
        else:
            mean = self.total_s / self.generated
            speed = f"{self.last_ms:.0f} ms/frame, {1000 / self.last_ms:.1f} fps (mean {1 / mean:.1f} fps)"
        return [f"frame {self.game.session_length} | {speed} | {self.message}",
                f"{keys} | r restart | s save | q quit"]


def _interactive(game: Any, frames: Any, output: Optional[Path], fps: float, seed: int) -> None:
    from genie_cli.terminal import Screen, half_block_lines

    game.encode_prompt(frames, seed=seed)
    session = _Session(game, output, fps)
    interrupted = False

    def render(screen: Screen, clear: bool = False) -> None:
        cols, rows = screen.size
        legend = session.legend()
        screen.draw(half_block_lines(session.frame, cols, max(1, rows - len(legend))) + legend, clear=clear)

    try:
        with Screen() as screen:
            render(screen, clear=True)
            screen.resized()
            running = True
            while running:
                keys = screen.read_keys(timeout=0.5)
                if keys is None:  # the terminal closed
                    break
                if not keys:
                    if screen.resized():
                        render(screen, clear=True)
                    continue
                for key in keys:
                    if key in ("q", "Q"):
                        running = False
                        break
                    if key in session.keys:
                        session.act(session.keys.index(key))
                    elif key in ("r", "R"):
                        session.restart()
                    elif key in ("s", "S"):
                        session.save()
                    else:
                        session.message = f"key {key!r} does nothing"
                    render(screen)
    except KeyboardInterrupt:
        interrupted = True
    if output is not None:
        count = write_session(game, output, fps)
        typer.echo(f"wrote {output}: {count} frames", err=True)
    elif session.generated:
        typer.echo("session not written (give -o out.mp4, or press s while playing)", err=True)
    if interrupted:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130)
