"""Dynamics model (Genie §2.1): shapes, factorised vocabulary, masked loss against the original ids,
causality, action alignment, cached == uncached generation, checkpoint round trip, overfitting."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from genie_core.config import dynamics_config_for_preset, load_preset
from genie_core.models.dynamics import DynamicsModel, join_ids, masked_cross_entropy, random_future_mask, split_ids
from genie_core.models.sampling import MASK_ID


def _cfg(**changes):
    return dataclasses.replace(dynamics_config_for_preset(load_preset("tiny")), **changes)


def _model(seed: int = 0, **changes) -> DynamicsModel:
    torch.manual_seed(seed)
    return DynamicsModel(_cfg(**changes)).eval()


def _data(model: DynamicsModel, B: int = 2, T: int | None = None, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    T = T or model.context_frames
    h, w = model.token_size
    ids = torch.randint(0, model.config.vocab_size, (B, T, h, w), generator=g)
    actions = torch.randint(0, model.num_actions, (B, T - 1), generator=g)
    return ids, actions


def test_golden_shapes() -> None:
    model = _model()
    ids, actions = _data(model)
    logits = model(ids, actions)
    h, w = model.token_size
    assert [tuple(lg.shape) for lg in logits] == [(2, model.context_frames, h, w, 2 ** model.config.code_bits)]
    loss, metrics = model.loss(ids, actions)
    assert loss.ndim == 0 and torch.isfinite(loss) and {"loss", "token_acc"} <= set(metrics)


def test_loss_metrics_are_detached_tensors_and_bad_actions_raise() -> None:
    model = _model()
    ids, actions = _data(model)
    loss, metrics = model.loss(ids, actions)
    assert loss.requires_grad
    assert all(torch.is_tensor(v) and v.ndim == 0 and not v.requires_grad for v in metrics.values())
    assert float(metrics["loss"]) == pytest.approx(float(loss))
    with pytest.raises(ValueError, match="num_actions"):
        model(ids, actions.clamp(max=0) + model.num_actions + 1)


def test_factorised_head_for_18_bits() -> None:
    model = _model(code_bits=18, max_group_bits=9)
    assert model.group_bits == (9, 9)
    ids, actions = _data(model)
    assert ids.max() >= 512  # uses the high group
    logits = model(ids, actions)
    assert [lg.shape[-1] for lg in logits] == [512, 512]
    n_out = model.head.weight.shape[0]
    assert n_out == 1024  # not 2**18


def test_split_join_round_trip() -> None:
    ids = torch.arange(2 ** 11)
    for groups in [(11,), (6, 5), (4, 4, 3)]:
        digits = split_ids(ids, groups)
        assert all(int(d.max()) < 2 ** b for d, b in zip(digits, groups))
        assert torch.equal(join_ids(digits, groups), ids)


def test_random_future_mask() -> None:
    g = torch.Generator().manual_seed(0)
    mask = random_future_mask((64, 5, 4, 4), 0.5, 1.0, g)
    assert not mask[:, 0].any()
    rate = mask[:, 1:].float().mean(dim=(1, 2, 3))
    assert (rate > 0.3).all() and rate.mean().item() == pytest.approx(0.75, abs=0.06)
    assert rate.std() > 0.05  # a rate per sample, not one for the batch


def test_loss_targets_original_ids_at_masked_positions_only() -> None:
    """CE is taken against the clean ids, at masked positions; a model that copied its (masked)
    input could not score. Changing unmasked targets' loss contributions is impossible."""
    logits = [torch.randn(6, 8)]
    targets = torch.tensor([0, 1, 2, 3, 4, 5])
    loss, _ = masked_cross_entropy(logits, targets, (3,))
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits[0], targets))

    model = _model()
    ids, actions = _data(model)
    seen = {}
    orig_forward = model.forward

    def spy(inp, acts=None, select=None):
        seen["inp"], seen["select"] = inp.clone(), select.clone()
        return orig_forward(inp, acts, select)

    model.forward = spy
    model.loss(ids, actions, generator=torch.Generator().manual_seed(0))
    inp, select = seen["inp"], seen["select"]
    assert torch.equal(inp == MASK_ID, select)  # the model sees masks exactly where the loss is
    assert torch.equal(inp[~select], ids[~select])  # the rest is the clean input
    assert not select[:, 0].any() and select[:, 1:].any()


def test_causal_in_time() -> None:
    model = _model()
    ids, actions = _data(model)
    ref = model(ids, actions)[0]
    for t in range(1, ids.shape[1]):
        ids2 = ids.clone()
        ids2[:, t] = (ids2[:, t] + 1) % model.config.vocab_size
        out = model(ids2, actions)[0]
        torch.testing.assert_close(out[:, :t], ref[:, :t], rtol=0, atol=0)
        assert not torch.allclose(out[:, t], ref[:, t])


