"""What the commands call: load a tokenizer, tokenize a video, reconstruct a video (Genie §2.1,
the video tokenizer). Long videos stream through in windows (``video.iter_video``) and are never
read whole; windows are batched and run under bf16 autocast.

Each window is encoded after the earlier frames its causal encoder can see (a warm-up), so the
ids equal one continuous encoding of the video (``genie_core.models.window_encode``); a short last
window is padded by repeating its last frame and the padding is trimmed.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from genie_core.config.train import MAX_FRAME_SIDE
from genie_core.errors import ArgumentError, GenieError
from genie_core.io.checkpoint_format import LoadedModel, read_metadata
from genie_core.io.tokens import file_digest
from genie_core.runtime import inference, resolve_device, resolve_precision, valid_seed

DEFAULT_WINDOW = 16  # frames per window when neither the checkpoint nor the preset says


@dataclass
class LoadedTokenizer(LoadedModel):
    """A tokenizer (``model``: a VideoTokenizer) in eval mode with what the token files record
    about it."""

    window: int  # frames per encoded window, after a causal warm-up (a multiple of time_downsample)

    @property
    def time_downsample(self) -> int:
        return int(self.model.time_downsample)

    @property
    def space_downsample(self) -> int:
        return int(self.model.space_downsample)


def _round_window(window: int, time_downsample: int) -> int:
    if window < 1:
        raise ArgumentError(f"the window must be at least 1 frame, got {window}")
    return math.ceil(window / time_downsample) * time_downsample


def _hints(meta: dict[str, str]) -> tuple[tuple[int, int] | None, int | None]:
    """(frame size, clip length) a checkpoint's metadata records about its training data: the
    ``data`` entry training writes, a world's ``resolution``, else the frame size the GAN
    discriminator was built for."""
    def pair(value: Any) -> tuple[int, int] | None:
        try:
            return (int(value[0]), int(value[1])) if value else None
        except (TypeError, ValueError, IndexError):
            return None

    try:
        data = json.loads(meta.get("data") or "{}")
        config = json.loads(meta.get("config") or "{}")
    except json.JSONDecodeError:
        return None, None
    data = data if isinstance(data, dict) else {}
    config = config if isinstance(config, dict) else {}
    tokenizer_cfg = config.get("tokenizer", config) if meta.get("kind") == "world" else config
    disc = tokenizer_cfg.get("disc") if isinstance(tokenizer_cfg, dict) else None
    resolution = (pair(data.get("resolution")) or pair(config.get("resolution"))
                  or pair(disc.get("inp_size") if isinstance(disc, dict) else None))
    frames = data.get("num_frames")
    return resolution, (int(frames) if isinstance(frames, int) and frames > 0 else None)


def load_tokenizer(checkpoint: str | os.PathLike | None = None, *, preset: str | None = None,
                   overrides: tuple[str, ...] | list[str] = (), device: str | torch.device = "auto",
                   window: int | None = None, seed: int = 0) -> LoadedTokenizer:
    """A tokenizer from a checkpoint (kind ``tokenizer``, or the tokenizer of a ``world`` bundle;
    training-only parts such as the discriminator are left out), or, with ``preset`` and no
    checkpoint, an untrained one seeded with ``seed`` (smoke tests)."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if checkpoint is not None:
        from genie_core.models.load import load_model

        path = Path(checkpoint)
        model = load_model(path, "tokenizer", inference=True)  # a tokenizer, or a world's
        meta = read_metadata(path)
        resolution, clip_frames = _hints(meta)
        source, digest = str(path), file_digest(path)
    elif preset is not None:
        from genie_core.config import load_preset
        from genie_core.models.tokenizer import VideoTokenizer
        from genie_core.models.world import inference_tokenizer_config

        cfg = load_preset(preset, overrides)
        with torch.random.fork_rng(devices=[]):  # deterministic weights, global RNG untouched
            torch.manual_seed(valid_seed(seed))
            model = VideoTokenizer.from_config(inference_tokenizer_config(cfg.tokenizer))
        resolution, clip_frames = tuple(cfg.data.resolution), cfg.data.num_frames
        source, digest = f"preset:{preset}", None
    else:
        raise GenieError("a tokenizer is needed: pass --checkpoint FILE (or --preset NAME for an "
                         "untrained one)")
    model = model.to(dev).eval()
    td = int(model.time_downsample)
    win = _round_window(window or clip_frames or DEFAULT_WINDOW, td)
    return LoadedTokenizer(model, dev, source, digest, resolution, win)


