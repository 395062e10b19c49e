"""A world as a reinforcement-learning environment: ``load_world`` by name or file, and ``WorldEnv``,
a play session (``World.encode_prompt`` / ``World.step``) behind gymnasium's ``Env`` API. Gymnasium
is optional: with it the spaces are ``gymnasium.spaces``; without it, small stand-ins.

    env = WorldEnv(load_world("sprites"), max_steps=100)
    obs, info = env.reset(seed=0)             # obs: uint8 (H, W, 3), the prompt frame
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import numpy as np

from genie_core.errors import ArgumentError

__all__ = ["load_world", "WorldEnv", "Discrete", "Box"]

PRECISIONS = ("auto", "bf16", "fp32")


def load_world(name_or_path: str | Path, device: str = "cpu", precision: str = "auto") -> Any:
    """The ``World`` a shipped name (``genie_core.tasks.worlds.list_worlds``) or a world file names, on
    ``device``, sampling under ``precision`` ("auto" | "bf16" | "fp32"; auto: bf16 where the device has bf16 matmuls in
    hardware). A shipped world carries its
    prompt frame as ``world.prompt_path`` (None for a file)."""
    from genie_core.models.load import load_model
    from genie_core.runtime import resolve_device
    from genie_core.tasks.worlds import resolve_world

    if precision not in PRECISIONS:
        raise ArgumentError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    path, shipped = resolve_world(name_or_path)
    world = load_model(path, "world", device=str(resolve_device(device)))
    world.precision = precision
    world.prompt_path = shipped.prompt if shipped is not None else None
    return world


# ---- spaces: gymnasium's when installed ----------------------------------------------------

class Discrete:
    """Stand-in for ``gymnasium.spaces.Discrete(n)``: integers 0..n-1."""

    def __init__(self, n: int, seed: int | None = None) -> None:
        self.n, self.shape, self.dtype = int(n), (), np.dtype(np.int64)
        self.np_random = np.random.default_rng(seed)

    def seed(self, seed: int | None = None) -> None:
        self.np_random = np.random.default_rng(seed)

    def sample(self) -> np.int64:
        return np.int64(self.np_random.integers(self.n))

    def contains(self, x: Any) -> bool:
        return _as_action(x) is not None and 0 <= _as_action(x) < self.n

    def __repr__(self) -> str:
        return f"Discrete({self.n})"


class Box:
    """Stand-in for ``gymnasium.spaces.Box(0, 255, shape, uint8)``: uint8 images."""

    def __init__(self, shape: tuple[int, ...], seed: int | None = None) -> None:
        self.shape, self.dtype, self.low, self.high = tuple(shape), np.dtype(np.uint8), 0, 255
        self.np_random = np.random.default_rng(seed)

    def seed(self, seed: int | None = None) -> None:
        self.np_random = np.random.default_rng(seed)

    def sample(self) -> np.ndarray:
        return self.np_random.integers(0, 256, size=self.shape, dtype=np.uint8)

    def contains(self, x: Any) -> bool:
        return isinstance(x, np.ndarray) and x.shape == self.shape and x.dtype == self.dtype

    def __repr__(self) -> str:
        return f"Box(0, 255, {self.shape}, uint8)"


def _spaces(num_actions: int, shape: tuple[int, int, int]) -> tuple[Any, Any]:
    try:
        from gymnasium import spaces
    except ImportError:
        return Discrete(num_actions), Box(shape)
    return spaces.Discrete(num_actions), spaces.Box(0, 255, shape, np.uint8)


def _as_action(x: Any) -> int | None:
    """An action id from an int, a numpy integer or a 0-d / one-element integer array; else None."""
    if isinstance(x, (bool, np.bool_)):
        return None
    if isinstance(x, np.ndarray) and x.size == 1 and np.issubdtype(x.dtype, np.integer):
        return int(x.reshape(()))
    if isinstance(x, numbers.Integral):
        return int(x)
    return None


# ---- the environment -----------------------------------------------------------------------

class WorldEnv:
    """A play session of ``world`` with gymnasium's ``Env`` interface.

    ``reset(seed=None, options={"prompt": frames})`` starts from the prompt (uint8 (H, W, 3) or
    (T, H, W, 3) with T < the world's context, any size; default: the shipped world's prompt)
    and returns (observation, info); ``step(action)`` returns (observation, 0.0, False,
    truncated, info), truncated after ``max_steps`` steps. Observations are uint8 (H, W, 3) at
    the world's resolution. The same reset seed gives the same episode for the same actions.
    ``action_names`` are the true actions' names of a world trained on them, else ().
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    render_mode = "rgb_array"
    reward_range = (0.0, 0.0)

    def __init__(self, world: Any, max_steps: int = 1000) -> None:
        if isinstance(world, (str, Path)):
            world = load_world(world)
        if not isinstance(max_steps, numbers.Integral) or isinstance(max_steps, bool) or max_steps < 1:
            raise ArgumentError(f"max_steps must be a positive integer, got {max_steps!r}")
        self.world, self.max_steps = world, int(max_steps)
        H, W = world.resolution
        self.action_space, self.observation_space = _spaces(world.num_actions, (H, W, 3))
        self.action_names: tuple[str, ...] = tuple(world.action_names)
        self._rng = np.random.default_rng()
        self._steps: int | None = None  # None: no episode yet
        self._frame: np.ndarray | None = None

    @property
    def unwrapped(self) -> "WorldEnv":
        return self

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        prompt = self._prompt((options or {}).get("prompt"))
        session_seed = int(self._rng.integers(2 ** 63 - 1))
        self.world.encode_prompt(prompt, seed=session_seed)
        self._steps = 0
        self._frame = self.world.session_frames()[0, -1]
        return self._frame.copy(), {"step": 0, "prompt_frames": len(prompt), "session_seed": session_seed,
                                    "action_source": self.world.action_source,
                                    "action_names": list(self.action_names)}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._steps is None:
            raise ArgumentError("call reset() before step()")
        if self._steps >= self.max_steps:
            raise ArgumentError(f"the episode was truncated after {self.max_steps} steps: call reset()")
        a = _as_action(action)
        if a is None or not 0 <= a < self.world.num_actions:
            raise ArgumentError(f"action must be an integer in 0..{self.world.num_actions - 1}, got {action!r}")
        self._frame = self.world.step(a)[0]
        self._steps += 1
        info: dict[str, Any] = {"step": self._steps, "action": a}
        if self.action_names:
            info["action_name"] = self.action_names[a]
        return self._frame.copy(), 0.0, False, self._steps >= self.max_steps, info

    def render(self) -> np.ndarray | None:
        """The newest frame, uint8 (H, W, 3) (None before the first reset)."""
        return None if self._frame is None else self._frame.copy()

    def close(self) -> None:
        self.world.reset_session()
        self._steps, self._frame = None, None

    def _prompt(self, frames: Any) -> np.ndarray:
        """The prompt as uint8 (T, H, W, 3): given frames checked, else the shipped prompt."""
        if frames is None:
            path = getattr(self.world, "prompt_path", None)
            if path is None:
                raise ArgumentError("this world has no shipped prompt: reset(options={'prompt': frames}) "
                                    "with uint8 frames (H, W, 3) or (T, H, W, 3)")
            from genie_core.io.video import read_image

            return read_image(path, size=self.world.resolution)[None]
        arr = np.asarray(frames.detach().cpu() if hasattr(frames, "detach") else frames)
        most = self.world.dynamics.context_frames - 1
        if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-1] != 3 or 0 in arr.shape:
            raise ArgumentError(f"the prompt must be uint8 frames (H, W, 3) or (T, H, W, 3) with "
                                f"1 <= T <= {most}, any H and W; got {arr.dtype} {arr.shape}")
        arr = arr[None] if arr.ndim == 3 else arr
        if len(arr) > most:
            raise ArgumentError(f"the prompt has {len(arr)} frames; this world's context holds at most {most}")
        return arr
