"""World bundle and play session (Genie §2.2): bundle round trip, session shapes, determinism,
reset, prompt handling, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genie_core.errors import CheckpointError, GenieError
from genie_core.io.checkpoint_format import read_checkpoint
from genie_core.models.load import load_checkpoint
from genie_core.models.world import World


@pytest.fixture(scope="module")
def world() -> World:
    torch.manual_seed(0)
    w = World.from_preset("tiny")
    w.precision = "fp32"  # exact comparisons below
    return w


def _frames(T: int = 2, size: tuple[int, int] = (16, 16), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (T, *size, 3), dtype=np.uint8)


def test_from_preset_fits_dynamics_to_tokenizer_and_lam(world: World) -> None:
    dyn = world.dynamics.config
    assert dyn.code_bits == world.tokenizer.code_bits
    assert dyn.num_actions == world.lam.num_actions
    s = world.tokenizer.space_downsample
    assert tuple(dyn.token_size) == (16 // s, 16 // s)
    assert not world.training


def test_session_shapes_and_reset_replays(world: World) -> None:
    ids = world.encode_prompt(_frames(2), seed=3)
    h, w = world.dynamics.token_size
    assert ids.shape == (1, 2, h, w)
    frames = [world.step(a) for a in (0, 1, 2)]
    assert all(f.shape == (1, 16, 16, 3) and f.dtype == np.uint8 for f in frames)
    video = world.session_frames()
    assert video.shape == (1, 5, 16, 16, 3) and world.session_ids().shape == (1, 5, h, w)
    world.reset()
    assert world.session_length == 2
    again = [world.step(a) for a in (0, 1, 2)]
    for a, b in zip(frames, again):
        np.testing.assert_array_equal(a, b)


def test_prompt_frames_are_kept_and_resized(world: World) -> None:
    prompt = _frames(1, size=(40, 24))  # any size: centre-cropped and resized
    world.encode_prompt(prompt[0])
    video = world.session_frames()
    assert video.shape == (1, 1, 16, 16, 3)
    world.step(0)
    assert world.session_frames().shape == (1, 2, 16, 16, 3)


def test_batched_session_with_per_row_actions(world: World) -> None:
    clips = np.stack([_frames(2, seed=1), _frames(2, seed=2)])
    world.encode_prompt(clips, actions=torch.tensor([[0], [1]]))
    out = world.step([2, 3])
    assert out.shape == (2, 16, 16, 3)
    with pytest.raises(GenieError, match="actions"):
        world.step([0, 1, 2])


def test_rollout_matches_step_by_step_session(world: World) -> None:
    prompt = _frames(1)
    video = world.rollout(prompt, [1, 0, 3], seed=5)
    assert video.shape == (1, 4, 16, 16, 3)
    world.encode_prompt(prompt, seed=5)
    steps = [world.step(a) for a in (1, 0, 3)]
    np.testing.assert_array_equal(video[:, 1:], np.stack(steps, axis=1))


def test_actions_change_the_generated_frame(world: World) -> None:
    """Greedy decoding from one prompt under each latent action: not all next frames agree."""
    prompt = _frames(1)
    ids = []
    for a in range(world.num_actions):
        world.encode_prompt(prompt, seed=0)
        world.step(a, temperature=0.0)
        ids.append(world.session_ids()[:, -1])
    assert any(not torch.equal(ids[0], other) for other in ids[1:])


def test_bad_session_input(world: World) -> None:
    fresh = World.from_preset("tiny")
    with pytest.raises(GenieError, match="encode_prompt"):
        fresh.step(0)
    world.encode_prompt(_frames(1))
    with pytest.raises(GenieError, match="latent actions"):
        world.step(world.num_actions)
    with pytest.raises(GenieError, match="uint8"):
        world.encode_prompt(_frames(1).astype(np.float32))


def test_bundle_round_trip(world: World, tmp_path) -> None:
    path = tmp_path / "world.safetensors"
    world.save(path, step=7)
    tensors, meta = read_checkpoint(path)
    assert meta["kind"] == "world" and meta["step"] == "7"
    assert {k.split(".", 1)[0] for k in tensors} == {"tokenizer", "lam", "dynamics"}
    loaded = load_checkpoint(path)
    assert isinstance(loaded, World) and loaded.config == world.config
    for a, b in zip(world.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    loaded.precision = "fp32"
    prompt = _frames(2)
    np.testing.assert_array_equal(world.rollout(prompt, [0, 2], seed=1), loaded.rollout(prompt, [0, 2], seed=1))
    with pytest.raises(CheckpointError, match="world"):
        load_checkpoint(path, expect_kind="dynamics")


def test_mismatched_parts_are_refused() -> None:
    from genie_core.models.dynamics import DynamicsModel
    w = World.from_preset("tiny")
    cfg = w.dynamics.config
    import dataclasses
    bad = DynamicsModel(dataclasses.replace(cfg, num_actions=cfg.num_actions + 1))
    with pytest.raises(GenieError, match="num_actions"):
        World(w.tokenizer, w.lam, bad, w.resolution)


def test_pairing_derives_what_the_config_leaves_unset_and_reports_disagreement(world: World) -> None:
    import dataclasses

    from genie_core.models.world import paired_dynamics_config

    unset = dataclasses.replace(world.dynamics.config, code_bits=None, token_size=None, num_actions=None)
    messages: list[str] = []
    paired = paired_dynamics_config(unset, world.tokenizer, world.lam, world.resolution, warn=messages.append)
    assert messages == [] and paired == world.dynamics.config
    stated = dataclasses.replace(unset, num_actions=world.lam.num_actions + 3, code_bits=world.tokenizer.code_bits)
    paired = paired_dynamics_config(stated, world.tokenizer, world.lam, world.resolution, warn=messages.append)
    assert paired.num_actions == world.lam.num_actions  # the trained LAM's count, not the preset's
    assert len(messages) == 1 and "\n" not in messages[0]  # code_bits agrees: no message for it
    assert "num_actions" in messages[0] and str(world.lam.num_actions + 3) in messages[0]
    assert str(world.lam.num_actions) in messages[0].split("give", 1)[1]


def test_shipped_presets_state_no_derived_value_that_disagrees() -> None:
    """A dynamics value a preset states (only coinrun still restates num_actions) equals what its
    own tokenizer, data and LAM give, so pairing it with models trained from it warns of nothing."""
    from genie_core.config import dynamics_config_for_preset, list_presets, load_preset

    for name in list_presets():
        cfg = load_preset(name)
        derived = dynamics_config_for_preset(dataclasses_replace_unset(cfg))
        for key in ("code_bits", "token_size", "num_actions"):
            if getattr(cfg.dynamics, key) is not None:
                assert getattr(cfg.dynamics, key) == getattr(derived, key), (name, key)


def dataclasses_replace_unset(cfg):
    import dataclasses
    dyn = dataclasses.replace(cfg.dynamics, code_bits=None, token_size=None, num_actions=None)
    return dataclasses.replace(cfg, dynamics=dyn)


def test_bf16_session_runs_deterministically() -> None:
    torch.manual_seed(0)
    w = World.from_preset("tiny")
    w.precision = "bf16"  # autocast, whatever the CPU (auto picks fp32 where bf16 is emulated)
    a = w.rollout(_frames(2), [0, 3], seed=2)
    b = w.rollout(_frames(2), [0, 3], seed=2)
    assert a.shape == (1, 4, 16, 16, 3)
    np.testing.assert_array_equal(a, b)
    assert all(p.dtype == torch.float32 for p in w.parameters())  # the bundle's own weights stay fp32
