"""Shared fixtures: synthetic clips written by imageio's ffmpeg writer (or Pillow for GIF), so video
reading is tested against a writer that is not ours; a folder of clips; the tiny preset."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Tests share 2 cores with other jobs: one intra-op thread is far faster than two fighting.
    # Importing torch here costs nothing extra (nearly every test module imports it); the
    # help-without-torch test runs `genie` in a subprocess, so it is unaffected.
    try:
        import torch
    except ImportError:  # pragma: no cover - the video/metrics tests still run without torch
        return
    torch.set_num_threads(1)


DDP_DEADLINE_S = 600.0  # a two-rank tiny run takes well under a minute; a hang fails, not stalls


@pytest.fixture
def spawn_ranks() -> Callable[..., None]:
    """``torch.multiprocessing.spawn`` with a deadline: a worker that hangs (a collective that
    never completes, or a process group's teardown deadlocking at exit) fails the test after
    ``seconds`` and is killed, instead of stopping the whole test run. A worker's exception is
    raised as ``spawn`` raises it."""

    def run(fn: Callable[..., None], args: tuple, nprocs: int = 2, seconds: float = DDP_DEADLINE_S) -> None:
        import time

        import torch.multiprocessing as mp

        ctx = mp.spawn(fn, args=args, nprocs=nprocs, join=False)
        deadline = time.monotonic() + seconds
        while not ctx.join(timeout=2):
            if time.monotonic() > deadline:
                alive = [i for i, p in enumerate(ctx.processes) if p.is_alive()]
                for p in ctx.processes:
                    if p.is_alive():
                        p.kill()
                    p.join(5)
                pytest.fail(f"DDP ranks {alive} of {nprocs} still running after {seconds:.0f} s: a hang (killed)")

    return run


def synthetic_frames(frames: int = 8, size: tuple[int, int] = (64, 64), seed: int = 0) -> np.ndarray:
    """uint8 (T, H, W, 3): a bright square moving diagonally over a colour gradient. Smooth
    background plus one sharp object: survives lossy codecs and has real motion."""
    height, width = size
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None]  # (H, 1)
    cols = np.linspace(0, 1, width, dtype=np.float32)[None, :]  # (1, W)
    phase = np.random.default_rng(seed).uniform(0, 0.3)
    background = np.stack(np.broadcast_arrays(  # (H, W, 3), a different ramp per channel
        40 + 150 * cols, 40 + 150 * rows, 40 + 150 * (1 - (rows + cols) / 2) + 60 * phase), axis=-1)
    square = max(2, min(height, width) // 4)
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        y = (2 * t + int(phase * 10)) % (height - square + 1)
        x = (3 * t) % (width - square + 1)
        frame = background.copy()
        frame[y:y + square, x:x + square] = (250, 245, 235)
        out[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


_CODECS = {  # kind -> (codec, output pixel format, quality options)
    "mp4": ("libx264", "yuv420p", ["-crf", "10"]),
    "mkv": ("libx264", "yuv420p", ["-crf", "10"]),
    "mov": ("libx264", "yuv420p", ["-crf", "10"]),
    "webm": ("libvpx-vp9", "yuv420p", ["-crf", "10", "-b:v", "0"]),
    "avi": ("mjpeg", "yuvj444p", ["-q:v", "2"]),
}


def write_clip(path: str | Path, frames: int = 8, size: tuple[int, int] = (64, 64), fps: float = 10,
               kind: str | None = None, seed: int = 0) -> Path:
    """Write ``synthetic_frames`` to ``path`` and return the path. ``kind`` (mp4, webm, avi, mkv,
    mov, gif) defaults to the suffix of ``path``, else mp4; a missing suffix is added."""
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if kind is None:
        kind = suffix or "mp4"
    elif suffix and suffix != kind:
        raise ValueError(f"kind={kind!r} but path {path} has suffix .{suffix}")
    if not suffix:
        path = path.with_name(f"{path.name}.{kind}")
    path.parent.mkdir(parents=True, exist_ok=True)
    video = synthetic_frames(frames, size, seed)
    if kind == "gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in video]
        images[0].save(path, save_all=True, append_images=images[1:], duration=1000 / fps, loop=0)
        return path
    import imageio_ffmpeg

    codec, pix_fmt, params = _CODECS[kind]
    writer = imageio_ffmpeg.write_frames(
        str(path), (size[1], size[0]), fps=fps, codec=codec, pix_fmt_out=pix_fmt, quality=None,
        macro_block_size=1, output_params=params, ffmpeg_log_level="error")
    writer.send(None)  # start ffmpeg
    for frame in video:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


@pytest.fixture
def make_clip(tmp_path: Path) -> Callable[..., Path]:
    """``make_clip(path, frames=8, size=(64, 64), fps=10, kind="mp4") -> Path`` (see write_clip);
    a relative ``path`` lands in the test's ``tmp_path``."""

    def make(path: str | Path, *args, **kwargs) -> Path:
        return write_clip(tmp_path / path, *args, **kwargs)  # an absolute path stays as it is

    return make


@pytest.fixture
def clip_frames() -> Callable[..., np.ndarray]:
    """``clip_frames(frames=8, size=(64, 64), seed=0)``: the frames make_clip writes."""
    return synthetic_frames


@pytest.fixture
def clip_dir(tmp_path: Path) -> Path:
    """A dataset folder: four 64x64 clips at 10 fps (mp4, gif, and nested mp4/webm) plus a text
    file that is not a video. Clips differ (seeded) and have 8 to 12 frames."""
    root = tmp_path / "clips"
    write_clip(root / "a.mp4", frames=8, seed=0)
    write_clip(root / "b.gif", frames=10, seed=1)
    write_clip(root / "sub" / "c.mp4", frames=12, seed=2)
    write_clip(root / "sub" / "deeper" / "d.webm", frames=9, seed=3)
    (root / "notes.txt").write_text("not a video\n")
    return root


@pytest.fixture
def tiny_cfg():
    """The ``tiny`` preset as a GenieConfig (fresh, frozen objects each time)."""
    from genie_core.config import load_preset

    return load_preset("tiny")


@pytest.fixture(scope="module")
def tok_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny tokenizer saved as a checkpoint that records its training data config
    (frame size 16x16, 4-frame clips), as `genie train` writes it."""
    import json

    import torch

    from genie_core.config import load_preset, to_dict
    from genie_core.models.tokenizer import VideoTokenizer

    torch.manual_seed(0)
    cfg = load_preset("tiny")
    path = tmp_path_factory.mktemp("ckpt") / "tok.safetensors"
    VideoTokenizer.from_config(cfg.tokenizer).save(path, extra={"data": json.dumps(to_dict(cfg.data))})
    return path


@pytest.fixture(scope="module")
def world_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny world (16x16 frames, 4 latent actions) saved as a bundle."""
    import torch

    from genie_core.models.world import World

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("world") / "world.safetensors"
    World.from_preset("tiny").save(path)
    return path
