"""A picture of what a world's latent actions do (Genie §3, Figs. 1 and 9): one prompt frame, then a
rollout under each latent action (the same action at every step), one row per action. With a
video prompt, two more rows on top: the real continuation, and the rollout under the actions the
world's LAM infers from it.

Usage: python examples/rollout_grid.py --world NAME|RUN/world.safetensors --prompt frame.png|clip.mp4
           -o rollouts.png [--steps-ahead 8] [--scale 2] [--seed 0] [--sampling-steps N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def rollout_rows(world, prompt: np.ndarray, horizon: int, seed: int, real: np.ndarray | None = None,
                 true_actions: list[int] | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Rows of uint8 frames (1 + horizon, H, W, 3) and their labels.

    ``prompt`` is one frame (H, W, 3); ``real`` (optional, (1 + horizon, H, W, 3)) the true clip
    that starts with it, and ``true_actions`` its sidecar's actions (a world trained on true
    actions replays those; a latent-action world replays what its LAM infers). Every row is
    sampled with the same seed, so rows differ only by actions.
    """
    rows, labels = [], []
    if real is not None and world.action_source == "latent":
        inferred = world.infer_actions(real)[0]  # (horizon,): actions[t] took frame t to t+1
        rows += [real, world.rollout(prompt, inferred.tolist(), seed=seed)[0]]
        labels += ["real", "LAM " + "".join(map(str, inferred.tolist()))]
    elif real is not None and true_actions is not None:
        acts = true_actions[:horizon]
        rows += [real, world.rollout(prompt, acts, seed=seed)[0]]
        labels += ["real", "true " + "".join(map(str, acts))]
    n = world.num_actions
    batch = np.repeat(prompt[None, None], n, axis=0)  # (n, 1, H, W, 3): one row per action
    actions = np.repeat(np.arange(n)[:, None], horizon, axis=1)  # (n, horizon)
    rows += list(world.rollout(batch, actions, seed=seed))
    names = world.action_names
    labels += [f"action {a}" + (f" {names[a]}" if names else "") for a in range(n)]
    return rows, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True, help="A shipped world's name or a world file.")
    parser.add_argument("--prompt", type=Path, required=True, help="An image, or a video (its first frame).")
    parser.add_argument("-o", "--output", type=Path, required=True, help="PNG to write.")
    parser.add_argument("--steps-ahead", type=int, default=8, help="Generated frames per row.")
    parser.add_argument("--scale", type=int, default=1, help="Enlarge frames (nearest) for viewing.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampling-steps", type=int, default=None, help="MaskGIT steps (default: the world's).")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--unmask", choices=("confidence", "random"), default=None)
    parser.add_argument("--keep-bias", type=float, default=None)
    parser.add_argument("--render", choices=("tokens", "replenish"), default=None,
                        help="How frames are drawn (default: the world's; see genie play --help).")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import dataclasses

    import torch

    from genie_core.errors import GenieError
    from genie_core.io.pictures import write_grid
    from genie_core.io.video import IMAGE_SUFFIXES, read_image, read_video
    from genie_core.models.load import load_model
    from genie_core.tasks.worlds import resolve_world

    torch.set_num_threads(args.threads)
    try:
        world = load_model(resolve_world(args.world)[0], "world")
    except GenieError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    changes = {"steps": args.sampling_steps, "temperature": args.temperature, "render": args.render,
               "unmask": args.unmask, "keep_bias": args.keep_bias}
    world.sampling = dataclasses.replace(world.sampling, **{k: v for k, v in changes.items() if v is not None})
    real, true_actions = None, None
    if args.prompt.suffix.lower() in IMAGE_SUFFIXES:
        prompt = read_image(args.prompt, size=world.resolution)
    else:
        frames, _ = read_video(args.prompt, size=world.resolution, max_frames=1 + args.steps_ahead)
        prompt = frames[0]
        real = frames if len(frames) == 1 + args.steps_ahead else None
        if world.action_source == "truth":
            from genie_core.io.actions import read_sidecar_actions
            true_actions, _ = read_sidecar_actions(args.prompt, 1 + args.steps_ahead, print)
            true_actions = list(true_actions) if true_actions else None
    rows, labels = rollout_rows(world, prompt, args.steps_ahead, args.seed, real, true_actions)
    if args.scale > 1:  # (T, H, W, 3) -> (T, H*s, W*s, 3)
        rows = [row.repeat(args.scale, axis=1).repeat(args.scale, axis=2) for row in rows]
    write_grid(args.output, rows, labels=labels)
    print(f"wrote {args.output}: {len(rows)} rows x {1 + args.steps_ahead} frames "
          f"({world.sampling.steps} MaskGIT steps, {world.sampling.render}, seed {args.seed})")


if __name__ == "__main__":
    main()