def frame_size(tok: LoadedTokenizer, source_hw: tuple[int, int],
               size: tuple[int, int] | None = None) -> tuple[int, int]:
    """The (H, W) frames are fitted to: ``size``, else the training resolution, else the source
    size cropped down to a multiple of the spatial downsampling."""
    sd = tok.space_downsample
    if size is None:
        size = tok.resolution or (source_hw[0] // sd * sd, source_hw[1] // sd * sd)
    h, w = int(size[0]), int(size[1])
    if max(h, w) > MAX_FRAME_SIDE:
        raise GenieError(f"frame size {h}x{w} is larger than {MAX_FRAME_SIDE}x{MAX_FRAME_SIDE}")
    if h < sd or w < sd or h % sd or w % sd:
        raise GenieError(f"frame size {h}x{w} must be a positive multiple of the tokenizer's "
                         f"spatial downsampling ({sd})")
    return h, w


# ---- streaming core ------------------------------------------------------------------------

def _window_frames(path: Path, size: tuple[int, int], window: int) -> Iterator[np.ndarray]:
    from genie_core.io.video import iter_video

    return (frames for frames in iter_video(path, size=size, window=window) if len(frames))


@dataclass
class _WindowResult:
    frames: np.ndarray  # uint8 (n, H, W, 3), the fitted input frames
    ids: torch.Tensor  # int64 (ceil(n / time_downsample), h, w) on CPU


def _encode_windows(tok: LoadedTokenizer, path: Path, size: tuple[int, int], batch_windows: int,
                    precision: str) -> Iterator[_WindowResult]:
    """The video's windows with their ids, each window encoded after a causal warm-up
    (``window_encode.encode_windows``)."""
    from genie_core.models.window_encode import encode_windows

    for frames, ids in encode_windows(tok.model, _window_frames(path, size, tok.window),
                                      device=tok.device, precision=precision,
                                      batch_windows=batch_windows):
        yield _WindowResult(frames, ids)


def _probe(path: Path) -> Any:
    from genie_core.io.video import probe_video

    return probe_video(path)


# ---- tokenize ------------------------------------------------------------------------------

def tokenize_video(tok: LoadedTokenizer, path: str | os.PathLike, *,
                   size: tuple[int, int] | None = None, batch_windows: int = 4,
                   precision: str = "auto") -> tuple[np.ndarray, dict[str, Any]]:
    """Token ids int32 (T', h, w) of a whole video, and the metadata a token file records."""
    from genie_core.models.window_encode import encode_ids, token_meta

    path = Path(path)
    precision = resolve_precision(precision, tok.device)  # the token file records what ran
    info = _probe(path)
    hw = frame_size(tok, (info.height, info.width), size)
    ids, num_frames = encode_ids(tok.model, _window_frames(path, hw, tok.window), device=tok.device,
                                 precision=precision, batch_windows=batch_windows)
    if num_frames == 0:
        from genie_core.errors import VideoError
        raise VideoError(f"{path}: no frames")
    meta = token_meta(tok.model, source=str(path), fps=float(info.fps), num_frames=num_frames, frame_size=hw,
                      tokenizer=tok.source, digest=tok.digest, window=tok.window,
                      source_size=[int(info.height), int(info.width)], precision=precision)
    return ids, meta


# ---- reconstruct ---------------------------------------------------------------------------

def _frame_metrics(orig: np.ndarray, rec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame PSNR and SSIM of two uint8 (T, H, W, 3) arrays, on [0, 1]."""
    from genie_core.metrics import psnr, ssim

    a = torch.from_numpy(orig).permute(0, 3, 1, 2).contiguous().float() / 255.0  # (T, 3, H, W)
    b = torch.from_numpy(rec).permute(0, 3, 1, 2).contiguous().float() / 255.0
    return psnr(a, b).numpy(), ssim(a, b).numpy()


def iter_reconstruction(tok: LoadedTokenizer, path: str | os.PathLike, *,
                        size: tuple[int, int] | None = None, batch_windows: int = 4,
                        precision: str = "auto", info: Any = None
                        ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(original, reconstruction) uint8 (n, H, W, 3) window by window: encode, quantise, decode
    the ids (the same path a token file takes), trim the causal padding."""
    from genie_core.io.frames import from_model

    path = Path(path)
    info = info or _probe(path)
    hw = frame_size(tok, (info.height, info.width), size)
    pending: list[_WindowResult] = []

    def flush() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # Windows of one latent length (only the last window of a video may be shorter).
        ids = torch.stack([r.ids for r in pending]).to(tok.device)  # (B, T', h, w)
        with inference(tok.device, precision):
            video = tok.model.decode_ids(ids)  # (B, 3, T, H, W)
        frames = from_model(video.float())  # uint8 (B, T, H, W, 3)
        for r, rec in zip(pending, frames):
            yield r.frames, rec[: len(r.frames)]
        pending.clear()

    for res in _encode_windows(tok, path, hw, batch_windows, precision):
        if pending and len(pending[0].ids) != len(res.ids):
            yield from flush()
        pending.append(res)
        if len(pending) == batch_windows:
            yield from flush()
    if pending:
        yield from flush()


class _EvenSample:
    """Keeps about ``count`` evenly spaced frames of a stream of unknown length in bounded memory:
    every ``stride``-th frame is kept, and the stride doubles whenever 2 * count are held."""

    def __init__(self, count: int) -> None:
        self.count, self.stride, self.seen = count, 1, 0
        self.kept: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, orig: np.ndarray, rec: np.ndarray) -> None:
        for a, b in zip(orig, rec):
            if self.seen % self.stride == 0:
                self.kept.append((a, b))
                if len(self.kept) >= 2 * self.count:
                    self.kept, self.stride = self.kept[::2], self.stride * 2
            self.seen += 1

    def rows(self) -> list[np.ndarray]:
        """[originals (k, H, W, 3), reconstructions (k, H, W, 3)] with k <= count."""
        n = len(self.kept)
        idx = np.unique(np.linspace(0, n - 1, num=min(n, self.count)).round().astype(int))
        return [np.stack([self.kept[i][0] for i in idx]), np.stack([self.kept[i][1] for i in idx])]


@dataclass
class Reconstruction:
    """A reconstruction's per-frame PSNR / SSIM on [0, 1]; ``frames`` and ``originals`` (uint8
    (T, H, W, 3)) are kept by ``reconstruct_video`` only (``reconstruct_to_file`` streams)."""

    fps: float
    num_frames: int
    frame_size: tuple[int, int]
    psnr_per_frame: np.ndarray = field(repr=False)  # (T,)
    ssim_per_frame: np.ndarray = field(repr=False)  # (T,)
    seconds: float = 0.0
    frames: np.ndarray | None = field(default=None, repr=False)
    originals: np.ndarray | None = field(default=None, repr=False)

    @property
    def metrics(self) -> dict[str, float]:
        return {"psnr": float(self.psnr_per_frame.mean()), "ssim": float(self.ssim_per_frame.mean())}


class _Collector:
    """Per-frame metrics of a streamed reconstruction, plus whatever frames are to be kept."""

    def __init__(self, path: Path, fps: float, keep: bool = False, sample: int = 0) -> None:
        self.path, self.fps, self.keep = path, fps, keep
        self.sample = _EvenSample(sample) if sample else None
        self.start = time.perf_counter()
        self.psnrs: list[np.ndarray] = []
        self.ssims: list[np.ndarray] = []
        self.kept: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, orig: np.ndarray, rec: np.ndarray) -> np.ndarray:
        p, s = _frame_metrics(orig, rec)
        self.psnrs.append(p)
        self.ssims.append(s)
        if self.keep:
            self.kept.append((orig, rec))
        if self.sample is not None:
            self.sample.add(orig, rec)
        return rec

    def result(self) -> Reconstruction:
        if not self.psnrs:
            from genie_core.errors import VideoError
            raise VideoError(f"{self.path}: no frames")
        psnr_all, ssim_all = np.concatenate(self.psnrs), np.concatenate(self.ssims)
        rec = Reconstruction(self.fps, len(psnr_all), (0, 0), psnr_all, ssim_all,
                             seconds=time.perf_counter() - self.start)
        if self.kept:
            rec.originals = np.concatenate([o for o, _ in self.kept])
            rec.frames = np.concatenate([r for _, r in self.kept])
        return rec


