"""The quick start's synthetic clips (examples/sprite_clips.py): the truth in their sidecars is
aligned as docs/design.md says (actions[t] takes frame t to t+1), and the quickstart preset builds a
world that pairs with it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sprite_corner(frame: np.ndarray, colour: np.ndarray) -> tuple[int, int]:
    """Top-left (y, x) of the sprite on the torus: the sprite pixel whose up and left
    neighbours (wrapping) are not sprite pixels."""
    mask = (frame == colour).all(-1)  # (H, W)
    corner = mask & ~np.roll(mask, 1, axis=0) & ~np.roll(mask, 1, axis=1)
    ys, xs = np.nonzero(corner)
    return int(ys[0]), int(xs[0])


def test_sprite_moves_by_the_action_of_its_frame():
    sprites = _load("sprite_clips")
    size = 64
    video, actions = sprites.sprite_clip(np.random.default_rng(3), 24, size)
    assert video.shape == (24, size, size, 3) and video.dtype == np.uint8
    assert len(actions) == 23  # T frames, T-1 actions
    colour = next(c for c in sprites.SPRITES if (video[0] == c).all(-1).any())
    step = size // 8
    for t, action in enumerate(actions):
        (y0, x0), (y1, x1) = _sprite_corner(video[t], colour), _sprite_corner(video[t + 1], colour)
        dy, dx = sprites.MOVES[action]
        assert ((y1 - y0) % size, (x1 - x0) % size) == ((dy * step) % size, (dx * step) % size)


def test_quickstart_preset_builds_a_world():
    from genie_core.models.world import World

    world = World.from_preset("quickstart")
    # at least one latent code per true move, so a latent-to-true map can be perfect
    assert world.num_actions >= len(_load("sprite_clips").ACTION_NAMES)
    assert world.tokenizer.time_downsample == 1
    assert tuple(world.dynamics.token_size) == (8, 8)
