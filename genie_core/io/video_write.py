"""Writing video: uint8 RGB frames (T, H, W, 3), or a stream of frames or windows, encoded by ffmpeg
(mp4/mov/mkv: H.264, webm: VP9, avi: MJPEG, gif), atomically.
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from genie_core.errors import VideoError
from genie_core.io.atomic import atomic_path
from genie_core.io.ffmpeg import ffmpeg_exe, first_error
from genie_core.io.frames import to_rgb

DEFAULT_CRF = 12  # x264/vp9 constant quality: visually lossless, still tiny files at 64x64


def _encoder_args(suffix: str, height: int, width: int, crf: int, full_chroma: bool = False) -> list[str]:
    """ffmpeg output options per container. H.264/VP9 4:2:0 needs even sizes, so odd sizes get
    4:4:4 (exact size kept, fine for ffmpeg, less widely played), as does ``full_chroma``."""
    chroma = "yuv420p" if height % 2 == 0 and width % 2 == 0 and not full_chroma else "yuv444p"
    if suffix in (".mp4", ".mov", ".m4v"):
        return ["-c:v", "libx264", "-preset", "medium", "-crf", str(crf), "-pix_fmt", chroma,
                "-movflags", "+faststart", "-f", "mov" if suffix == ".mov" else "mp4"]
    if suffix == ".mkv":
        return ["-c:v", "libx264", "-crf", str(crf), "-pix_fmt", chroma, "-f", "matroska"]
    if suffix == ".webm":
        return ["-c:v", "libvpx-vp9", "-crf", str(crf), "-b:v", "0", "-pix_fmt", chroma, "-f", "webm"]
    if suffix == ".avi":
        return ["-c:v", "mjpeg", "-q:v", "2", "-pix_fmt", "yuvj444p", "-f", "avi"]
    if suffix == ".gif":
        # One palette for the whole clip (palettegen over all frames), no dithering noise.
        return ["-filter_complex", "split[a][b];[a]palettegen=stats_mode=full[p];"
                "[b][p]paletteuse=dither=none", "-f", "gif"]
    raise ValueError(suffix)


WRITE_SUFFIXES = (".mp4", ".gif", ".webm", ".avi", ".mov", ".mkv", ".m4v")


def _frame_stream(frames: np.ndarray | Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Frames (T, H, W, C) or an iterable of frames (H, W, C) / windows (t, H, W, C) -> RGB frames."""
    if isinstance(frames, np.ndarray):
        frames = [frames] if frames.ndim == 4 or (frames.ndim == 3 and frames.shape[-1] not in (1, 3, 4)) \
            else [frames[None]]
    for item in frames:
        item = np.asarray(item)
        rgb = to_rgb(item)
        if rgb.ndim == 3:
            rgb = rgb[None]  # one frame -> (1, H, W, 3)
        yield from rgb


def write_video(path: str | os.PathLike, frames: np.ndarray | Iterable[np.ndarray], fps: float,
                crf: int = DEFAULT_CRF, full_chroma: bool = False) -> Path:
    """Write uint8 frames (T, H, W, 3) (or an iterable of frames or windows, streamed) to
    ``path``; the suffix picks the format (mp4/mov/mkv: H.264, webm: VP9, avi: MJPEG, gif).

    Atomic: a temporary file is renamed onto ``path`` only when ffmpeg succeeded. ``crf`` is the
    constant-quality setting (lower is better; 0 is lossless luma for H.264); ``full_chroma``
    keeps colour at full resolution (4:4:4; 4:2:0 smears a small sprite's colour). GIF stores delays
    in centiseconds, so its frame rate is kept on average (30 fps -> delays 30, 40, 30 ms)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise VideoError(f"{path}: cannot write {suffix or 'a file without suffix'}; "
                         f"use one of {', '.join(WRITE_SUFFIXES)}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    stream = _frame_stream(frames)
    first = next(stream, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    height, width = first.shape[:2]
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{width}x{height}", "-framerate", f"{fps:.6g}", "-i", "-",
           *_encoder_args(suffix, height, width, crf, full_chroma)]
    with atomic_path(path) as tmp, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([*cmd, str(tmp)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=err)
        assert proc.stdin is not None
        try:
            frame: np.ndarray | None = first
            while frame is not None:
                if frame.shape != first.shape:
                    raise ValueError(f"{path}: frame of shape {frame.shape} after {first.shape}")
                proc.stdin.write(np.ascontiguousarray(frame).tobytes())
                frame = next(stream, None)
            proc.stdin.close()
            returncode = proc.wait()
        except BrokenPipeError:
            returncode = proc.wait()  # ffmpeg died: its message explains why
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if returncode != 0:
            err.seek(0)
            message = first_error(err.read().decode("utf-8", "replace"))
            raise VideoError(f"{path}: ffmpeg could not write the video ({message})")
    return path
