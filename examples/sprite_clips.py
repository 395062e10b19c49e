"""Synthetic example clips for the quick start: a sprite moved by known actions (Genie §2.1 learns
such actions without labels; the JSON sidecars hold the truth that `genie infer-actions
--against-truth` and the LAM's validation compare against).

Usage: python examples/sprite_clips.py OUT_DIR [--clips 48] [--frames 32] [--size 64] [--seed 0]
                                        [--prompt prompt.png]  (a first frame no clip starts with)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from genie_core.io.pictures import write_png
from genie_core.io.video_write import write_video

ACTION_NAMES = ("NOOP", "LEFT", "RIGHT", "UP", "DOWN")
MOVES = ((0, 0), (0, -1), (0, 1), (-1, 0), (1, 0))  # (dy, dx) in sprite steps, per action id
# A small palette keeps the example learnable in minutes: the point is the motion, not the colours.
FLOORS = np.array([[40, 44, 70], [70, 50, 40], [40, 70, 50]])
BLOCKS = np.array([[150, 150, 150], [90, 160, 220], [200, 120, 60]])
SPRITES = np.array([[250, 220, 40], [240, 80, 200]])


def sprite_clip(rng: np.random.Generator, frames: int, size: int) -> tuple[np.ndarray, list[int]]:
    """One clip, uint8 (T, size, size, 3), and its T-1 actions (``actions[t]`` moves frame t to t+1).

    The arena is a torus (the sprite wraps at the edges), so every action always moves it and
    the truth is never ambiguous. Each clip has its own background and a few fixed blocks: the
    models must learn that only the sprite moves, and how.
    """
    step = size // 8  # one move = an eighth of the frame (one token at the quickstart's /4 tokens at 32x32)
    side = size // 4  # the sprite: a quarter of the frame
    yy, xx = np.mgrid[0:size, 0:size]
    background = np.empty((size, size, 3), np.int64)
    background[:] = FLOORS[rng.integers(len(FLOORS))]
    background[(yy // step + xx // step) % 2 == 0] += 24  # a checkerboard floor: motion is visible
    for _ in range(3):  # fixed blocks (obstacles the sprite passes over)
        y0, x0 = rng.integers(0, 8, size=2) * step
        background[y0: y0 + step, x0: x0 + step] = BLOCKS[rng.integers(len(BLOCKS))]
    colour = SPRITES[rng.integers(len(SPRITES))]
    y, x = (rng.integers(0, 8, size=2) * step).tolist()
    actions = rng.integers(0, len(MOVES), size=frames - 1).tolist()
    video = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        frame = background.copy()
        rows, cols = (np.arange(y, y + side) % size), (np.arange(x, x + side) % size)
        frame[np.ix_(rows, cols)] = colour
        eye = side // 4  # a dark eye on the sprite's upper left, so it has a face
        frame[np.ix_(rows[eye: 2 * eye], cols[eye: 2 * eye])] = 20
        video[t] = frame.clip(0, 255).astype(np.uint8)
        if t < frames - 1:
            dy, dx = MOVES[actions[t]]
            y, x = (y + dy * step) % size, (x + dx * step) % size
    return video, actions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompt", type=Path, help="Also write the first frame of a new clip here.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for k in range(args.clips):
        video, actions = sprite_clip(np.random.default_rng([args.seed, k]), args.frames, args.size)
        stem = args.out / f"sprite_{k:03d}"
        # GIF: lossless for a small palette (an mp4's chroma subsampling would smear the sprite).
        write_video(stem.with_suffix(".gif"), video, fps=args.fps)
        sidecar = {"actions": actions, "action_names": [ACTION_NAMES[a] for a in actions],
                   "num_frames": args.frames, "source": "examples/sprite_clips.py"}
        stem.with_suffix(".json").write_text(json.dumps(sidecar) + "\n")
    if args.prompt is not None:
        first = sprite_clip(np.random.default_rng([args.seed, 10_000]), 2, args.size)[0][0]
        write_png(args.prompt, first)


if __name__ == "__main__":
    main()
