"""Rendering a generated frame: "tokens" decodes its ids; "replenish" keeps the previous frame's
pixels in every token patch whose id did not change (conditional replenishment). Rendering never
changes the ids, so both give the same session ids for the same seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genie_core.errors import GenieError
from genie_core.models.session import replenish


def test_replenish_keeps_unchanged_patches_and_takes_changed_ones() -> None:
    rng = np.random.default_rng(0)
    prev = rng.integers(0, 256, (2, 8, 12, 3), dtype=np.uint8)
    new = rng.integers(0, 256, (2, 8, 12, 3), dtype=np.uint8)
    prev_ids = torch.arange(2 * 2 * 3).reshape(2, 2, 3)
    ids = prev_ids.clone()
    ids[0, 1, 2] += 100  # one changed token: patch rows 4..7, columns 8..11 of batch row 0
    ids[1] += 100  # every token of batch row 1 changed
    out = replenish(prev, new, prev_ids, ids)
    assert out.shape == new.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[1], new[1])
    np.testing.assert_array_equal(out[0, 4:, 8:], new[0, 4:, 8:])
    changed = np.zeros((8, 12), bool)
    changed[4:, 8:] = True
    np.testing.assert_array_equal(out[0][~changed], prev[0][~changed])


def test_replenish_refuses_frames_that_do_not_tile() -> None:
    frame = np.zeros((1, 10, 12, 3), np.uint8)
    ids = torch.zeros(1, 3, 3, dtype=torch.long)
    with pytest.raises(GenieError):
        replenish(frame, frame, ids, ids)


def _world():
    from genie_core.models.world import World

    torch.manual_seed(0)
    world = World.from_preset("tiny")
    world.precision = "fp32"
    return world


def test_replenish_session_keeps_the_prompt_where_ids_stay(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dynamics model that always repeats the last frame's ids: under "replenish" every frame is
    the real prompt, pixel for pixel; under "tokens" it is the prompt's ids decoded, not the prompt."""
    from genie_core.models.dynamics import DynamicsModel

    def repeat_last(self, context, actions, **kwargs):
        assert isinstance(context, torch.Tensor), "use_cache=False: the context is the session's ids"
        return context[:, -1].clone()

    world = _world()
    world.use_cache = False  # generate_next sees the session's ids
    monkeypatch.setattr(DynamicsModel, "generate_next", repeat_last)
    H, W = world.resolution
    prompt = np.random.default_rng(1).integers(0, 256, (2, 1, H, W, 3), dtype=np.uint8)
    frames = {}
    for render in ("tokens", "replenish"):
        world.sampling = world.sampling.__class__(**{**world.sampling.__dict__, "render": render})
        frames[render] = world.rollout(prompt, [0, 1, 0], seed=0)
    for t in range(1, 4):
        np.testing.assert_array_equal(frames["replenish"][:, t], prompt[:, 0])
    assert np.abs(frames["tokens"][:, 1:].astype(int) - prompt.astype(int)).mean() > 1.0


def test_render_changes_pixels_not_ids() -> None:
    world = _world()
    H, W = world.resolution
    prompt = np.random.default_rng(2).integers(0, 256, (2, 1, H, W, 3), dtype=np.uint8)
    ids, frames = {}, {}
    for render in ("tokens", "replenish"):
        frames[render] = world.rollout(prompt, [0, 1, 2, 1], seed=3, render=render)
        ids[render] = world.session_ids().clone()
        again = world.rollout(prompt, [0, 1, 2, 1], seed=3, render=render)
        np.testing.assert_array_equal(again, frames[render])  # deterministic per seed
    torch.testing.assert_close(ids["tokens"], ids["replenish"], rtol=0, atol=0)
    # where a token kept its id from the previous frame, replenish shows that frame's pixels
    h, w = ids["tokens"].shape[-2:]
    ph, pw = H // h, W // w
    same = (ids["tokens"][:, 1:] == ids["tokens"][:, :-1]).numpy()
    assert same.any() and not same.all(), "the test needs both kept and changed tokens"
    rep = frames["replenish"]
    for t in range(1, rep.shape[1]):
        keep = same[:, t - 1].repeat(ph, axis=1).repeat(pw, axis=2)
        np.testing.assert_array_equal(rep[:, t][keep], rep[:, t - 1][keep])
        np.testing.assert_array_equal(rep[:, t][~keep], frames["tokens"][:, t][~keep])


