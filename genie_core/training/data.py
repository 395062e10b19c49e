"""Training data (Genie §3: "a dataset of videos"): a folder of videos decoded ONCE into a
memory-mapped uint8 frame cache, a deterministic train/validation split by file, and random clips.

Cache layout: ``DATA/.genie_cache/<key>/frames.u8`` (all frames, (N, H, W, 3) uint8, back to back)
and ``index.json`` (one entry per video: path, offset, frame count, ground-truth actions). The key
hashes the resolution and every file's path, size and mtime, so changed files give a new cache
(the stale one at that resolution is removed) and unchanged files reuse it. A read-only data folder
caches under ``$GENIE_CACHE_DIR`` (default ``~/.cache/genie``) instead.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from genie_core.errors import GenieError, VideoError
from genie_core.io.actions import read_sidecar_actions
from genie_core.training.cache_folders import (
    CACHE_VERSION,
    DamagedCache,
    read_index,
    remove_abandoned_builds,
    remove_entry,
    remove_stale,
)

CACHE_DIRNAME = ".genie_cache"


Warn = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class VideoEntry:
    """One decoded video in the cache. ``actions[t]`` (len num_frames, -1 unknown) took frame t to t+1."""

    path: str  # relative to the data folder
    offset: int  # first frame's index in frames.u8
    num_frames: int
    actions: tuple[int, ...] | None
    action_key: str | None  # which sidecar key the actions came from


def _file_stamp(path: Path) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def cache_key(folder: Path, videos: list[Path], resolution: tuple[int, int]) -> str:
    """Hash of everything the cache depends on: format, resolution, videos and their sidecars."""
    items = []
    for path in videos:
        sidecar = path.with_suffix(".json")
        items.append([str(path.relative_to(folder)), _file_stamp(path),
                      _file_stamp(sidecar) if sidecar.is_file() else None])
    blob = json.dumps([CACHE_VERSION, list(resolution), items], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _cache_root(folder: Path, warn: Warn = _stderr) -> Path:
    """``DATA/.genie_cache`` when the data folder is writable, else a per-folder user cache.
    A ``.genie_cache`` that is a symlink is never written or deleted through: the user cache
    is used instead."""
    root = folder / CACHE_DIRNAME
    try:
        if root.is_symlink():
            warn(f"{root} is a symlink; not writing through it (caching under $GENIE_CACHE_DIR)")
        else:
            root.mkdir(exist_ok=True)
            if os.access(root, os.W_OK):
                return root
    except OSError:
        pass
    base = Path(os.environ.get("GENIE_CACHE_DIR", Path.home() / ".cache" / "genie"))
    root = base / hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:16]
    root.mkdir(parents=True, exist_ok=True)
    return root


def _build(folder: Path, videos: list[Path], resolution: tuple[int, int], dest: Path, warn: Warn) -> None:
    """Decode every video into ``dest`` (a fresh directory), streaming frames to disk."""
    from genie_core.io.video import iter_video

    entries, skipped, offset = [], [], 0
    with open(dest / "frames.u8", "wb") as fh:
        for path in videos:
            rel = str(path.relative_to(folder))
            count = 0
            try:
                for window in iter_video(path, size=resolution, window=64):
                    fh.write(np.ascontiguousarray(window, dtype=np.uint8).tobytes())
                    count += len(window)
            except (VideoError, OSError, ValueError, RuntimeError) as err:
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                warn(f"skipping unreadable video {path}: {reason}")
                skipped.append([rel, reason])
                fh.seek(offset * resolution[0] * resolution[1] * 3)  # drop its partial frames
                fh.truncate()
                continue
            if count == 0:
                warn(f"skipping video with no frames: {path}")
                skipped.append([rel, "no frames"])
                continue
            actions, key = read_sidecar_actions(path, count, warn)
            entries.append({"path": rel, "offset": offset, "num_frames": count,
                            "actions": list(actions) if actions else None, "action_key": key})
            offset += count
    if not entries:
        raise GenieError(f"no readable video in {folder} ({len(skipped)} file(s) skipped)")
    index = {"version": CACHE_VERSION, "resolution": list(resolution), "total_frames": offset,
             "videos": entries, "skipped": skipped}
    (dest / "index.json").write_text(json.dumps(index))


class FrameCache:
    """Every readable video of a folder as one memory-mapped uint8 array (N, H, W, 3)."""

    def __init__(self, root: Path, resolution: tuple[int, int] | None = None) -> None:
        self.root = root
        self.folder: Path | None = None  # the data folder (set by open): sidecars live there
        index = read_index(root, resolution)
        self.resolution = tuple(index["resolution"])
        self.skipped = [tuple(s) for s in index["skipped"]]
        self.videos = [VideoEntry(v["path"], v["offset"], v["num_frames"],
                                  tuple(v["actions"]) if v["actions"] else None, v["action_key"])
                       for v in index["videos"]]
        H, W = self.resolution
        self.frames = np.memmap(root / "frames.u8", dtype=np.uint8, mode="r",
                                shape=(index["total_frames"], H, W, 3))

    @property
    def has_actions(self) -> bool:
        return all(v.actions is not None for v in self.videos)

    @property
    def fingerprint(self) -> str:
        """Hash of what training sees of the data: resolution, files, frame counts, actions (not
        mtimes, so a copied or touched folder still matches)."""
        items = [[v.path, v.num_frames, v.actions] for v in self.videos]
        return hashlib.sha1(json.dumps([list(self.resolution), items]).encode()).hexdigest()[:16]

    @classmethod
    def open(cls, folder: str | os.PathLike, resolution: tuple[int, int], *, warn: Warn = _stderr,
             build: bool = True) -> "FrameCache":
        """The cache for ``folder`` at ``resolution``: reused when the files are unchanged, else
        rebuilt (atomically: built in a temporary directory, then renamed into place)."""
        from genie_core.io.video import find_videos

        folder = Path(folder)
        if not folder.is_dir():
            raise GenieError(f"data folder not found: {folder}")
        unreadable: list[tuple[Path, str]] = []
        videos = _reachable([p for p in find_videos(folder, unreadable) if CACHE_DIRNAME not in p.parts], warn)
        for path, reason in unreadable:
            warn(f"skipping {path}: {reason}")
        if not videos:
            raise GenieError(f"no videos (mp4, gif, webm, avi) found in {folder}")
        key = cache_key(folder, videos, resolution)
        root = _cache_root(folder, warn)
        final = root / key
        if build:
            remove_abandoned_builds(root)
        if final.is_symlink() or final.exists():
            try:
                cache = cls(final, resolution)
                for rel, reason in cache.skipped:
                    warn(f"skipping unreadable video {folder / rel}: {reason}")
                cache.folder = folder
                return cache
            except DamagedCache as err:
                if not build:
                    raise GenieError(f"frame cache {final} is damaged ({err})") from None
                warn(f"frame cache {final} is damaged ({err}); rebuilding it")
                remove_entry(final)
        if not build:
            raise GenieError(f"no frame cache for {folder} at {resolution} (it is built by rank 0)")
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-{os.getpid()}-", dir=root))
        try:
            _build(folder, videos, resolution, tmp, warn)
            try:
                os.replace(tmp, final)
            except OSError:  # another process finished the same cache first
                if not (final / "index.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        remove_stale(root, key, resolution)
        try:
            cache = cls(final, resolution)
            cache.folder = folder
            return cache
        except DamagedCache as err:
            raise GenieError(f"frame cache {final} could not be built ({err})") from None


def _reachable(videos: list[Path], warn: Warn) -> list[Path]:
    """The videos that can be stat'ed; dangling symlinks, symlink loops and the like are named
    and skipped (as ``genie tokenize`` skips them), never a crash in the cache key."""
    kept = []
    for path in videos:
        try:
            path.stat()
        except OSError as err:
            reason = ("a dangling symlink" if err.errno == errno.ENOENT and path.is_symlink()
                      else "a symlink loop" if err.errno == errno.ELOOP
                      else err.strerror or type(err).__name__)
            warn(f"skipping {path}: {reason}")
            continue
        kept.append(path)
    return kept


def split_videos(cache: FrameCache, val_fraction: float) -> tuple[list[int], list[int]]:
    """Deterministic split by file: videos ordered by a hash of their path, the first
    ``round(n * val_fraction)`` (at least one when n >= 2) held out. Adding files moves few."""
    n = len(cache.videos)
    order = sorted(range(n), key=lambda i: hashlib.sha1(cache.videos[i].path.encode()).hexdigest())
    n_val = 0 if n < 2 or val_fraction == 0 else min(n - 1, max(1, round(n * val_fraction)))
    return sorted(order[n_val:]), sorted(order[:n_val])


class ClipSet:
    """All clips of ``num_frames`` frames (every ``stride``-th frame) that fit in some videos.

    Clip ``j`` is a (video, start) pair; ``sample`` draws clips uniformly with a caller's
    generator, so a batch is a pure function of the seed it is given (what makes resume exact).
    """

    def __init__(self, cache: FrameCache, video_ids: list[int], num_frames: int, stride: int = 1) -> None:
        self.cache, self.num_frames, self.stride = cache, num_frames, stride
        span = (num_frames - 1) * stride + 1
        self.video_ids = [i for i in video_ids if cache.videos[i].num_frames >= span]
        self.with_actions = bool(self.video_ids) and all(
            cache.videos[i].actions is not None for i in self.video_ids)
        counts = np.array([cache.videos[i].num_frames - span + 1 for i in self.video_ids], dtype=np.int64)
        self.cum = np.concatenate([[0], np.cumsum(counts)])  # clip j lives in video searchsorted(cum, j)

    def __len__(self) -> int:
        return int(self.cum[-1])

    def with_frames(self, num_frames: int) -> "ClipSet":
        """The clips of another length from the same videos."""
        return ClipSet(self.cache, self.video_ids, num_frames, self.stride)

    def frame_index(self, j: int) -> np.ndarray:
        """Frame numbers (T,) int64 of clip j in ``cache.frames`` (the dynamics stage's token cache
        is indexed the same way)."""
        k = int(np.searchsorted(self.cum, j, side="right")) - 1
        video = self.cache.videos[self.video_ids[k]]
        return video.offset + int(j - self.cum[k]) + self.stride * np.arange(self.num_frames)

    def clip(self, j: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Frames uint8 (T, H, W, 3) and actions int64 (T-1,) (None without sidecars) of clip j."""
        k = int(np.searchsorted(self.cum, j, side="right")) - 1
        video = self.cache.videos[self.video_ids[k]]
        start = int(j - self.cum[k])
        pos = start + self.stride * np.arange(self.num_frames)  # frame numbers within the video
        frames = np.asarray(self.cache.frames[video.offset + pos])
        actions = None
        if self.with_actions:
            # The action at each sampled frame; with stride > 1 this is the first of the
            # ``stride`` actions between two sampled frames.
            actions = np.asarray(video.actions, dtype=np.int64)[pos[:-1]]
        return frames, actions

    def batch(self, indices: np.ndarray | list[int]) -> dict[str, np.ndarray]:
        clips = [self.clip(int(j)) for j in indices]
        out = {"frames": np.stack([c[0] for c in clips]),  # (B, T, H, W, 3)
               "frame_index": np.stack([self.frame_index(int(j)) for j in indices])}  # (B, T)
        if self.with_actions:
            out["actions"] = np.stack([c[1] for c in clips])  # (B, T-1)
        return out

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        return self.batch(rng.integers(0, len(self), size=batch_size))

    def spread(self, count: int) -> list[int]:
        """``count`` clip indices spread evenly over the set (fixed validation clips)."""
        count = min(count, len(self))
        return [int(j) for j in np.linspace(0, len(self) - 1, count).round().astype(np.int64)]


