"""Games to record from: Procgen (``procgen:coinrun``, ...) and Atari through the Arcade Learning
Environment (``atari:Breakout``), as batches of parallel streams of uint8 RGB frames. The game
packages are optional (``pip install 'genie[record]'``) and imported only when a source opens.
"""

from __future__ import annotations

import sys
import types
from typing import Callable, Protocol

import numpy as np
from PIL import Image

from genie_core.errors import GenieError

INSTALL_HINT = "pip install 'genie[record]'"
PROCGEN_STEP = "pip install --no-deps procgen-mirror==0.10.7 gym3==0.3.3"

PROCGEN_GAMES = ("bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball",
                 "fruitbot", "heist", "jumper", "leaper", "maze", "miner", "ninja", "plunder",
                 "starpilot")
# Rows kept of the 210x160 Atari screen: the score bar above is cut, so a frame shows the game.
ATARI_ROWS = {"Breakout": (17, 196), "Pong": (34, 194)}
# Raw ids whose effect on the game is the same, merged onto one id (``actions_effective``). A
# static table, checked by cloning the game state and comparing the next frame under each action
# (240 states visited by the sticky policy): CoinRun's key actions D, A, W, S, Q, E (ids 9-14) did
# what NOOP (4) does in every state; in Pong FIRE matched NOOP and RIGHTFIRE / LEFTFIRE matched
# RIGHT / LEFT in 99.2-99.6% of states. Not merged: Breakout's FIRE (same as NOOP in 64% of
# states: it serves the ball) and CoinRun's DOWN (same as NOOP in 96%). Other games merge nothing.
EQUIVALENT_ACTIONS: dict[str, dict[int, int]] = {
    "procgen:coinrun": {9: 4, 10: 4, 11: 4, 12: 4, 13: 4, 14: 4},
    "atari:Pong": {1: 0, 4: 2, 5: 3},
}


class MissingDependency(GenieError):
    """The optional game packages are not installed; the message says what to install."""


class Source(Protocol):
    """``num`` parallel game streams. ``step(actions)`` applies ``actions[i]`` to stream i and
    returns the next frames, rewards, whether each stream began a new episode (its frame is
    then the new episode's first) and each stream's level seed. ``effective[a]`` is the id that
    action ``a`` is merged onto; the policy draws from ``action_set``."""

    name: str
    num: int
    fps: float
    action_names: list[str]
    action_set: list[int]
    effective: list[int]
    can_restart: bool  # restart(i) begins a new episode on stream i

    def reset(self) -> tuple[np.ndarray, list[int]]: ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]: ...

    def restart(self, i: int) -> tuple[np.ndarray, int]: ...

    def close(self) -> None: ...


def resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The whole screen to (H, W): area averaging when shrinking (a one-pixel ball stays visible),
    bicubic when enlarging. Never cropped: a centre crop would cut Breakout's paddle."""
    if frame.shape[:2] == tuple(size):
        return frame
    shrink = frame.shape[0] >= size[0] and frame.shape[1] >= size[1]
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(frame).resize((size[1], size[0]), resample))


def effective_table(name: str, num_actions: int) -> list[int]:
    merged = EQUIVALENT_ACTIONS.get(name, {})
    return [merged.get(a, a) for a in range(num_actions)]


def parse_env(spec: str) -> tuple[str, str]:
    """``procgen:coinrun`` / ``atari:Breakout`` -> (kind, game); unknown kinds and Procgen games
    are a GenieError naming what is known."""
    kind, sep, game = spec.partition(":")
    if not sep or not game:
        raise GenieError(f"--env must be procgen:GAME or atari:GAME (e.g. procgen:coinrun, "
                         f"atari:Breakout), got '{spec}'")
    if kind not in SOURCES:
        raise GenieError(f"unknown game source '{kind}' in --env '{spec}' "
                         f"(known: {', '.join(sorted(SOURCES))})")
    if kind == "procgen" and game not in PROCGEN_GAMES:
        raise GenieError(f"unknown Procgen game '{game}' (known: {', '.join(PROCGEN_GAMES)})")
    return kind, game


def open_source(spec: str, num: int, size: tuple[int, int], seed: int) -> Source:
    """The source for ``--env spec`` with ``num`` streams of frames at ``size``, seeded."""
    kind, game = parse_env(spec)
    return SOURCES[kind](game, num, size, seed)


# ----------------------------------------------------------------------------- Procgen

def _import_procgen() -> type:
    """procgen's ``__init__`` imports the legacy ``gym`` only to register gym ids; a throw-away
    stub stands in for it during the import, so neither gym nor its numpy<2 pin is needed."""
    if "gym" in sys.modules or "procgen" in sys.modules:
        from procgen import ProcgenGym3Env
        return ProcgenGym3Env
    gym, envs, registration = (types.ModuleType(n) for n in ("gym", "gym.envs", "gym.envs.registration"))
    registration.register = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    gym.envs, envs.registration = envs, registration  # type: ignore[attr-defined]
    stub = {"gym": gym, "gym.envs": envs, "gym.envs.registration": registration}
    sys.modules.update(stub)
    try:
        from procgen import ProcgenGym3Env
    finally:
        for key, module in stub.items():
            if sys.modules.get(key) is module:
                del sys.modules[key]
    return ProcgenGym3Env