def test_render_is_checked() -> None:
    from genie_core.config.dynamics import SamplingConfig

    with pytest.raises(ValueError):
        SamplingConfig(render="pixels")


# ---- sampling.keep_bias: a prior on each token keeping its id ------------------------------

@pytest.mark.parametrize("overrides", [(), ("dynamics.max_group_bits=3",)])
def test_keep_bias_moves_ids_towards_the_previous_frame(overrides: tuple[str, ...]) -> None:
    from genie_core.models.world import World

    torch.manual_seed(0)
    world = World.from_preset("tiny", overrides)
    world.precision = "fp32"
    assert len(world.dynamics.group_bits) == (1 if not overrides else 3)
    H, W = world.resolution
    prompt = np.random.default_rng(4).integers(0, 256, (2, 1, H, W, 3), dtype=np.uint8)
    kept = {}
    for bias in (0.0, 3.0, 1e4):
        for use_cache in (True, False):
            world.use_cache = use_cache
            world.rollout(prompt, [0, 1, 2], seed=0, keep_bias=bias)
            ids = world.session_ids()
            if use_cache:
                cached = ids.clone()
            else:  # the KV cache and the recomputed forward sample the same ids
                torch.testing.assert_close(ids, cached, rtol=0, atol=0)
        kept[bias] = float((ids[:, 1:] == ids[:, :-1]).float().mean())
    assert kept[0.0] < kept[3.0] < 1.0 and kept[1e4] == 1.0


def test_keep_bias_with_a_cache_needs_the_previous_ids() -> None:
    world = _world()
    dyn = world.dynamics
    h, w = dyn.token_size
    ids = torch.zeros(1, 1, h, w, dtype=torch.long)
    cache = dyn.prefill(ids)
    with pytest.raises(ValueError, match="previous"):
        dyn.generate_next(cache, torch.zeros(1, dtype=torch.long), keep_bias=1.0)
    out = dyn.generate_next(dyn.prefill(ids), torch.zeros(1, dtype=torch.long), keep_bias=1e4, previous=ids[:, 0])
    torch.testing.assert_close(out, ids[:, 0], rtol=0, atol=0)


# ---- sampling.top_p: nucleus sampling ------------------------------------------------------

@pytest.mark.parametrize("overrides", [(), ("dynamics.max_group_bits=3",)])
def test_top_p_reaches_the_world_and_a_tiny_nucleus_is_greedy(overrides: tuple[str, ...]) -> None:
    from genie_core.config.dynamics import SamplingConfig
    from genie_core.models.world import World

    torch.manual_seed(0)
    world = World.from_preset("tiny", overrides)
    world.precision = "fp32"
    H, W = world.resolution
    prompt = np.random.default_rng(5).integers(0, 256, (2, 1, H, W, 3), dtype=np.uint8)

    def ids(**sampling: float) -> torch.Tensor:
        world.rollout(prompt, [0, 1, 2], seed=1, **sampling)
        return world.session_ids().clone()

    # every bit group's digit greedy: the same ids as temperature 0, whatever the seed
    torch.testing.assert_close(ids(top_p=1e-6), ids(temperature=0.0), rtol=0, atol=0)
    torch.testing.assert_close(ids(top_p=1.0), ids(), rtol=0, atol=0)  # 1: today's samples
    assert not torch.equal(ids(), ids(temperature=0.0))  # the tiny world does sample
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="top_p"):
            SamplingConfig(top_p=bad)
