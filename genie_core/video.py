"""Video and image I/O at the pipeline's edges: uint8 RGB frames (T, H, W, 3) in and out (Genie §3
trains on raw video clips; DESIGN.md "Tensor conventions"). ffmpeg (bundled by imageio-ffmpeg)
handles mp4/webm/avi/...; Pillow handles GIF and stills. torch is imported only in to_model/from_model.
"""

from __future__ import annotations

import functools
import math
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, ImageSequence

from genie_core.atomic import atomic_path
from genie_core.errors import VideoError

VIDEO_SUFFIXES = (".mp4", ".gif", ".webm", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg",
                  ".ogv", ".wmv", ".flv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DEFAULT_CRF = 12  # x264/vp9 constant quality: visually lossless, still tiny files at 64x64


@dataclass(frozen=True)
class VideoInfo:
    """``num_frames`` is exact for GIFs; for ffmpeg formats it is the container's duration x fps
    (may be off by a frame or two, None when the container does not say; ``exact=True`` counts)."""

    fps: float
    num_frames: int | None
    height: int
    width: int


# ----------------------------------------------------------------------------- frame helpers

def to_rgb(frames: np.ndarray) -> np.ndarray:
    """Grayscale (..., H, W) or (..., H, W, 1), RGB, or RGBA (..., H, W, 4) uint8 -> (..., H, W, 3).

    Alpha is composited over black, so fully transparent pixels become black whatever colour
    they happen to store."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {frames.dtype}")
    if frames.ndim >= 1 and frames.shape[-1] == 3 and frames.ndim >= 3:
        return frames
    if frames.ndim >= 3 and frames.shape[-1] == 4:
        alpha = frames[..., 3:].astype(np.uint16)
        return ((frames[..., :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
    if frames.ndim >= 3 and frames.shape[-1] == 1:
        frames = frames[..., 0]
    if frames.ndim >= 2:
        return np.repeat(frames[..., None], 3, axis=-1)  # (..., H, W) -> (..., H, W, 3)
    raise ValueError(f"cannot interpret an array of shape {frames.shape} as frames")


def _crop_box(height: int, width: int, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Centre box (left, top, right, bottom) of the source with the target's aspect ratio."""
    target_h, target_w = size
    if width * target_h > target_w * height:  # source wider than target: crop the sides
        crop_w = height * target_w / target_h
        left = (width - crop_w) / 2
        return left, 0.0, left + crop_w, float(height)
    crop_h = width * target_h / target_w
    top = (height - crop_h) / 2
    return 0.0, top, float(width), top + crop_h


def _fit_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One RGB frame (H, W, 3) -> (size[0], size[1], 3): centre-crop to aspect, then resize."""
    height, width = frame.shape[:2]
    if (height, width) == tuple(size):
        return frame
    left, top, right, bottom = _crop_box(height, width, size)
    if (right - left, bottom - top) == (size[1], size[0]) and left.is_integer() and top.is_integer():
        return frame[int(top):int(bottom), int(left):int(right)]  # a pure crop: exact slice
    # Area averaging when shrinking (no aliasing, no ringing); antialiased bicubic otherwise.
    shrink = (right - left) >= size[1] and (bottom - top) >= size[0]
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC
    image = Image.fromarray(frame).resize((size[1], size[0]), resample, box=(left, top, right, bottom))
    return np.asarray(image)


def fit_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 frames (T, H, W, C) or one frame (H, W, C) -> RGB at ``size`` = (H, W).

    Centre-crops to the target aspect ratio, then resizes (area when shrinking, antialiased
    bicubic when enlarging). Grayscale and alpha become RGB first (see ``to_rgb``)."""
    size = _check_size(size)
    frames = to_rgb(frames)
    if frames.ndim == 3:
        return _fit_frame(frames, size)
    if frames.shape[1:3] == size:
        return frames
    out = np.empty((frames.shape[0], *size, 3), np.uint8)  # (T, H, W, 3)
    for t, frame in enumerate(frames):
        out[t] = _fit_frame(frame, size)
    return out


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"size must be (height, width) with positive integers, got {size!r}")
    return int(size[0]), int(size[1])


# ----------------------------------------------------------------------------- ffmpeg reading

@functools.lru_cache(maxsize=1)
def _ffmpeg() -> str:
    import imageio_ffmpeg  # light: locates the bundled binary

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class _Probe:
    fps: float
    duration: float | None
    height: int
    width: int
    alpha: bool