class ProcgenSource:
    """Procgen through gym3: ``num`` environments stepped together (hard mode, unlimited
    levels). 64x64 is native; larger sizes are resized from the 512x512 render."""

    fps = 15.0
    can_restart = False  # gym3 resets a stream only when its episode ends

    def __init__(self, game: str, num: int, size: tuple[int, int], seed: int) -> None:
        try:
            env_class = _import_procgen()
        except ImportError as err:
            raise MissingDependency(f"recording procgen:{game} needs procgen ({err.name or err}): "
                                    f"{INSTALL_HINT} && {PROCGEN_STEP}") from None
        self.name, self.num, self.size = f"procgen:{game}", num, size
        self.hires = max(size) > 64
        options = dict(num=num, env_name=game, distribution_mode="hard", rand_seed=seed % 2 ** 31,
                       num_levels=0, start_level=0, num_threads=1)
        if self.hires:
            options["render_mode"] = "rgb_array"
        self.env = env_class(**options)
        self.action_names = ["+".join(combo) or "NOOP" for combo in self.env.get_combos()]
        self.action_set = list(range(9))  # the 3x3 moves (LEFT/-/RIGHT x DOWN/-/UP); keys left out
        self.effective = effective_table(self.name, len(self.action_names))

    def _observe(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        reward, obs, first = self.env.observe()
        info = self.env.get_info()
        raw = [i["rgb"] for i in info] if self.hires else list(obs["rgb"])
        frames = np.stack([resize(np.asarray(f, np.uint8), self.size) for f in raw])
        seeds = [int(i.get("level_seed", -1)) for i in info]
        return frames, np.asarray(reward, np.float32), np.asarray(first, bool), seeds

    def reset(self) -> tuple[np.ndarray, list[int]]:
        frames, _, _, seeds = self._observe()
        return frames, seeds

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        self.env.act(np.asarray(actions, np.int32))
        return self._observe()

    def restart(self, i: int) -> tuple[np.ndarray, int]:
        raise NotImplementedError("procgen streams restart only at the end of an episode")

    def close(self) -> None:
        close = getattr(self.env, "close", None)  # gym3 environments free their memory when collected
        if close is not None:
            close()


# ----------------------------------------------------------------------------- Atari

class AtariSource:
    """Atari games in the ALE (gymnasium ``ALE/<Game>-v5``), frame skip 4, sticky actions off so
    the recorded action is the executed one, the minimal action set. Each stream is seeded once
    (``seed * 1000 + i``) and later episodes continue its random state; the level seed written
    for an episode is ``(seed * 1000 + i) * 1000 + episode``."""

    fps = 15.0  # 60 Hz / frame skip 4
    can_restart = True

    def __init__(self, game: str, num: int, size: tuple[int, int], seed: int) -> None:
        try:
            import ale_py
            import gymnasium
        except ImportError as err:
            raise MissingDependency(f"recording atari:{game} needs {err.name or 'ale-py'}: "
                                    f"{INSTALL_HINT}") from None
        gymnasium.register_envs(ale_py)
        self.name, self.num, self.size, self.seed = f"atari:{game}", num, size, seed
        self.rows = ATARI_ROWS.get(game)
        try:
            self.envs = [gymnasium.make(f"ALE/{game}-v5", frameskip=4, repeat_action_probability=0.0,
                                        full_action_space=False) for _ in range(num)]
        except gymnasium.error.Error as err:
            raise GenieError(f"unknown Atari game '{game}' ({str(err).splitlines()[0]}); "
                             "names are capitalised as in the ALE, e.g. atari:Breakout") from None
        self.action_names = list(self.envs[0].unwrapped.get_action_meanings())
        self.action_set = list(range(len(self.action_names)))
        self.effective = effective_table(self.name, len(self.action_names))
        self.episodes = [0] * num
        self.level_seeds = [0] * num

    def _frame(self, obs: np.ndarray) -> np.ndarray:
        if self.rows is not None:
            obs = obs[self.rows[0]:self.rows[1]]
        return resize(np.asarray(obs, np.uint8), self.size)

    def restart(self, i: int) -> tuple[np.ndarray, int]:
        # reset(seed=) reloads the ROM (tens of ms), so only an environment's first episode is seeded.
        stream_seed = self.seed * 1000 + i
        k = self.episodes[i]
        self.episodes[i] += 1
        self.level_seeds[i] = stream_seed * 1000 + k
        obs, _ = self.envs[i].reset(seed=stream_seed % 2 ** 32) if k == 0 else self.envs[i].reset()
        return self._frame(obs), self.level_seeds[i]

    def reset(self) -> tuple[np.ndarray, list[int]]:
        starts = [self.restart(i) for i in range(self.num)]
        return np.stack([f for f, _ in starts]), [s for _, s in starts]

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        frames, rewards, firsts = [], [], []
        for i, (env, action) in enumerate(zip(self.envs, actions)):
            obs, reward, terminated, truncated, _ = env.step(int(action))
            if terminated or truncated:
                frame, _ = self.restart(i)
            else:
                frame = self._frame(obs)
            frames.append(frame)
            rewards.append(float(reward))
            firsts.append(bool(terminated or truncated))
        return np.stack(frames), np.asarray(rewards, np.float32), np.asarray(firsts), list(self.level_seeds)

    def close(self) -> None:
        for env in self.envs:
            env.close()


SOURCES: dict[str, Callable[[str, int, tuple[int, int], int], Source]] = {
    "procgen": ProcgenSource,
    "atari": AtariSource,
}
