"""`genie play` (Genie §2.2): scripted rollouts end to end on the tiny preset, bad input (exit 2,
one line, nothing written), interactive play through a pseudo-terminal, and the half-block
terminal renderer."""

from __future__ import annotations

import fcntl
import json
import os
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from typer.testing import CliRunner

from genie_cli.app import app
from genie_cli.terminal import HALF_BLOCK, fit_cells, half_block_lines, parse_keys, resize_nearest

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def invoke(*args: object, stdin: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=stdin)


def assert_clean_error(result, fragment: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    errors = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert "Traceback" not in result.output


def read_frames(path: Path) -> np.ndarray:
    from genie_core.io.video import read_video

    return read_video(path)[0]


@pytest.fixture(scope="module")
def prompt_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40x24 prompt image: not the world's size, so it must be fitted."""
    from genie_core.io.pictures import write_png

    path = tmp_path_factory.mktemp("prompt") / "start.png"
    write_png(path, np.random.default_rng(0).integers(0, 256, (40, 24, 3), dtype=np.uint8))
    return path


# ---- scripted ------------------------------------------------------------------------------

def test_scripted_play_writes_prompt_then_one_frame_per_action(world_file: Path, prompt_png: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    result = invoke("play", "-w", world_file, "--prompt", prompt_png, "--actions", "0,1,1", "-o", out,
                    "--precision", "fp32")
    assert result.exit_code == 0, result.output
    frames = read_frames(out)
    assert frames.shape == (1 + 3, 16, 16, 3)


def test_scripted_play_is_seeded(world_file: Path, prompt_png: Path, tmp_path: Path) -> None:
    """Same seed, same rollout (gif: lossless palette, so decoded frames compare exactly)."""
    paths = [tmp_path / f"{name}.gif" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (3, 3, 4)):
        result = invoke("play", "-w", world_file, "--prompt", prompt_png, "--actions", "2,0,3,1",
                        "-o", path, "--seed", seed, "--precision", "fp32", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["precision"] == "fp32"
    a, b, c = (read_frames(p) for p in paths)
    np.testing.assert_array_equal(a, b)
    assert a.shape == c.shape == (5, 16, 16, 3)


def test_world_session_without_cache_plays_the_same_frames() -> None:
    """fp32, same seed: 24 steps (3 windows of 8) read from the KV cache and recomputed from the
    session's ids give the same ids and frames, from a one- and a two-frame prompt."""
    import torch

    from genie_core.models.world import World

    torch.manual_seed(0)
    game = World.from_preset("tiny", ["dynamics.context_frames=8"])
    game.precision = "fp32"
    rng = np.random.default_rng(0)
    actions = rng.integers(0, game.num_actions, 24).tolist()
    for T0 in (1, 2):
        prompt = rng.integers(0, 256, (T0, 16, 16, 3), dtype=np.uint8)
        sessions = {}
        for use_cache in (True, False):
            game.use_cache = use_cache
            game.rollout(prompt, actions, seed=7)
            sessions[use_cache] = (game.session_ids(), game.session_frames())
            game.reset()  # back to the prompt, same mode: the same first frame again
            game.step(actions[0])
            assert torch.equal(game.session_ids()[:, -1], sessions[use_cache][0][:, T0])
        (ids_c, frames_c), (ids_r, frames_r) = sessions[True], sessions[False]
        assert ids_c.shape[1] == frames_c.shape[1] == T0 + 24
        assert torch.equal(ids_c, ids_r)
        np.testing.assert_array_equal(frames_c, frames_r)
    game.rollout(prompt, actions, seed=8)  # the sampling does matter: another seed, other frames
    assert not torch.equal(game.session_ids(), ids_r)


def test_scripted_play_no_cache_gives_the_same_frames(tmp_path: Path, prompt_png: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`genie play --no-cache` recomputes every frame, and at fp32 writes the frames the cached
    session writes (24 steps, 3 windows of 8; gif: lossless, so decoded frames compare exactly)."""
    from genie_core.models.dynamics import DynamicsModel

    calls = []
    recompute = DynamicsModel.recompute_logits
    monkeypatch.setattr(DynamicsModel, "recompute_logits",
                        lambda self, *args: calls.append(1) or recompute(self, *args))
    actions = ",".join(str(a) for a in np.random.default_rng(1).integers(0, 4, 24))
    frames, counts = [], []
    for flags in ([], ["--no-cache"]):
        path = tmp_path / f"{len(flags)}.gif"
        calls.clear()
        result = invoke("play", "--preset", "tiny", "--set", "dynamics.context_frames=8", "--prompt", prompt_png,
                        "--actions", actions, "-o", path, "--seed", 3, "--precision", "fp32", *flags)
        assert result.exit_code == 0, result.output
        frames.append(read_frames(path))
        counts.append(len(calls))
    assert counts[0] == 0 and counts[1] >= 24
    assert frames[0].shape == (25, 16, 16, 3)
    np.testing.assert_array_equal(frames[0], frames[1])


def test_actions_from_stdin_and_json(world_file: Path, prompt_png: Path, tmp_path: Path) -> None:
    import json

    out = tmp_path / "out.gif"
    result = invoke("play", "-w", world_file, "--prompt", prompt_png, "--actions", "-", "-o", out,
                    "--json", stdin="3 2\n1,0\n")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["actions"] == [3, 2, 1, 0] and record["frames"] == 5
    assert read_frames(out).shape[0] == 5


def test_video_prompt_keeps_its_frames(world_file: Path, make_clip: Callable[..., Path], tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=6, size=(32, 48))
    out = tmp_path / "out.mp4"
    result = invoke("play", "-w", world_file, "--prompt", clip, "--prompt-frames", "2", "--actions", "1,2",
                    "-o", out, "--precision", "fp32")
    assert result.exit_code == 0, result.output
    assert read_frames(out).shape == (2 + 2, 16, 16, 3)


@pytest.mark.parametrize("actions, fragment", [
    ("0,4", "0..3"),  # the tiny world has 4 latent actions
    ("-1", "0..3"),
    ("0,x", "'x' is not an action id"),
    (" , ", "no action ids"),
])
def test_bad_action_ids_exit_2(world_file: Path, prompt_png: Path, tmp_path: Path, actions: str,
                               fragment: str) -> None:
    out = tmp_path / "out.mp4"
    result = invoke("play", "-w", world_file, "--prompt", prompt_png, "--actions", actions, "-o", out)
    assert_clean_error(result, fragment)
    assert not out.exists()


def test_no_terminal_and_no_actions_exit_2(world_file: Path, prompt_png: Path, tmp_path: Path) -> None:
    result = invoke("play", "-w", world_file, "--prompt", prompt_png, "-o", tmp_path / "out.mp4")
    assert_clean_error(result, "no terminal")


@pytest.mark.parametrize("case, fragment", [
    ("no_output", "give -o"),
    ("bad_suffix", "must end in"),
    ("unknown_world", "not a shipped world (shipped: "),
    ("both", "not both"),
    ("missing_world", "world not found"),
    ("missing_prompt", "prompt not found"),
    ("wrong_kind", "expected world"),
    ("image_many_frames", "needs a video prompt"),
])
def test_usage_errors_exit_2(world_file: Path, prompt_png: Path, tmp_path: Path, case: str,
                             fragment: str) -> None:
    out = tmp_path / "out.mp4"
    base = ["--prompt", prompt_png, "--actions", "0"]
    args = {
        "no_output": ["-w", world_file, *base],
        "bad_suffix": ["-w", world_file, *base, "-o", tmp_path / "out.txt"],
        "unknown_world": ["-w", "no-such-world", *base, "-o", out],
        "both": ["-w", world_file, "--preset", "tiny", *base, "-o", out],
        "missing_world": ["-w", tmp_path / "nope.safetensors", *base, "-o", out],
        "missing_prompt": ["-w", world_file, "--prompt", tmp_path / "nope.png", "--actions", "0", "-o", out],
        "wrong_kind": ["-w", _tokenizer_file(tmp_path), *base, "-o", out],
        "image_many_frames": ["-w", world_file, *base, "--prompt-frames", "2", "-o", out],
    }[case]
    assert_clean_error(invoke("play", *args), fragment)
    assert not out.exists()


def _tokenizer_file(tmp_path: Path) -> Path:
    from genie_core.models.tokenizer import VideoTokenizer

    path = tmp_path / "tok.safetensors"
    VideoTokenizer.from_preset("tiny", ["tokenizer.disc=null"]).save(path)
    return path


def test_untrained_preset_warns(prompt_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    result = invoke("play", "--preset", "tiny", "--prompt", prompt_png, "--actions", "1", "-o", out)
    assert result.exit_code == 0, result.output
    assert "UNTRAINED" in result.stderr and read_frames(out).shape[0] == 2


def test_help_names_the_keys() -> None:
    result = invoke("play", "--help")
    assert result.exit_code == 0
    assert "--actions" in result.output and "restarts" in result.output


# ---- interactive, through a pseudo-terminal --------------------------------------------------

class Pty:
    """`genie play` run with a pseudo-terminal as its stdin, stdout and stderr."""

    def __init__(self, args: list[str], rows: int = 30, cols: int = 80) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen([sys.executable, "-m", "genie_cli", *args], stdin=slave, stdout=slave,
                                     stderr=slave, cwd=REPO, start_new_session=True)
        os.close(slave)
        self.output = b""
        self.initial_modes = termios.tcgetattr(self.master)  # the pty's settings (shared by both ends)

    # Guards against a hang only: every wait ends as soon as its event happens, so the bound is
    # generous enough for any machine load and never what a passing test waits for.
    GUARD_S = 600.0

    def read_until(self, needle: bytes, timeout: float = GUARD_S) -> bool:
        """Read until ``needle`` appears after what was read so far (or EOF / timeout)."""
        start, end = len(self.output), time.monotonic() + timeout
        while time.monotonic() < end:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return needle in self.output[start:]
            if not data:
                break
            self.output += data
            if needle in self.output[start:]:
                return True
        return needle in self.output[start:]

    def press(self, key: str, expect: bytes) -> None:
        os.write(self.master, key.encode())
        assert self.read_until(expect), (key, self.output[-400:])

    def finish(self, timeout: float = GUARD_S) -> int:
        """Wait for the process to exit, reading its output all the while (a child blocked on a
        full terminal buffer would otherwise never exit); then read what is left."""
        end = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < end:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready and not self._read_some():
                break
        code = self.proc.wait(timeout=max(1.0, end - time.monotonic()))
        while select.select([self.master], [], [], 0)[0] and self._read_some():
            pass
        self.final_modes = termios.tcgetattr(self.master)
        os.close(self.master)
        return code

    def _read_some(self) -> bool:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.output += data
        return bool(data)


def test_interactive_play_through_a_pty(world_file: Path, prompt_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "session.gif"
    term = Pty(["play", "-w", str(world_file), "--prompt", str(prompt_png), "-o", str(out),
                "--precision", "fp32", "--threads", "1"])
    try:
        assert term.read_until(b"q quit"), term.output[-400:]  # first frame and legend drawn
        assert "\u2580".encode() in term.output and b"\x1b[38;2;" in term.output  # 24-bit half blocks
        term.press("1", b"latent action 0")
        term.press("2", b"latent action 1")
        term.press("s", b"saved 3 frames")
        term.press("r", b"restarted")
        term.press("4", b"latent action 3")
        os.write(term.master, b"q")
        code = term.finish()
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    assert code == 0, term.output[-400:]
    assert b"\x1b[?25h" in term.output and b"\x1b[?1049l" in term.output  # cursor and screen restored
    assert term.final_modes == term.initial_modes  # echo and line mode back on
    assert read_frames(out).shape == (1 + 1, 16, 16, 3)  # restarted: prompt + one frame


# ---- the renderer ----------------------------------------------------------------------------

def test_half_block_cell_is_upper_on_lower() -> None:
    frame = np.array([[[255, 0, 0]], [[0, 0, 255]]], np.uint8)  # (2, 1, 3): red above blue
    lines = half_block_lines(frame, cols=1, rows=1)
    assert lines == [f"\x1b[38;2;255;0;0m\x1b[48;2;0;0;255m{HALF_BLOCK}\x1b[0m"]


def test_half_blocks_fit_the_terminal_and_keep_aspect() -> None:
    frame = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for cols, rows in ((80, 24), (200, 60), (30, 100), (7, 3)):
        lines = half_block_lines(frame, cols, rows)
        widths = {line.count(HALF_BLOCK) for line in lines}
        assert len(lines) <= rows and len(widths) == 1 and widths.pop() <= cols
    assert fit_cells(64, 64, 80, 21) == (42, 42)  # 21 rows of two pixels
    assert fit_cells(16, 16, 80, 28) == (48, 48)  # small frames grow by whole numbers
    assert fit_cells(64, 128, 80, 100) == (40, 80)


def test_resize_nearest_identity_and_blocks() -> None:
    frame = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_nearest(frame, 5, 7), frame)
    big = resize_nearest(frame, 10, 14)
    np.testing.assert_array_equal(big[::2, ::2], frame)
    np.testing.assert_array_equal(big[1::2, 1::2], frame)


def test_parse_keys_drops_escape_sequences() -> None:
    assert parse_keys("1\x1b[A2\x1bOPq") == ["1", "2", "q"]
    assert parse_keys("") == []


def test_interrupt_restores_the_terminal_and_writes_the_session(world_file: Path, prompt_png: Path,
                                                                 tmp_path: Path) -> None:
    import signal

    out = tmp_path / "session.gif"
    term = Pty(["play", "-w", str(world_file), "--prompt", str(prompt_png), "-o", str(out),
                "--precision", "fp32", "--threads", "1"])
    try:
        assert term.read_until(b"q quit"), term.output[-400:]
        term.press("3", b"latent action 2")
        term.proc.send_signal(signal.SIGINT)  # Ctrl-C
        code = term.finish()
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    assert code == 130, term.output[-400:]
    assert term.final_modes == term.initial_modes
    assert b"\x1b[?25h" in term.output and b"interrupted" in term.output
    assert read_frames(out).shape[0] == 2
