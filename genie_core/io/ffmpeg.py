"""ffmpeg (bundled by imageio-ffmpeg) as a subprocess: locate the binary, probe a file, decode its
frames through a pipe, and make ffmpeg's stderr a one-line message. Used by video.py (reading) and
video_write.py (writing).
"""

from __future__ import annotations

import functools
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from genie_core.errors import VideoError
from genie_core.io.frames import to_rgb


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    import imageio_ffmpeg  # light: locates the bundled binary

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class Probe:
    fps: float
    duration: float | None
    height: int
    width: int
    alpha: bool


_ALPHA_FORMATS = re.compile(r"^(yuva|rgba|bgra|argb|abgr|ya8|ya16|gbrap|pal8)")


def first_error(text: str) -> str:
    """The most telling line of ffmpeg's stderr, for a one-line message."""
    lines = [re.sub(r"^(\[[^\]]*\]\s*)+", "", ln.strip()) for ln in text.splitlines() if ln.strip()]
    if any("matches no streams" in ln for ln in lines):
        return "no video stream"
    for ln in lines:
        if "Invalid data" in ln or "moov atom" in ln:
            return ln
    return lines[0] if lines else "unknown ffmpeg error"


def _parse_stream(line: str) -> tuple[int, int, float, str]:
    """(height, width, fps, pix_fmt) from an ffmpeg ``Stream #0:0: Video: ...`` line."""
    body = line.split("Video:", 1)[1]
    fields = re.split(r",\s*(?![^()]*\))", body)  # commas outside parentheses
    pix_fmt = fields[1].strip().split("(")[0] if len(fields) > 1 else ""
    size = re.search(r"\s(\d+)x(\d+)(?=[\s,\[]|$)", body)
    if size is None:
        raise ValueError("no frame size")
    fps = 0.0
    for unit in ("fps", "tbr"):  # fps is the average rate; tbr a guess when it is missing
        match = re.search(r"([\d.]+)(k?) " + unit, body)
        if match:
            fps = float(match.group(1)) * (1000 if match.group(2) else 1)
            break
    return int(size.group(2)), int(size.group(1)), fps, pix_fmt


def ffmpeg_probe(path: Path) -> Probe:
    """Open the file with ffmpeg and decode one frame: proves it is a video and gives the size of
    the frames ffmpeg will hand over (after rotation metadata is applied)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0",
           "-frames:v", "1", "-f", "null", "-"]
    proc = subprocess.run(cmd, capture_output=True, timeout=120)
    text = proc.stderr.decode("utf-8", "replace")
    inputs, _, outputs = text.partition("Output #0")
    in_lines = [ln for ln in inputs.splitlines() if ln.lstrip().startswith("Stream #") and "Video:" in ln]
    if proc.returncode != 0 or not in_lines:
        raise VideoError(f"{path}: not a readable video ({first_error(text)})")
    out_lines = [ln for ln in outputs.splitlines() if ln.lstrip().startswith("Stream #") and "Video:" in ln]
    try:
        height, width, fps, pix_fmt = _parse_stream(in_lines[0])
        if out_lines:  # the decoded size, which differs from the stored one for rotated phone videos
            height, width = _parse_stream(out_lines[0])[:2]
    except (ValueError, IndexError):
        raise VideoError(f"{path}: cannot parse the video stream ({in_lines[0].strip()})") from None
    if "Output file is empty" in text:  # a video stream with no decodable frame
        raise VideoError(f"{path}: video has no frames")
    match = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", inputs)
    duration = None
    if match:
        hours, minutes, seconds = match.groups()
        duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return Probe(fps=fps, duration=duration, height=height, width=width,
                  alpha=bool(_ALPHA_FORMATS.match(pix_fmt)))


def ffmpeg_frames(path: Path, probe: Probe, strict: bool) -> Iterator[np.ndarray]:
    """Decode every frame, one (H, W, 3) uint8 array at a time, streamed through a pipe."""
    channels = 4 if probe.alpha else 3
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0",
           "-fps_mode", "passthrough",  # every stored frame exactly once: no duplicates or drops
           "-f", "rawvideo", "-pix_fmt", "rgba" if probe.alpha else "rgb24", "-"]
    frame_bytes = probe.height * probe.width * channels
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: ffmpeg can never block on stderr
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        finished = False
        try:
            assert proc.stdout is not None
            count = 0
            while True:
                buf = proc.stdout.read(frame_bytes)
                if len(buf) < frame_bytes:
                    partial = len(buf) > 0
                    break
                frame = np.frombuffer(buf, np.uint8).reshape(probe.height, probe.width, channels)
                yield to_rgb(frame) if probe.alpha else frame
                count += 1
            returncode = proc.wait()
            finished = True
            err.seek(0)
            message = err.read().decode("utf-8", "replace")
            if returncode != 0 or partial or (strict and message.strip()):
                raise VideoError(f"{path}: truncated or corrupt video after {count} frames "
                                 f"({first_error(message)})")
            if count == 0:
                raise VideoError(f"{path}: video has no frames")
        finally:
            if not finished:  # the caller stopped early (or failed): stop our ffmpeg
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
