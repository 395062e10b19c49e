"""Reading video and images at the pipeline's edges: files in, uint8 RGB frames (T, H, W, 3) out
(Genie §3 trains on raw video clips; docs/design.md, "Tensors"). ffmpeg (bundled by
imageio-ffmpeg, see ffmpeg.py) handles mp4/webm/avi/...; Pillow handles GIF and stills. Writing
is in video_write.py, PNGs and grids in pictures.py, frame conversions (to_rgb, fit_frames,
to_model/from_model) in frames.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, ImageSequence

from genie_core.errors import VideoError
from genie_core.io.ffmpeg import ffmpeg_frames, ffmpeg_probe
from genie_core.io.frames import check_size, fit_frame, fit_frames, to_rgb

VIDEO_SUFFIXES = (".mp4", ".gif", ".webm", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg",
                  ".ogv", ".wmv", ".flv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass(frozen=True)
class VideoInfo:
    """``num_frames`` is exact for GIFs; for ffmpeg formats it is the container's duration x fps
    (may be off by a frame or two, None when the container does not say; ``exact=True`` counts)."""

    fps: float
    num_frames: int | None
    height: int
    width: int


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
        if path.is_symlink():
            raise VideoError(f"{path}: a dangling symlink or a symlink loop")
        raise VideoError(f"{path}: no such file")
    if not path.is_file():
        raise VideoError(f"{path}: not a file")
    try:
        with open(path, "rb"):
            pass
        empty = path.stat().st_size == 0
    except OSError as err:
        raise VideoError(f"{path}: cannot read ({err.strerror or type(err).__name__})") from None
    if empty:
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
    probe = ffmpeg_probe(path)
    if exact:
        count = sum(1 for _ in ffmpeg_frames(path, probe, strict=True))
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
    size = None if size is None else check_size(size)
    path = _check_file(path)
    if _is_gif(path):
        fps, source = _gif_info(path).fps, _gif_frames(path)
    else:
        probe = ffmpeg_probe(path)
        fps, source = probe.fps, ffmpeg_frames(path, probe, strict)

    def select() -> Iterator[np.ndarray]:
        kept = 0
        try:
            for index, frame in enumerate(source):
                if index < start or (index - start) % stride:
                    continue
                yield frame if size is None else fit_frame(frame, size)
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


def find_videos(folder: str | os.PathLike,
                unreadable: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Every video under ``folder`` (recursive, symlinked folders followed once), sorted by path.

    Hidden files and folders (names starting with '.') are skipped: they hold editor and OS
    clutter such as macOS ``._clip.mp4`` resource forks, which are not videos. Folders that
    cannot be listed are appended to ``unreadable`` as (path, reason)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoError(f"{folder}: no such folder")

    def onerror(err: OSError) -> None:
        if unreadable is not None:
            unreadable.append((Path(err.filename or folder),
                               f"cannot read folder ({err.strerror or type(err).__name__})"))

    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True, onerror=onerror):
        real = os.path.realpath(root)
        if real in seen:  # a symlink loop
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root) / f for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in VIDEO_SUFFIXES]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())

