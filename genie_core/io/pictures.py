"""Pictures: PNG files and side-by-side grids of frames (originals vs reconstructions, rollouts).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from genie_core.io.atomic import atomic_path
from genie_core.io.frames import to_rgb


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
