"""uint8 RGB frame arrays (T, H, W, 3) (docs/design.md, "Tensors"): colour modes to RGB,
centre-crop and resize, and conversion to and from the models' float tensors. No file I/O; torch
is imported only in to_model/from_model.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image

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


def fit_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
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
    size = check_size(size)
    frames = to_rgb(frames)
    if frames.ndim == 3:
        return fit_frame(frames, size)
    if frames.shape[1:3] == size:
        return frames
    out = np.empty((frames.shape[0], *size, 3), np.uint8)  # (T, H, W, 3)
    for t, frame in enumerate(frames):
        out[t] = fit_frame(frame, size)
    return out


def check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"size must be (height, width) with positive integers, got {size!r}")
    return int(size[0]), int(size[1])


# ----------------------------------------------------------------------------- model tensors

def to_model(frames: Any, device: Any = None, dtype: Any = None) -> Any:
    """uint8 frames (B, T, H, W, 3) or (T, H, W, 3), numpy or torch -> float (B, 3, T, H, W) in
    [-1, 1] (x / 127.5 - 1), the tokenizer's input convention (docs/design.md)."""
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
