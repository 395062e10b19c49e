"""A random agent in a learnt world through the Python API: ``genie_core.load_world`` and
``genie_core.WorldEnv`` (gymnasium's environment interface; gymnasium itself is optional).

Usage: python examples/random_agent.py [--world sprites] [--steps 100] [--seed 0] [-o random_agent.gif]
                                       [--picture session.png]  (the first frames, captioned)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from genie_core import WorldEnv, load_world
from genie_core.io.pictures import write_png
from genie_core.io.video_write import write_video


def session_picture(frames: list[np.ndarray], captions: list[str], scale: int = 4, pad: int = 4) -> np.ndarray:
    """Frames left to right, enlarged ``scale`` times (nearest), each captioned below; uint8 (H, W, 3)."""
    from PIL import Image, ImageDraw, ImageFont

    big = [np.repeat(np.repeat(f, scale, axis=0), scale, axis=1) for f in frames]
    h, w = big[0].shape[:2]
    canvas = Image.new("RGB", (len(big) * (w + pad) + pad, h + 2 * pad + 14), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for i, (frame, text) in enumerate(zip(big, captions)):
        x = pad + i * (w + pad)
        canvas.paste(Image.fromarray(frame), (x, pad))
        draw.text((x + (w - draw.textlength(text, font=font)) / 2, h + pad + 2), text, fill="black", font=font)
    return np.asarray(canvas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default=None, help="A shipped world's name or a world file "
                        "(default: the default shipped world).")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("-o", "--output", type=Path, default=Path("random_agent.gif"))
    parser.add_argument("--picture", type=Path, help="Also write the first 9 frames, captioned, as a PNG.")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread is the fastest on a small shared CPU

    if args.world is None:
        from genie_core.tasks.worlds import default_world
        args.world = default_world().name
    env = WorldEnv(load_world(args.world), max_steps=args.steps)
    env.action_space.seed(args.seed)
    obs, info = env.reset(seed=args.seed)  # the shipped prompt frame
    frames, captions, truncated = [obs], ["start"], False
    while not truncated:
        action = env.action_space.sample()
        obs, reward, terminated, truncated, info = env.step(action)
        frames.append(obs)  # a true action's name, else the key genie play gives latent action i
        captions.append(info.get("action_name", f"key {int(action) + 1}"))
    write_video(args.output, frames, fps=args.fps)
    if args.picture is not None:
        write_png(args.picture, session_picture(frames[:9], captions[:9]))
    names = f" ({', '.join(env.action_names)})" if env.action_names else ""
    print(f"{args.world}: {len(frames) - 1} random actions of {env.action_space.n}{names}; "
          f"wrote {len(frames)} frames to {args.output}")


if __name__ == "__main__":
    main()