@dataclass
class Dataset:
    """The training and validation clips of a data folder for one data config (and rank)."""

    cache: FrameCache
    train: ClipSet
    val: ClipSet
    val_is_train: bool  # no held-out files (a single video, or val_fraction 0)


def load_dataset(folder: str | os.PathLike, num_frames: int, resolution: tuple[int, int],
                 frame_stride: int = 1, val_fraction: float = 0.1, *, rank: int = 0,
                 world_size: int = 1, warn: Warn = _stderr, build: bool = True) -> Dataset:
    """Open (or build) the cache, split by file, shard the training files across ranks."""
    cache = FrameCache.open(folder, resolution, warn=warn, build=build)
    train_ids, val_ids = split_videos(cache, val_fraction)
    if len(train_ids) >= world_size > 1:
        train_ids = train_ids[rank::world_size]  # each rank sees its own files
    train = ClipSet(cache, train_ids, num_frames, frame_stride)
    if len(train) == 0:
        span = (num_frames - 1) * frame_stride + 1
        raise GenieError(f"no training video in {folder} has the {span} frames a clip needs "
                         f"(num_frames={num_frames}, frame_stride={frame_stride})")
    val = ClipSet(cache, val_ids, num_frames, frame_stride)
    val_is_train = len(val) == 0
    if val_is_train:
        val = ClipSet(cache, train_ids, num_frames, frame_stride)
    return Dataset(cache, train, val, val_is_train)
