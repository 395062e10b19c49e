#!/usr/bin/env bash
# Quick start, end to end on a built-in example (no download): write synthetic clips, train a
# small tokenizer on them, tokenize a clip, reconstruct it with PSNR / SSIM and a side-by-side
# picture. Usage: bash examples/quickstart.sh [OUT]   (default OUT: out/quickstart)
# GENIE_PRESET (default tiny) and GENIE_STEPS (default 300) pick the model and training length.
set -euo pipefail

out="${1:-out/quickstart}"
preset="${GENIE_PRESET:-tiny}"
steps="${GENIE_STEPS:-300}"
mkdir -p "$out"

echo "== 1/4 synthetic example clips: $out/clips/" >&2
python - "$out/clips" <<'PY'
"""Balls bouncing over gradients: 8 clips of 32 frames, 64x64, 12 fps (sharp edges, real motion)."""
import sys
from pathlib import Path

import numpy as np

from genie_core.video import write_video

T, H, W, R = 32, 64, 64, 7
yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
for k in range(8):
    rng = np.random.default_rng(k)
    tint = rng.uniform(30, 120, size=3)
    background = np.stack([tint[0] + 100 * xx / W, tint[1] + 100 * yy / H,
                           np.full_like(xx, tint[2])], axis=-1)
    colour = rng.integers(150, 256, size=3)
    y, x = rng.uniform(R, H - R), rng.uniform(R, W - R)
    vy, vx = rng.uniform(1.5, 3.0) * rng.choice([-1, 1], size=2)
    frames = np.empty((T, H, W, 3), np.uint8)
    for t in range(T):
        ball = (yy - y) ** 2 + (xx - x) ** 2 <= R * R  # (H, W)
        frames[t] = np.where(ball[..., None], colour, background).astype(np.uint8)
        y, x = y + vy, x + vx
        if not R <= y <= H - R:
            vy = -vy
        if not R <= x <= W - R:
            vx = -vx
    write_video(Path(sys.argv[1]) / f"ball_{k}.mp4", frames, fps=12)
PY

echo "== 2/4 genie train: a '$preset' tokenizer, $steps steps -> $out/run/tokenizer/" >&2
genie train --preset "$preset" --data "$out/clips" --out "$out/run" --stage tokenizer \
    --steps "$steps" --threads 1
ckpt="$out/run/tokenizer/last.safetensors"

echo "== 3/4 genie tokenize -> $out/tokens.npz" >&2
genie tokenize "$out/clips/ball_0.mp4" -o "$out/tokens.npz" --checkpoint "$ckpt"

echo "== 4/4 genie reconstruct -> $out/rec.mp4, $out/compare.png" >&2
genie reconstruct "$out/clips/ball_0.mp4" -o "$out/rec.mp4" --compare "$out/compare.png" \
    --checkpoint "$ckpt"