_ALPHA_FORMATS = re.compile(r"^(yuva|rgba|bgra|argb|abgr|ya8|ya16|gbrap|pal8)")


def _first_error(text: str) -> str:
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


def _ffmpeg_probe(path: Path) -> _Probe:
    """Open the file with ffmpeg and decode one frame: proves it is a video and gives the size of
    the frames ffmpeg will hand over (after rotation metadata is applied)."""
    cmd = [_ffmpeg(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0",
           "-frames:v", "1", "-f", "null", "-"]
    proc = subprocess.run(cmd, capture_output=True, timeout=120)
    text = proc.stderr.decode("utf-8", "replace")
    inputs, _, outputs = text.partition("Output #0")
    in_lines = [ln for ln in inputs.splitlines() if ln.lstrip().startswith("Stream #") and "Video:" in ln]
    if proc.returncode != 0 or not in_lines:
        raise VideoError(f"{path}: not a readable video ({_first_error(text)})")
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
    return _Probe(fps=fps, duration=duration, height=height, width=width,
                  alpha=bool(_ALPHA_FORMATS.match(pix_fmt)))


def _ffmpeg_frames(path: Path, probe: _Probe, strict: bool) -> Iterator[np.ndarray]:
    """Decode every frame, one (H, W, 3) uint8 array at a time, streamed through a pipe."""
    channels = 4 if probe.alpha else 3
    cmd = [_ffmpeg(), "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0",
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
                                 f"({_first_error(message)})")
            if count == 0:
                raise VideoError(f"{path}: video has no frames")
        finally:
            if not finished:  # the caller stopped early (or failed): stop our ffmpeg
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


# ----------------------------------------------------------------------------- GIF (Pillow)

def _gif_info(path: Path) -> VideoInfo:
    with _open_image(path) as image:
        try:
            delays = [frame.info.get("duration", 0) or 0 for frame in ImageSequence.Iterator(image)]
        except Exception as exc:  # Pillow raises many types (IndexError, EOFError, ...) on bad data
            raise VideoError(f"{path}: truncated or corrupt GIF ({_one_line(exc)})") from None
        width, height = image.size
    positive = [d for d in delays if d > 0]
    # GIF delays are centiseconds; browsers play a 0 delay as 100 ms, so we read it as 10 fps.
    fps = 1000.0 / (sum(positive) / len(positive)) if positive else 10.0
    return VideoInfo(fps=round(fps, 3), num_frames=len(delays), height=height, width=width)


def _gif_frames(path: Path) -> Iterator[np.ndarray]:
    with _open_image(path) as image:
        try:
            for frame in ImageSequence.Iterator(image):
                yield _pil_to_rgb(frame)
        except Exception as exc:
            raise VideoError(f"{path}: truncated or corrupt GIF ({_one_line(exc)})") from None


def _open_image(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except Exception as exc:
        raise VideoError(f"{path}: not a readable image ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8; alpha (palette transparency included) over black."""
    if image.mode in ("RGBA", "LA", "PA", "P") or "transparency" in image.info:
        return to_rgb(np.asarray(image.convert("RGBA")))
    return np.asarray(image.convert("RGB"))


# ----------------------------------------------------------------------------- public reading

def _check_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if not path.is_file():
        raise VideoError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file, not a video")
    return path


def _is_gif(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(6) in (b"GIF87a", b"GIF89a")


def probe_video(path: str | os.PathLike, exact: bool = False) -> VideoInfo:
    """Frame rate, frame count and decoded frame size, without reading the frames.

    ``exact=True`` decodes the whole stream to count the frames (ffmpeg formats only)."""
    path = _check_file(path)
    if _is_gif(path):
        return _gif_info(path)
    probe = _ffmpeg_probe(path)
    if exact:
        count = sum(1 for _ in _ffmpeg_frames(path, probe, strict=True))
    elif probe.duration and probe.fps:
        count = max(1, round(probe.duration * probe.fps))
    else:
        count = None
    return VideoInfo(fps=probe.fps, num_frames=count, height=probe.height, width=probe.width)


def _frames(path: str | os.PathLike, size: tuple[int, int] | None, start: int, stride: int,
            max_frames: int | None, strict: bool) -> tuple[Iterator[np.ndarray], float]:
    """(generator of selected, resized frames, fps of the source)."""
    if start < 0 or stride < 1 or (max_frames is not None and max_frames < 1):
        raise ValueError(f"need start >= 0, stride >= 1, max_frames >= 1 (got {start}, {stride}, "
                         f"{max_frames})")
    size = None if size is None else _check_size(size)
    path = _check_file(path)
    if _is_gif(path):
        fps, source = _gif_info(path).fps, _gif_frames(path)
    else:
        probe = _ffmpeg_probe(path)
        fps, source = probe.fps, _ffmpeg_frames(path, probe, strict)

    def select() -> Iterator[np.ndarray]:
        kept = 0
        try:
            for index, frame in enumerate(source):
                if index < start or (index - start) % stride:
                    continue
                yield frame if size is None else _fit_frame(frame, size)
                kept += 1
                if max_frames is not None and kept >= max_frames:
                    return
        finally:
            source.close()  # stops ffmpeg at once when we leave early
        if kept == 0:
            raise VideoError(f"{path}: no frames at or after frame {start}")

    return select(), fps


def read_video(path: str | os.PathLike, size: tuple[int, int] | None = None,
               max_frames: int | None = None, start: int = 0, stride: int = 1,
               strict: bool = True) -> tuple[np.ndarray, float]:
    """Frames ``start, start+stride, ...`` (at most ``max_frames``) as uint8 (T, H, W, 3), and the
    frame rate of what is returned (the source's fps / stride).

    ``size=(H, W)`` centre-crops and resizes every frame (``fit_frames``). Raises VideoError for a
    missing file, a file that is not a video, a truncated or corrupt one (``strict=False`` keeps
    the frames that decode instead), and a video with no frames."""
    frames, fps = _frames(path, size, start, stride, max_frames, strict)
    return np.stack(list(frames)), fps / stride


def iter_video(path: str | os.PathLike, size: tuple[int, int] | None = None, window: int = 16,
               stride: int = 1, start: int = 0, max_frames: int | None = None,
               strict: bool = True) -> Iterator[np.ndarray]:
    """Consecutive windows of at most ``window`` frames, uint8 (t, H, W, 3), streamed from the
    file: memory holds one window, never the whole video. Concatenated, the windows equal
    ``read_video`` with the same arguments. A truncated file raises at the end, after the
    windows that decoded."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    frames, _ = _frames(path, size, start, stride, max_frames, strict)
    chunk: list[np.ndarray] = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == window:
            yield np.stack(chunk)
            chunk = []
    if chunk:
        yield np.stack(chunk)


def read_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """A still image (png, jpg, ...; EXIF rotation applied) as uint8 (H, W, 3), optionally fitted
    to ``size`` = (H, W). An animated file gives its first frame."""
    path = _check_file(path)
    with _open_image(path) as image:
        try:
            image = ImageOps.exif_transpose(image)
            frame = _pil_to_rgb(image)
        except Exception as exc:
            raise VideoError(f"{path}: truncated or corrupt image ({_one_line(exc)})") from None
    return frame if size is None else fit_frames(frame, size)


def find_videos(folder: str | os.PathLike) -> list[Path]:
    """Every video under ``folder`` (recursive, symlinked folders followed once), sorted by path.

    Hidden files and folders (names starting with '.') are skipped: they hold editor and OS
    clutter such as macOS ``._clip.mp4`` resource forks, which are not videos."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoError(f"{folder}: no such folder")
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a symlink loop
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root) / f for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in VIDEO_SUFFIXES]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


# ----------------------------------------------------------------------------- writing

def _encoder_args(suffix: str, height: int, width: int, crf: int) -> list[str]:
    """ffmpeg output options per container. H.264/VP9 4:2:0 needs even sizes, so odd sizes get
    4:4:4 (exact size kept, fine for ffmpeg, less widely played)."""
    chroma = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
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
                crf: int = DEFAULT_CRF) -> Path:
    """Write uint8 frames (T, H, W, 3) (or an iterable of frames or windows, streamed) to
    ``path``; the suffix picks the format (mp4/mov/mkv: H.264, webm: VP9, avi: MJPEG, gif).

    Atomic: a temporary file is renamed onto ``path`` only when ffmpeg succeeded. ``crf`` is the
    constant-quality setting (lower is better; 0 is lossless luma for H.264). GIF stores delays
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
    cmd = [_ffmpeg(), "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{width}x{height}", "-framerate", f"{fps:.6g}", "-i", "-",
           *_encoder_args(suffix, height, width, crf)]
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
            message = _first_error(err.read().decode("utf-8", "replace"))
            raise VideoError(f"{path}: ffmpeg could not write the video ({message})")
    return path


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a uint8 image (H, W), (H, W, 3) or (H, W, 4) as PNG, atomically."""
    path = Path(path)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 (H, W[, C]) image, got {image.dtype} {image.shape}")
    with atomic_path(path) as tmp:
        Image.fromarray(image if image.ndim == 2 or image.shape[-1] != 1 else image[..., 0]).save(
            tmp, format="PNG")
    return path


def make_grid(rows: Sequence[np.ndarray], pad: int = 2, labels: Sequence[str] | None = None,
              background: int = 255) -> np.ndarray:
    """Side-by-side picture: row i shows the frames of ``rows[i]`` (T, H, W, 3) (or one image
    (H, W, 3)) left to right; rows are stacked top to bottom, ``pad`` pixels apart and around.
    ``labels`` (one per row) are drawn in a left margin. Returns uint8 (H, W, 3)."""
    if not rows:
        raise ValueError("make_grid needs at least one row")
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"{len(labels)} labels for {len(rows)} rows")
    strips = []
    for row in rows:
        row = to_rgb(np.asarray(row))
        if row.ndim == 3:
            row = row[None]  # one image -> (1, H, W, 3)
        frames, height, width = row.shape[:3]
        strip = np.full((height, frames * (width + pad) - pad, 3), background, np.uint8)
        for t in range(frames):
            strip[:, t * (width + pad):t * (width + pad) + width] = row[t]
        strips.append(strip)
    font = ImageFont.load_default()
    margin = 0
    if labels is not None:
        margin = max(int(math.ceil(font.getlength(str(text)))) for text in labels) + pad + 2
    width = margin + max(s.shape[1] for s in strips) + 2 * pad
    height = sum(s.shape[0] for s in strips) + pad * (len(strips) + 1)
    grid = np.full((height, width, 3), background, np.uint8)
    top = pad
    for strip in strips:
        grid[top:top + strip.shape[0], margin + pad:margin + pad + strip.shape[1]] = strip
        top += strip.shape[0] + pad
    if labels is not None:
        image = Image.fromarray(grid)
        draw = ImageDraw.Draw(image)
        ink = (0, 0, 0) if background > 127 else (255, 255, 255)
        top = pad
        for text, strip in zip(labels, strips):
            box = draw.textbbox((0, 0), str(text), font=font)  # no anchor: bitmap fonts lack it
            y = top + (strip.shape[0] - (box[3] - box[1])) // 2 - box[1]
            draw.text((pad, y), str(text), fill=ink, font=font)
            top += strip.shape[0] + pad
        grid = np.asarray(image)
    return grid