def reconstruct_video(tok: LoadedTokenizer, path: str | os.PathLike, *,
                      size: tuple[int, int] | None = None, batch_windows: int = 4,
                      precision: str = "auto") -> Reconstruction:
    """Reconstruct a whole video in memory (same frame count and fps) with per-frame PSNR / SSIM.
    For long videos use ``reconstruct_to_file``, which streams."""
    path = Path(path)
    info = _probe(path)
    out = _Collector(path, float(info.fps), keep=True)
    for orig, rec in iter_reconstruction(tok, path, size=size, batch_windows=batch_windows,
                                         precision=precision, info=info):
        out.add(orig, rec)
    result = out.result()
    result.frame_size = tuple(result.frames.shape[1:3])  # type: ignore[union-attr, assignment]
    return result


def reconstruct_to_file(tok: LoadedTokenizer, path: str | os.PathLike, output: str | os.PathLike,
                        *, compare: str | os.PathLike | None = None, compare_frames: int = 8,
                        size: tuple[int, int] | None = None, batch_windows: int = 4,
                        precision: str = "auto") -> Reconstruction:
    """Stream a video through the tokenizer into ``output`` (.mp4 / .gif: same frame count and
    fps), with ``compare``, also a PNG of up to ``compare_frames`` evenly spaced originals above
    their reconstructions. Memory holds a batch of windows, never the whole video; both writes
    are atomic, so a video that fails to decode half-way leaves no output."""
    from genie_core.io.pictures import write_grid
    from genie_core.io.video_write import write_video

    path = Path(path)
    info = _probe(path)
    out = _Collector(path, float(info.fps), sample=compare_frames if compare is not None else 0)
    pairs = iter_reconstruction(tok, path, size=size, batch_windows=batch_windows,
                                precision=precision, info=info)
    first = next(pairs, None)  # decode errors and empty videos surface before anything is written
    if first is None:
        out.result()  # raises: no frames
    frames = (out.add(orig, rec) for orig, rec in itertools.chain([first], pairs))
    write_video(output, frames, out.fps)
    result = out.result()
    result.frame_size = tuple(first[1].shape[1:3])  # type: ignore[index, assignment]
    if out.sample is not None:
        write_grid(compare, out.sample.rows(), labels=["original", "reconstruction"])  # type: ignore[arg-type]
    return result