def test_action_for_transition_t_changes_frame_t_plus_1_only() -> None:
    model = _model()
    ids, actions = _data(model)
    ref = model(ids, actions)[0]
    for t in range(actions.shape[1]):
        acts2 = actions.clone()
        acts2[:, t] = (acts2[:, t] + 1) % model.num_actions
        out = model(ids, acts2)[0]
        torch.testing.assert_close(out[:, : t + 1], ref[:, : t + 1], rtol=0, atol=0)
        assert not torch.allclose(out[:, t + 1], ref[:, t + 1])


def test_cached_logits_equal_uncached() -> None:
    model = _model()
    ids, actions = _data(model)
    full = model(ids, actions)[0]  # (B, T, h, w, V)
    T = ids.shape[1]
    cache = model.prefill(ids[:, :1])
    for t in range(1, T):
        masked = ids[:, t].clone()
        masked[:, ::2] = MASK_ID
        step = model.next_logits(cache, masked, actions[:, t - 1])[0]
        ctx_only = model(torch.cat((ids[:, :t], masked[:, None]), 1), actions[:, :t])[0][:, -1]
        torch.testing.assert_close(step, ctx_only, rtol=1e-4, atol=1e-4)
        clean = model.next_logits(cache, ids[:, t], actions[:, t - 1])[0]
        torch.testing.assert_close(clean, full[:, t], rtol=1e-4, atol=1e-4)
        model.prefill(ids[:, t:t + 1], actions[:, t - 1:t], cache=cache)
    assert cache.position == T


def test_generate_next_cached_equals_uncached_and_fills_frame() -> None:
    model = _model()
    ids, actions = _data(model, T=3)
    action = torch.tensor([1, 2])
    cache = model.prefill(ids, actions)
    a = model.generate_next(cache, action, generator=torch.Generator().manual_seed(3))
    b = model.generate_next(ids, action, context_actions=actions, generator=torch.Generator().manual_seed(3))
    assert a.shape == (2, *model.token_size) and (a >= 0).all() and (a < model.config.vocab_size).all()
    assert torch.equal(a, b)
    assert cache.position == 4


@pytest.mark.parametrize("changes", [{}, {"depth": 3}, {"context_frames": 3, "spatial_positions": "rotary"}])
def test_cached_logits_equal_banded_recompute_past_the_window(changes: dict) -> None:
    """Over 3 windows and more, the ring-buffer cache (after repeated non-updating MaskGIT calls
    and slot wrap-around) and the cache-less recompute both give the banded full forward's logits:
    every frame keeps its real action, and deeper layers still reach frames that left the window."""
    model = _model(**changes)
    W = model.context_frames
    T = 3 * W + 2
    ids, actions = _data(model, T=T)
    with torch.no_grad():
        full = model(ids, actions)[0]  # (B, T, h, w, V): the banded forward of training
        cache = model.prefill(ids[:, :1])
        for t in range(1, T):
            masked = ids[:, t].clone()
            masked[:, t % 2::2] = MASK_ID
            for _ in range(3):  # MaskGIT asks several times before the frame is committed
                cached = model.next_logits(cache, masked, actions[:, t - 1])[0]
                recomputed = model.recompute_logits(ids[:, :t], actions[:, :t - 1], masked, actions[:, t - 1])[0]
                torch.testing.assert_close(cached, recomputed, rtol=0, atol=1e-5)
            torch.testing.assert_close(model.next_logits(cache, ids[:, t], actions[:, t - 1])[0], full[:, t],
                                       rtol=0, atol=1e-5)
            torch.testing.assert_close(model.recompute_logits(ids[:, :t], actions[:, :t - 1], ids[:, t],
                                                              actions[:, t - 1])[0], full[:, t], rtol=0, atol=1e-5)
            model.prefill(ids[:, t:t + 1], actions[:, t - 1:t], cache=cache)
            assert cache.length == min(t + 1, W - 1)
        # Recomputing only the window (its first frame given "no action") is NOT the same model.
        window = model(ids[:, -W:], actions[:, -(W - 1):])[0][:, -1]
        assert (window - full[:, -1]).abs().max() > 1e-3


def test_receptive_frames_are_exactly_what_reaches_the_next_frame() -> None:
    """In the banded full forward, the last frame depends on the receptive_frames frames before
    it (their ids and the actions that led to them) and on nothing earlier, so the recompute
    may drop the rest."""
    model = _model()
    R = model.receptive_frames
    assert R == model.config.depth * (model.context_frames - 1)
    T = R + 3
    ids, actions = _data(model, T=T)
    with torch.no_grad():
        ref = model(ids, actions)[0][:, -1]

        def changed(t: int, what: str) -> bool:
            ids2, acts2 = ids.clone(), actions.clone()
            if what == "ids":
                ids2[:, t] = (ids2[:, t] + 1) % model.config.vocab_size
            else:
                acts2[:, t - 1] = (acts2[:, t - 1] + 1) % model.num_actions
            return not torch.equal(model(ids2, acts2)[0][:, -1], ref)

        first = (T - 1) - R  # the oldest frame that reaches the last one
        assert changed(first, "ids") and changed(first, "actions")
        assert not changed(first - 1, "ids") and not changed(first - 1, "actions")