def write_grid(path: str | os.PathLike, rows: Sequence[np.ndarray], pad: int = 2,
               labels: Sequence[str] | None = None) -> Path:
    """``make_grid`` written as a PNG (atomic)."""
    return write_png(path, make_grid(rows, pad=pad, labels=labels))


# ----------------------------------------------------------------------------- model tensors

def to_model(frames: Any, device: Any = None, dtype: Any = None) -> Any:
    """uint8 frames (B, T, H, W, 3) or (T, H, W, 3), numpy or torch -> float (B, 3, T, H, W) in
    [-1, 1] (x / 127.5 - 1), the tokenizer's input convention (DESIGN.md)."""
    import torch
    from einops import rearrange

    x = torch.as_tensor(np.asarray(frames) if isinstance(frames, np.ndarray) else frames)
    if x.dtype != torch.uint8:
        raise ValueError(f"to_model expects uint8 frames, got {x.dtype}")
    if x.ndim == 4:
        x = x[None]  # (T, H, W, 3) -> (1, T, H, W, 3)
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"to_model expects (B, T, H, W, 3) frames, got {tuple(x.shape)}")
    x = rearrange(x.to(device), "b t h w c -> b c t h w")
    return x.to(dtype or torch.float32) / 127.5 - 1.0


def from_model(x: Any) -> np.ndarray:
    """float (B, 3, T, H, W) or (3, T, H, W) in [-1, 1] -> uint8 numpy (B, T, H, W, 3), clamped."""
    import torch
    from einops import rearrange

    x = torch.as_tensor(x).detach()
    if x.ndim == 4:
        x = x[None]  # (3, T, H, W) -> (1, 3, T, H, W)
    if x.ndim != 5 or x.shape[1] != 3:
        raise ValueError(f"from_model expects (B, 3, T, H, W), got {tuple(x.shape)}")
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(x, "b c t h w -> b t h w c").cpu().numpy()
