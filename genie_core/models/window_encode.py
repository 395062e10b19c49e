"""Tokenizing a long frame sequence window by window with a causal warm-up, so that the ids do not
depend on where window boundaries fall and equal one continuous encoding (Genie §2.1, the causal
video tokenizer)."""

# Each window is encoded together with the frames before it that the encoder can see (its temporal
# receptive field, ``temporal_receptive_field``), and only the window's own ids are kept. Memory
# holds one batch of windows and their warm-ups, never the whole sequence.
#
# Exactness. With time downsampling t = 1 the ids equal one continuous encoding of the whole
# sequence. With t > 1 every window starts at a multiple of t (windows are a multiple of t frames
# long, the warm-up is rounded up to one) and the last window is completed by repeating its last
# frame, so the ids equal one continuous encoding of the sequence extended to a multiple of t
# frames by repeating its last frame: latent frame j covers frames [j t, j t + t). A continuous
# encoding of a sequence whose length is not a multiple of t groups from its end instead (see
# ``VideoTokenizer.encode``); matching that would need the length before the first window, which
# a stream does not give, so token files keep the grouping from the first frame. An encoder layer
# that looks ahead (``causal=False``) is not covered by the warm-up: its window edges still show.

from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from genie_core.io.frames import to_model
from genie_core.models.layers.blocks import BlurDownsample
from genie_core.models.layers.conv import CausalConv3d
from genie_core.runtime import inference


def temporal_receptive_field(model: nn.Module) -> int:
    """Frames before the last frame of a latent's group that can change that latent: the sum over
    the encoder's time-mixing layers, in order, of (time kernel - 1) x the time stride before them
    (a time pool of factor f counts as a kernel of f). 0 for a model without such layers."""
    encoder = getattr(model, "encoder", model)
    look, scale = 0, 1
    for module in encoder.modules():  # registration order is forward order for every block
        if isinstance(module, CausalConv3d):
            look += (module.time_kernel - 1) * scale
            scale *= module.time_stride
        elif isinstance(module, BlurDownsample):
            look += (module.time_factor - 1) * scale
            scale *= module.time_factor
    return look


def warmup_frames(model: nn.Module) -> int:
    """Frames encoded before each window: the receptive field rounded up to whole time groups."""
    td = int(getattr(model, "time_downsample", 1))
    return math.ceil(temporal_receptive_field(model) / td) * td


def _pad_end(frames: np.ndarray, length: int) -> np.ndarray:
    """Repeat the last frame up to ``length`` frames; the causal encoder never lets the padding
    change the ids of the real frames before it."""
    if len(frames) >= length:
        return frames
    return np.concatenate([frames, np.repeat(frames[-1:], length - len(frames), axis=0)])


def encode_windows(model: nn.Module, windows: Iterable[np.ndarray], *, device: torch.device,
                   precision: str, batch_windows: int, warmup: int | None = None
                   ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(window frames uint8 (n, H, W, 3), ids int64 (ceil(n / t), h, w) on CPU) for consecutive
    windows of one sequence, in order. Every window but the last must be a multiple of the time
    downsampling t long. Each is encoded after the ``warmup`` frames before it (default
    ``warmup_frames(model)``, fewer at the start). One encoder call takes windows of one input
    length, at most ``batch_windows`` of them and no more frames than ``batch_windows`` first
    windows without warm-up (at least one window: memory grows with the warm-up only when one
    window and its warm-up exceed that). A short last window is completed by repeating its last
    frame."""
    td = int(getattr(model, "time_downsample", 1))
    warm = warmup_frames(model) if warmup is None else math.ceil(warmup / td) * td
    tail = np.zeros((0,), np.uint8)  # the last ``warm`` frames seen, the next window's warm-up
    batch: list[tuple[np.ndarray, np.ndarray]] = []  # (window, encoder input)
    budget = 0  # frames per encoder call, set from the first window
    short = False  # the previous window was not a multiple of td: it must have been the last

    def flush() -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        clip = np.stack([inp for _, inp in batch])  # (B, T, H, W, 3)
        with inference(device, precision):
            ids = model.tokenize(to_model(clip, device=device))[1]  # (B, T / t, h, w)
        ids = ids.long().cpu()
        for (frames, inp), window_ids in zip(batch, ids):
            skip = (len(inp) - math.ceil(len(frames) / td) * td) // td  # the warm-up's latents
            yield frames, window_ids[skip: skip + math.ceil(len(frames) / td)].clone()
        batch.clear()

    for frames in windows:
        frames = np.asarray(frames)
        if len(frames) == 0:
            continue
        if short:
            raise ValueError(f"every window but the last must be a multiple of {td} frames")
        short = len(frames) % td != 0
        window = _pad_end(frames, math.ceil(len(frames) / td) * td)
        inp = np.concatenate([tail, window]) if len(tail) else window
        budget = budget or batch_windows * len(window)  # frames per call without warm-ups
        if batch and (len(batch[0][1]) != len(inp) or (len(batch) + 1) * len(inp) > budget):
            yield from flush()
        batch.append((frames, inp))
        if len(batch) == batch_windows:
            yield from flush()
        if warm:
            tail = np.concatenate([tail, frames])[-warm:] if len(tail) else frames[-warm:]
    if batch:
        yield from flush()


def encode_ids(model: nn.Module, windows: Iterable[np.ndarray], *, device: torch.device, precision: str,
               batch_windows: int) -> tuple[np.ndarray, int]:
    """(ids int32 (T', h, w), frames read) of one sequence given as consecutive windows
    (``encode_windows``, concatenated); ids of shape (0, 0, 0) when there were no frames."""
    chunks, num_frames = [], 0
    for frames, ids in encode_windows(model, windows, device=device, precision=precision,
                                      batch_windows=batch_windows):
        # int32 copies: a view would keep the whole batch's int64 ids alive.
        chunks.append(ids.numpy().astype(np.int32))
        num_frames += len(frames)
    return (np.concatenate(chunks) if chunks else np.zeros((0, 0, 0), np.int32)), num_frames


def token_meta(model: nn.Module, *, source: str, fps: float | None, num_frames: int,
               frame_size: Sequence[int], tokenizer: str, digest: str | None, window: int,
               **extra: Any) -> dict[str, Any]:
    """The metadata a token file records for ids ``model`` encoded window by window (``genie
    tokenize`` and the dynamics stage's token cache write the same keys; ``extra`` adds some)."""
    from genie_core.version import TOKEN_FORMAT_VERSION, __version__

    return {
        "format_version": TOKEN_FORMAT_VERSION,
        "source": source,
        "fps": fps,
        "num_frames": int(num_frames),
        "frame_size": [int(frame_size[0]), int(frame_size[1])],
        "tokenizer": tokenizer,
        "tokenizer_digest": digest,
        "time_downsample": int(getattr(model, "time_downsample", 1)),
        "space_downsample": int(model.space_downsample),
        "vocab_size": int(model.vocab_size),
        # Frames per encoder call; each window is encoded after ``window_warmup`` earlier frames,
        # so the ids equal one continuous encoding (see the notes at the top of this module).
        "window": int(window),
        "window_warmup": warmup_frames(model),
        **extra,
        "genie_version": __version__,
    }
