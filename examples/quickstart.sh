#!/usr/bin/env bash
# Quick start, end to end on a built-in example (no download): write a synthetic clip, get a
# tokenizer, tokenize the clip, reconstruct it with PSNR / SSIM and a side-by-side picture.
# Usage: bash examples/quickstart.sh [OUT]   (default OUT: out/quickstart)
set -euo pipefail

out="${1:-out/quickstart}"
preset="${GENIE_PRESET:-tiny}"
mkdir -p "$out"

echo "== 1/4 synthetic example clip: $out/clip.mp4" >&2
python - "$out/clip.mp4" <<'PY'
"""A ball bouncing over a gradient: 48 frames, 64x64, 12 fps (sharp edges and real motion)."""
import sys

import numpy as np

from genie_core.video import write_video

T, H, W, R = 48, 64, 64, 7
yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
background = np.stack([40 + 120 * xx / W, 40 + 120 * yy / H, np.full_like(xx, 90)], axis=-1)
frames = np.empty((T, H, W, 3), np.uint8)
y, x, vy, vx = 20.0, 12.0, 2.5, 1.75
for t in range(T):
    ball = (yy - y) ** 2 + (xx - x) ** 2 <= R * R  # (H, W)
    frames[t] = np.where(ball[..., None], (250, 220, 60), background).astype(np.uint8)
    y, x = y + vy, x + vx
    if not R <= y <= H - R:
        vy = -vy
    if not R <= x <= W - R:
        vx = -vx
write_video(sys.argv[1], frames, fps=12)
PY

echo "== 2/4 tokenizer: an untrained '$preset' tokenizer (training arrives with 'genie train')" >&2
tok=(--preset "$preset")

echo "== 3/4 genie tokenize -> $out/tokens.npz" >&2
genie tokenize "$out/clip.mp4" -o "$out/tokens.npz" "${tok[@]}"

echo "== 4/4 genie reconstruct -> $out/rec.mp4, $out/compare.png" >&2
genie reconstruct "$out/clip.mp4" -o "$out/rec.mp4" --compare "$out/compare.png" "${tok[@]}"