def test_generate_next_cached_equals_uncached_past_the_window() -> None:
    model = _model()
    T0, n = 2, 3 * model.context_frames
    ids, actions = _data(model, T=T0 + n)
    g_cached, g_plain = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    cache = model.prefill(ids[:, :T0], actions[:, :T0 - 1])
    session, acts = ids[:, :T0], actions[:, :T0 - 1]
    for t in range(n):
        action = actions[:, T0 - 1 + t]
        a = model.generate_next(cache, action, generator=g_cached)
        b = model.generate_next(session, action, context_actions=acts, generator=g_plain)
        assert torch.equal(a, b), t
        session, acts = torch.cat((session, a[:, None]), 1), torch.cat((acts, action[:, None]), 1)


def test_generate_next_keeps_prompt_tokens_and_is_seeded() -> None:
    model = _model()
    ids, actions = _data(model, T=2)
    prompt = torch.full((2, *model.token_size), MASK_ID)
    prompt[:, 0, :] = 7
    out = [model.generate_next(ids, torch.tensor([0, 1]), context_actions=actions, prompt=prompt,
                               generator=torch.Generator().manual_seed(s), temperature=2.0) for s in (0, 0, 1)]
    assert (out[0][:, 0, :] == 7).all() and (out[0] >= 0).all()
    assert torch.equal(out[0], out[1]) and not torch.equal(out[0], out[2])


def test_cache_cost_is_bounded_by_context_window() -> None:
    model = _model()
    ids, actions = _data(model, T=1)
    cache = model.prefill(ids)
    g = torch.Generator().manual_seed(0)
    for i in range(3 * model.context_frames):
        model.generate_next(cache, torch.tensor([i % 4, (i + 1) % 4]), generator=g, steps=1)
        assert cache.length <= model.context_frames - 1
    assert cache.position == 1 + 3 * model.context_frames


