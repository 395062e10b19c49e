"""The Python API: ``load_world`` by name or file and ``WorldEnv``'s gymnasium contract (spaces,
shapes and dtype, truncation, determinism under a seed, bad actions and prompts), with and
without gymnasium installed."""

from __future__ import annotations

import builtins
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import genie_core
from genie_core.tasks.env import Box, Discrete, WorldEnv, load_world


@pytest.fixture(scope="module")
def sprites():
    return load_world("sprites", precision="fp32")


@pytest.fixture
def no_gymnasium(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import gymnasium`` fails, as on a machine without it."""
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "gymnasium" or name.startswith("gymnasium."):
            raise ImportError("No module named 'gymnasium'")
        return real_import(name, *args, **kwargs)

    for name in [m for m in sys.modules if m == "gymnasium" or m.startswith("gymnasium.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", fake_import)


def _episode(env: WorldEnv, seed: int, actions: list[int]) -> np.ndarray:
    obs, _ = env.reset(seed=seed)
    frames = [obs]
    for a in actions:
        frames.append(env.step(a)[0])
    return np.stack(frames)


def test_load_world_by_name_and_path(sprites) -> None:
    assert genie_core.load_world is load_world and genie_core.WorldEnv is WorldEnv
    assert sprites.precision == "fp32" and sprites.prompt_path.name == "sprites.png"
    from genie_core.tasks.worlds import find_world

    by_path = load_world(find_world("sprites").weights)
    assert by_path.prompt_path is None and by_path.num_actions == sprites.num_actions
    with pytest.raises(ValueError, match="shipped: sprites"):
        load_world("no-such-world")
    with pytest.raises(ValueError, match="precision"):
        load_world("sprites", precision="fp16")


@pytest.mark.skipif(importlib.util.find_spec("gymnasium") is None, reason="gymnasium not installed")
def test_spaces_are_gymnasium_spaces_when_installed(sprites) -> None:
    from gymnasium import spaces

    env = WorldEnv(sprites)
    assert isinstance(env.action_space, spaces.Discrete) and env.action_space.n == sprites.num_actions
    assert isinstance(env.observation_space, spaces.Box)
    assert env.observation_space.shape == (*sprites.resolution, 3) and env.observation_space.dtype == np.uint8
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs = env.step(env.action_space.sample())[0]  # a gymnasium sample is a valid action
    assert env.observation_space.contains(obs)


def test_spaces_without_gymnasium(sprites, no_gymnasium) -> None:
    with pytest.raises(ImportError):
        import gymnasium  # noqa: F401
    env = WorldEnv(sprites)
    assert isinstance(env.action_space, Discrete) and isinstance(env.observation_space, Box)
    assert env.action_space.n == sprites.num_actions
    env.action_space.seed(0)
    samples = {int(env.action_space.sample()) for _ in range(200)}
    assert samples == set(range(sprites.num_actions))
    assert env.action_space.contains(0) and env.action_space.contains(np.int64(sprites.num_actions - 1))
    assert not any(env.action_space.contains(x) for x in (-1, sprites.num_actions, 1.0, True, "1"))
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == obs.shape and env.observation_space.contains(obs)
    assert env.observation_space.contains(env.observation_space.sample())
    assert not env.observation_space.contains(obs.astype(np.float32))
    assert not env.observation_space.contains(obs[:-1])


def test_reset_and_step_contract(sprites) -> None:
    from genie_core.io.video import read_image

    env = WorldEnv(sprites, max_steps=3)
    obs, info = env.reset(seed=0)
    H, W = sprites.resolution
    assert obs.shape == (H, W, 3) and obs.dtype == np.uint8
    assert np.array_equal(obs, read_image(sprites.prompt_path, size=(H, W)))  # the shipped prompt
    assert info["action_names"] == [] and info["prompt_frames"] == 1
    for t in range(1, 4):
        obs, reward, terminated, truncated, info = env.step(t % sprites.num_actions)
        assert obs.shape == (H, W, 3) and obs.dtype == np.uint8
        assert reward == 0.0 and terminated is False and truncated is (t == 3) and info["step"] == t
        assert np.array_equal(env.render(), obs)
    with pytest.raises(ValueError, match="reset"):
        env.step(0)  # past truncation
    obs2, _ = env.reset()  # a new episode from the prompt
    assert np.array_equal(obs2, read_image(sprites.prompt_path, size=(H, W)))


def test_same_seed_same_episode(sprites) -> None:
    env = WorldEnv(sprites)
    actions = [1, 2, 3, 4, 5, 6]
    a, b = _episode(env, 7, actions), _episode(env, 7, actions)
    assert np.array_equal(a, b)
    # another seed samples another episode; unseeded resets continue the seeded generator
    assert not np.array_equal(a, _episode(env, 8, actions))
    env.reset(seed=7)
    first = env.reset()[1]["session_seed"]
    env.reset(seed=7)
    assert env.reset()[1]["session_seed"] == first


def test_bad_actions_raise_value_error(sprites) -> None:
    env = WorldEnv(sprites)
    with pytest.raises(ValueError, match="reset"):
        env.step(0)  # before reset
    env.reset(seed=0)
    for bad in (-1, sprites.num_actions, 1.5, True, "1", [0, 1], None):
        with pytest.raises(ValueError, match=rf"action must be an integer in 0..{sprites.num_actions - 1}"):
            env.step(bad)
    env.step(np.int64(1))  # numpy integers and 0-d arrays are fine
    env.step(np.array(2))
    with pytest.raises(ValueError, match="max_steps"):
        WorldEnv(sprites, max_steps=0)


def test_prompts(sprites) -> None:
    env = WorldEnv(sprites)
    H, W = sprites.resolution
    frame = np.zeros((2 * H, 3 * W, 3), np.uint8)
    frame[:, : W] = 200
    obs, info = env.reset(seed=0, options={"prompt": frame})  # any size, fitted to the world's
    assert obs.shape == (H, W, 3) and info["prompt_frames"] == 1
    obs, info = env.reset(seed=0, options={"prompt": np.stack([frame, frame])})
    assert info["prompt_frames"] == 2 and env.step(0)[0].shape == (H, W, 3)
    most = sprites.dynamics.context_frames - 1
    bad = [frame.astype(np.float32), frame[..., 0], frame[..., :2], np.zeros((1, 1, H, W, 3), np.uint8),
           np.zeros((0, H, W, 3), np.uint8)]
    for prompt in bad:
        with pytest.raises(ValueError, match=r"uint8 frames \(H, W, 3\) or \(T, H, W, 3\)"):
            env.reset(options={"prompt": prompt})
    with pytest.raises(ValueError, match=f"at most {most}"):
        env.reset(options={"prompt": np.zeros((most + 1, H, W, 3), np.uint8)})


def test_a_world_without_a_shipped_prompt_needs_one(tmp_path: Path) -> None:
    from genie_core.tasks.worlds import find_world

    env = WorldEnv(load_world(find_world("sprites").weights))
    with pytest.raises(ValueError, match="prompt"):
        env.reset()


def test_truth_world_exposes_action_names() -> None:
    env = WorldEnv(load_world("sprites-truth"), max_steps=2)
    assert env.action_names == ("NOOP", "LEFT", "RIGHT", "UP", "DOWN") and env.action_space.n == 5
    _, info = env.reset(seed=0)
    assert info["action_names"] == list(env.action_names) and info["action_source"] == "truth"
    assert env.step(3)[-1]["action_name"] == "UP"


def test_random_agent_example_writes_a_gif(tmp_path: Path) -> None:
    import subprocess

    import imageio.v3 as iio

    example = Path(__file__).resolve().parents[1] / "examples" / "random_agent.py"
    out = tmp_path / "agent.gif"
    run = subprocess.run([sys.executable, str(example), "--steps", "4", "-o", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert len(iio.imread(out, index=None)) == 5  # the prompt + one frame per random action
