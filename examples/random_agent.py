"""A random agent in a learnt world through the Python API: ``genie_core.load_world`` and
``genie_core.WorldEnv`` (gymnasium's environment interface; gymnasium itself is optional).

Usage: python examples/random_agent.py [--world sprites] [--steps 100] [--seed 0] [-o random_agent.gif]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from genie_core import WorldEnv, load_world
from genie_core.video_write import write_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default=None, help="A shipped world's name or a world file "
                        "(default: the default shipped world).")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("-o", "--output", type=Path, default=Path("random_agent.gif"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread is the fastest on a small shared CPU

    if args.world is None:
        from genie_core.worlds import default_world
        args.world = default_world().name
    env = WorldEnv(load_world(args.world), max_steps=args.steps)
    env.action_space.seed(args.seed)
    obs, info = env.reset(seed=args.seed)  # the shipped prompt frame
    frames, truncated = [obs], False
    while not truncated:
        action = env.action_space.sample()
        obs, reward, terminated, truncated, info = env.step(action)
        frames.append(obs)
    write_video(args.output, frames, fps=args.fps)
    names = f" ({', '.join(env.action_names)})" if env.action_names else ""
    print(f"{args.world}: {len(frames) - 1} random actions of {env.action_space.n}{names}; "
          f"wrote {len(frames)} frames to {args.output}")


if __name__ == "__main__":
    main()