def test_checkpoint_round_trip(tmp_path) -> None:
    from genie_core.io.checkpoint_format import read_metadata
    from genie_core.models.load import load_checkpoint

    model = _model(code_bits=12, max_group_bits=6)
    path = tmp_path / "dyn.safetensors"
    model.save(path, step=5)
    assert read_metadata(path)["kind"] == "dynamics"
    loaded = load_checkpoint(path)
    assert isinstance(loaded, DynamicsModel) and loaded.config == model.config
    ids, actions = _data(model)
    for a, b in zip(model(ids, actions), loaded(ids, actions)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_from_preset_does_not_mutate_and_checks_config() -> None:
    a = DynamicsModel.from_preset("tiny")
    b = DynamicsModel.from_preset("tiny", ["dynamics.depth=1"])
    assert a.config.depth == 2 and b.config.depth == 1
    from genie_core.errors import ConfigError
    with pytest.raises(ConfigError, match="heads"):
        load_preset("tiny", ["dynamics.heads=5"])
    with pytest.raises(ConfigError, match="mask_rate"):
        load_preset("tiny", ["dynamics.mask_rate_min=0.9", "dynamics.mask_rate_max=0.5"])


def test_overfit_one_batch() -> None:
    torch.manual_seed(0)
    model = DynamicsModel(_cfg(code_bits=6)).train()
    ids, actions = _data(model, B=2, seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        loss, _ = model.loss(ids, actions, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.4 * sum(losses[:5]) / 5


def _untrained_inputs(cfg, tmp_path):
    """An untrained tokenizer and LAM of ``cfg`` saved as the dynamics stage's frozen inputs."""
    from genie_core.models.lam import LatentActionModel
    from genie_core.models.tokenizer import VideoTokenizer

    torch.manual_seed(0)
    tok_path, lam_path = tmp_path / "tok.safetensors", tmp_path / "lam.safetensors"
    VideoTokenizer.from_config(cfg.tokenizer).save(tok_path)
    lam_cfg = dataclasses.replace(cfg.lam, resolution=tuple(cfg.data.resolution))
    LatentActionModel.from_config(lam_cfg).save(lam_path)
    return tok_path, lam_path


def test_stage_trains_on_cached_tokens_and_writes_world(tmp_path, clip_dir) -> None:
    """--stage dynamics with --tokenizer/--lam checkpoints: tokens cached once in the token-file
    format, the loss falls, RUN/world.safetensors plays; a second run reuses the token cache."""
    import json

    from genie_core.io.tokens import load_tokens
    from genie_core.models.load import load_checkpoint
    from genie_core.models.world import World
    from genie_core.training.train import train

    cfg = load_preset("tiny", ["train.dynamics.steps=30", "train.dynamics.eval_every=30"])
    tok_path, lam_path = _untrained_inputs(cfg, tmp_path)

    run = tmp_path / "run"
    results = train(cfg, clip_dir, run, stage="dynamics", device="cpu",
                    inputs={"tokenizer": tok_path, "lam": lam_path})
    metrics = results["dynamics"]
    assert {"loss", "token_acc", "next_psnr", "next_psnr_random", "next_delta_psnr"} <= set(metrics)
    log = [json.loads(line) for line in (run / "dynamics" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r and r.get("event", "train") == "train"]
    assert losses and losses[-1] < losses[0]

    token_files = sorted(clip_dir.glob(".genie_cache/*/tokens/*/**/*.npz"))
    assert len(token_files) == 4
    ids, meta = load_tokens(token_files[0])
    assert ids.shape[1:] == (8, 8) and meta["tokenizer_digest"]
    stamps = [p.stat().st_mtime_ns for p in token_files]

    world = load_checkpoint(run / "world.safetensors")
    assert isinstance(world, World)
    video = world.rollout(np.zeros((16, 16, 3), np.uint8), [0, 1, 2])
    assert video.shape == (1, 4, 16, 16, 3)

    train(cfg, clip_dir, tmp_path / "run2", stage="dynamics", device="cpu",
          inputs={"tokenizer": tok_path, "lam": lam_path})
    assert [p.stat().st_mtime_ns for p in token_files] == stamps  # reused, not recomputed


def test_stage_without_tokenizer_is_a_clear_error(tmp_path, clip_dir) -> None:
    from genie_core.errors import GenieError
    from genie_core.training.train import train

    with pytest.raises(GenieError, match="needs a trained tokenizer"):
        train(load_preset("tiny"), clip_dir, tmp_path / "run", stage="dynamics", device="cpu")
    assert not (tmp_path / "run").exists()


def test_stage_token_table_equals_genie_tokenize(tmp_path, clip_dir) -> None:
    """The stage's cached ids of each video are ``api.tokenize_video``'s (windows of another
    length: with the causal warm-up neither depends on where windows fall); a token file from
    before the warm-up (no ``window_warmup``) is encoded again, not reused."""
    from genie_core.io.tokens import load_tokens, save_tokens
    from genie_core.tasks import tokenize as api
    from genie_core.training.train import train

    cfg = load_preset("tiny", ["train.dynamics.steps=1", "train.dynamics.eval_every=1"])
    tok_path, lam_path = _untrained_inputs(cfg, tmp_path)
    inputs = {"tokenizer": tok_path, "lam": lam_path}
    train(cfg, clip_dir, tmp_path / "run", stage="dynamics", device="cpu", inputs=inputs)

    tok = api.load_tokenizer(tok_path, device="cpu", window=3)
    token_files = sorted(clip_dir.glob(".genie_cache/*/tokens/*/**/*.npz"))
    assert len(token_files) == 4
    for path in token_files:
        ids, meta = load_tokens(path)
        assert ids.shape[0] == meta["num_frames"] > cfg.data.num_frames  # more than one window
        expected, want = api.tokenize_video(tok, clip_dir / meta["source"], size=(16, 16), precision="fp32")
        np.testing.assert_array_equal(ids, expected)
        assert meta["window_warmup"] > 0
        # One metadata builder: the same keys as a token file of `genie tokenize` (less what only
        # a video file gives), the same description of the tokenizer.
        assert set(meta) == set(want) - {"source_size"} | {"token_shape"}
        for key in ("tokenizer_digest", "time_downsample", "space_downsample", "vocab_size", "window_warmup",
                    "num_frames", "frame_size", "format_version", "precision"):
            assert meta[key] == want[key], key

    stale = token_files[0]
    ids, meta = load_tokens(stale)
    del meta["window_warmup"]
    save_tokens(stale, np.zeros_like(ids), meta)
    train(cfg, clip_dir, tmp_path / "run2", stage="dynamics", device="cpu", inputs=inputs)
    np.testing.assert_array_equal(load_tokens(stale)[0], ids)
    # ids encoded under another precision (bf16 and fp32 ids differ) are encoded again too
    meta = load_tokens(stale)[1]
    assert meta["precision"] == "fp32"  # the tiny preset's
    save_tokens(stale, np.zeros_like(ids), {**meta, "precision": "bf16"})
    train(cfg, clip_dir, tmp_path / "run3", stage="dynamics", device="cpu", inputs=inputs)
    np.testing.assert_array_equal(load_tokens(stale)[0], ids)
    assert load_tokens(stale)[1]["precision"] == "fp32"
