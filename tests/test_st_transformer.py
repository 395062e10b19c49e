"""ST-transformer (Genie §2.1): shapes, temporal causality, KV cache == full recompute, sliding window."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from genie_core.models.layers.st_transformer import STTransformer, apply_rotary, grid_angles, rotary_angles

B, T, S, D = 2, 5, 6, 32


def _model(qk_norm: bool = False, seed: int = 0) -> STTransformer:
    torch.manual_seed(seed)
    return STTransformer(dim=D, depth=2, heads=4, qk_norm=qk_norm).eval()


def _input(seed: int = 1, frames: int = T) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, frames, S, D, generator=g)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_shape_and_backward(qk_norm: bool) -> None:
    model = _model(qk_norm).train()
    x = _input().requires_grad_()
    y = model(x)
    assert y.shape == (B, T, S, D)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters())


def test_temporal_causality() -> None:
    """Perturbing frame t changes nothing before t, and does change frame t."""
    model, x = _model(), _input()
    y = model(x)
    for t in range(1, T):
        x2 = x.clone()
        x2[:, t] += torch.randn_like(x2[:, t])
        y2 = model(x2)
        torch.testing.assert_close(y2[:, :t], y[:, :t], rtol=0, atol=0)
        assert not torch.allclose(y2[:, t], y[:, t])


def test_batch_independent() -> None:
    model, x = _model(), _input()
    y = model(x)
    x2 = x.clone()
    x2[1] += 1.0
    torch.testing.assert_close(model(x2)[0], y[0])


@pytest.mark.parametrize("qk_norm", [False, True])
def test_cache_matches_full_forward(qk_norm: bool) -> None:
    """Feeding frames one (or two) at a time through the cache gives the full forward's outputs."""
    model, x = _model(qk_norm), _input()
    full = model(x)
    cache = model.new_cache()
    outs = [model(x[:, :2], cache)]  # a 2-frame prompt, then one frame at a time
    for t in range(2, T):
        outs.append(model(x[:, t:t + 1], cache))
    assert cache.position == T and cache.length == T
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=1e-4, atol=1e-5)


def test_cache_without_update_is_untouched() -> None:
    model, x = _model(), _input()
    cache = model.new_cache()
    model(x[:, :3], cache)
    keys = [c.ordered()[0].clone() for c in cache.layers]
    a = model(x[:, 3:4], cache, update_cache=False)
    b = model(x[:, 3:4] + 1.0, cache, update_cache=False)
    assert cache.position == 3 and cache.length == 3
    assert all(torch.equal(c.ordered()[0], k0) for c, k0 in zip(cache.layers, keys))
    torch.testing.assert_close(a, model(x, None)[:, 3:4], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(a, b)


def test_sliding_window_cache_matches_banded_full_forward() -> None:
    """A cache bounded to W frames equals a full forward whose temporal mask is a W-wide band,
    and keeps a fixed size however many frames pass (rotary positions do not shift)."""
    window, frames = 3, 9
    model, x = _model(), _input(frames=frames)
    banded = model(x, window=window)
    cache = model.new_cache(window)
    outs = [model(x[:, :2], cache)]
    for t in range(2, frames):
        outs.append(model(x[:, t:t + 1], cache))
        assert cache.length == window - 1
    assert cache.position == frames
    torch.testing.assert_close(torch.cat(outs, dim=1), banded, rtol=1e-4, atol=1e-5)
    # The band matters: the plain causal forward differs after the first window.
    assert not torch.allclose(model(x)[:, window:], banded[:, window:])


def test_sliding_cache_after_long_prefill_and_copy() -> None:
    """A prompt longer than the window, then frames one at a time; a copy branches independently."""
    window, frames = 3, 8
    model, x = _model(), _input(frames=frames)
    banded = model(x, window=window)
    cache = model.new_cache(window)
    outs = [model(x[:, :5], cache)]
    branch = cache.copy()
    for t in range(5, frames):
        outs.append(model(x[:, t:t + 1], cache))
    torch.testing.assert_close(torch.cat(outs, dim=1), banded, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model(x[:, 5:6], branch), banded[:, 5:6], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("window", [1, 2])
def test_tiny_windows(window: int) -> None:
    model, x = _model(), _input()
    banded = model(x, window=window)
    cache = model.new_cache(window)
    outs = [model(x[:, t:t + 1], cache) for t in range(T)]
    torch.testing.assert_close(torch.cat(outs, dim=1), banded, rtol=1e-4, atol=1e-5)


def test_unbounded_cache_grows() -> None:
    model, x = _model(), _input(frames=20)
    full = model(x)
    cache = model.new_cache()
    outs = [model(x[:, t:t + 1], cache) for t in range(20)]
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=1e-4, atol=1e-4)


def test_cache_repeat_branches_batch() -> None:
    model, x = _model(), _input()
    cache = model.new_cache()
    model(x[:, :3], cache)
    rep = cache.repeat(2)
    nxt = x[:, 3:4].repeat_interleave(2, dim=0)
    y = model(nxt, rep)
    torch.testing.assert_close(y[0::2], y[1::2])
    torch.testing.assert_close(y[0::2], model(x[:, :4])[:, 3:4], rtol=1e-4, atol=1e-5)


def test_rotary_is_relative() -> None:
    """q.k after rotation depends only on the distance between positions."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 16, generator=g), torch.randn(1, 16, generator=g)

    def score(i: int, j: int) -> torch.Tensor:
        ci, si = rotary_angles(torch.tensor([i]), 16)
        cj, sj = rotary_angles(torch.tensor([j]), 16)
        return (apply_rotary(q, ci, si) * apply_rotary(k, cj, sj)).sum()

    torch.testing.assert_close(score(7, 3), score(107, 103), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(score(7, 3), score(7, 5))


def test_bf16_autocast_runs_and_is_close() -> None:
    model, x = _model(), _input()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    torch.testing.assert_close(y.float(), model(x), rtol=0.1, atol=0.1)


def test_training_after_inference_mode() -> None:
    """Memoised rotary tables built under inference_mode must still work with autograd."""
    model, x = _model(), _input()
    with torch.inference_mode():
        model(x)
    model.train()(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_start_position_shifts_nothing_even_far_into_a_session() -> None:
    """Time positions are relative: a slice run from its own position ``start`` gives the
    outputs it had at 0, also 100,000 frames in, where the angles stay exact to fp32 rounding
    (an fp32 product position * frequency would be off by up to 4e-3 rad there)."""
    window, frames = 3, 7
    model, x = _model(), _input(frames=frames)
    ref = model(x, window=window)
    for start in (5, 100_000):
        torch.testing.assert_close(model(x, window=window, start=start), ref, rtol=0, atol=1e-5)
    head_dim, pos = 16, 100_003
    cos, sin = rotary_angles(torch.tensor([pos]), head_dim)
    assert cos.dtype == sin.dtype == torch.float32
    freqs = [10000.0 ** (-i / head_dim) for i in range(0, head_dim, 2)]
    torch.testing.assert_close(cos[0], torch.tensor([math.cos(pos * f) for f in freqs]), rtol=0, atol=1e-6)
    torch.testing.assert_close(sin[0], torch.tensor([math.sin(pos * f) for f in freqs]), rtol=0, atol=1e-6)


def test_slice_of_the_receptive_field_equals_the_banded_full_forward() -> None:
    """The last frame of a W-banded forward over depth * (W - 1) + 1 frames, run from their own
    start position, equals that frame in the forward over the whole sequence."""
    window, frames = 3, 12
    model, x = _model(), _input(frames=frames)
    keep = model.depth * (window - 1) + 1
    full = model(x, window=window)
    part = model(x[:, -keep:], window=window, start=frames - keep)
    torch.testing.assert_close(part[:, -1], full[:, -1], rtol=0, atol=1e-5)
    shorter = model(x[:, -(keep - 1):], window=window, start=frames - keep + 1)
    assert not torch.allclose(shorter[:, -1], full[:, -1], rtol=0, atol=1e-5)


def test_explicit_training_attention_matches_the_fused_kernel_in_values_and_gradients():
    """Training's temporal attention is softmax(q k^T) v written out (the fused CPU kernel's
    backward was 6x slower there): same outputs and gradients as SDPA under the band mask."""
    from genie_core.models.layers.st_transformer import _band_mask, _explicit_attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(6, 2, 10, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    band = _band_mask(10, 10, 4, torch.device("cpu"))
    g = torch.randn(6, 2, 10, 8, dtype=torch.float64)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=band)
    out = _explicit_attention(q, k, v, band)
    torch.testing.assert_close(out, ref)
    for a, b in zip(torch.autograd.grad(ref, (q, k, v), g), torch.autograd.grad(out, (q, k, v), g)):
        torch.testing.assert_close(a, b)


def test_fused_rotation_gives_the_bits_of_apply_rotary_outside_training():
    """_rotate with fp32 tables (play, evaluation) is apply_rotary / apply_grid_rotary bit for
    bit in bf16 and fp32 (samples unchanged); in training its bf16 tables stay within bf16 error."""
    from genie_core.models.layers.st_transformer import _frame_table, _grid_table, _rotate, apply_grid_rotary

    torch.manual_seed(0)
    cpu = torch.device("cpu")
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(3, 5, 2, 16).to(dtype)  # (N, T, H, Dh)
        cos, sin = rotary_angles(torch.arange(7, 12), 16)
        ref = apply_rotary(x.transpose(1, 2), cos, sin).transpose(1, 2)
        assert torch.equal(_rotate(x, _frame_table(7, 5, 16, 2, torch.float32, cpu)), ref)
        g = torch.randn(3, 12, 2, 16).to(dtype)  # a 3 x 4 grid
        ref_g = apply_grid_rotary(g.transpose(1, 2), grid_angles(3, 4, 16)).transpose(1, 2)
        assert torch.equal(_rotate(g, _grid_table(3, 4, 16, 2, torch.float32, cpu)), ref_g)
    low = _rotate(g, _grid_table(3, 4, 16, 2, torch.bfloat16, cpu))
    torch.testing.assert_close(low.float(), ref_g.float(), atol=0.05, rtol=0.02)
    # Outside autograd the rotation runs in place on an upcast copy: the input is left as it was,
    # and training's expression (autograd on) gives the same bits.
    for dtype in (torch.float32, torch.bfloat16):
        g = torch.randn(3, 12, 2, 16).to(dtype)
        before, table = g.clone(), _grid_table(3, 4, 16, 2, torch.float32, cpu)
        out = _rotate(g, table)
        assert torch.equal(g, before)
        assert torch.equal(_rotate(g.clone().requires_grad_(), table).detach(), out)



def test_queries_and_keys_normed_and_rotated_together_give_the_bits_of_one_pass_each():
    """Attention.project norms queries and keys in one pass and _rotate turns them with pair
    tables: bit for bit F.rms_norm(q, q_scale) / (k, k_scale) and _rotate of each (the samples
    of play and evaluation unchanged), in fp32, in bf16 and under bf16 autocast."""
    from genie_core.models.layers.st_transformer import Attention, _frame_table, _grid_table, _rotate

    torch.manual_seed(0)
    cpu = torch.device("cpu")
    att = Attention(64, 4, qk_norm=True)
    with torch.no_grad():
        att.q_scale.uniform_(0.5, 1.5)
        att.k_scale.uniform_(0.5, 1.5)
    for dtype, autocast in ((torch.float32, False), (torch.bfloat16, False), (torch.float32, True)):
        net = copy.deepcopy(att).to(dtype)
        x = torch.randn(2, 12, 64).to(dtype)
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            qk, v = net.project(x)
            qkv = net.qkv(x).unflatten(-1, (3, 4, 16))
            q, k = qkv[..., 0, :, :], qkv[..., 1, :, :]
            q_ref = F.rms_norm(q, (16,), net.q_scale.to(q.dtype))
            k_ref = F.rms_norm(k, (16,), net.k_scale.to(k.dtype))
            assert torch.equal(qk[..., 0, :, :], q_ref) and torch.equal(qk[..., 1, :, :], k_ref)
            assert torch.equal(v, qkv[..., 2, :, :])
            for single, pair in ((_frame_table(3, 12, 16, 4, torch.float32, cpu),
                                  _frame_table(3, 12, 16, 4, torch.float32, cpu, pairs=2)),
                                 (_grid_table(3, 4, 16, 4, torch.float32, cpu),
                                  _grid_table(3, 4, 16, 4, torch.float32, cpu, pairs=2))):
                turned = _rotate(qk, pair)
                assert torch.equal(turned[..., 0, :, :], _rotate(q_ref, single))
                assert torch.equal(turned[..., 1, :, :], _rotate(k_ref, single))


def test_grid_prefix_tokens_keep_no_position_and_the_grid_rotates_as_without_them():
    """A pooling token before the grid (grid_prefix=1) is not rotated, and the grid's tokens
    rotate exactly as they do without it; attention scores between grid tokens then depend only
    on their offset, and a shape that is not prefix + h * w is refused."""
    from genie_core.models.layers.st_transformer import _grid_table, _rotate

    torch.manual_seed(0)
    cpu = torch.device("cpu")
    x = torch.randn(2, 1 + 12, 2, 16)  # (N, 1 + 3 x 4, H, Dh)
    with_prefix = _rotate(x, _grid_table(3, 4, 16, 2, torch.float32, cpu, prefix=1))
    assert torch.equal(with_prefix[:, 0], x[:, 0])
    assert torch.equal(with_prefix[:, 1:], _rotate(x[:, 1:], _grid_table(3, 4, 16, 2, torch.float32, cpu)))
    net = STTransformer(32, 1, 2, rotary_grid=True, grid_prefix=1).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 2, 13, 32), grid=(3, 4)).shape == (1, 2, 13, 32)
        with pytest.raises(ValueError, match=r"3 x 4 \+ 1 tokens"):
            net(torch.randn(1, 2, 12, 32), grid=(3, 4))
        with pytest.raises(ValueError, match="grid"):
            net(torch.randn(1, 2, 13, 32))


def test_committing_without_output_fills_the_cache_exactly_as_a_full_pass() -> None:
    """``output=False`` (a sampled frame committed to the cache) skips only work no key or value
    depends on: the cache is bit-identical to a pass that computes the output, and the next
    frame's outputs are too. It refuses to run without a cache to update."""
    model, x = _model(), _input()
    caches = [model.new_cache(window=3), model.new_cache(window=3)]
    for c, output in zip(caches, (True, False)):
        model(x[:, :2], c, output=output)
        for t in range(2, T - 1):
            model(x[:, t:t + 1], c, output=output)
    for a, b in zip(caches[0].layers, caches[1].layers):
        assert torch.equal(a.k, b.k) and torch.equal(a.v, b.v)
    assert caches[0].position == caches[1].position == T - 1
    nxt = [model(x[:, -1:], c, update_cache=False) for c in caches]
    assert torch.equal(nxt[0], nxt[1])
    with pytest.raises(ValueError, match="cache"):
        model(x, output=False)


@pytest.mark.parametrize("frames", [1, 3, 7, 16])
def test_one_frame_over_the_cache_is_the_rounded_exact_attention(frames: int) -> None:
    """Decoding attends one new frame over fp32 cached keys/values with plain fp32 matmuls: from
    bf16 inputs under autocast that is the exact attention rounded once to bf16 (the fused kernel
    on bf16 inputs was further off), and in fp32 it agrees with the fused kernel."""
    from genie_core.models.layers.kv_cache import _attend_cached

    torch.manual_seed(frames)
    q = (2 * torch.randn(512, 4, 1, 16)).bfloat16()
    k = (2 * torch.randn(512, 4, frames, 16)).bfloat16()
    v = torch.randn(512, 4, frames, 16).bfloat16()
    exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = _attend_cached(q, k.float(), v.float())
        fused = F.scaled_dot_product_attention(q, k, v)
    assert ours.dtype == torch.bfloat16
    rounded = exact.bfloat16()
    assert (ours == rounded).float().mean() > 0.999
    ulp = torch.finfo(torch.bfloat16).eps * exact.abs().clamp_min(2 ** -10)
    assert ((ours.double() - exact).abs() <= ulp).all()
    assert (ours.double() - exact).abs().mean() <= (fused.double() - exact).abs().mean()
    q32, k32, v32 = q.float(), k.float(), v.float()
    torch.testing.assert_close(_attend_cached(q32, k32, v32), F.scaled_dot_product_attention(q32, k32, v32),
                               rtol=0, atol=2e-6)


def test_cache_holds_keys_and_values_in_fp32_exactly_as_computed() -> None:
    """Under bf16 autocast the cache's fp32 buffers hold the bf16 keys exactly (no rounding lost
    or added); in fp32 a cached step gives the full forward's output, with the temporal output
    projections scaled up so that a wrong cached attention shows (at init they are tiny)."""
    torch.manual_seed(0)
    model = STTransformer(dim=32, depth=2, heads=2).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.temporal.proj.weight.mul_(30)
    x, new = torch.randn(1, 3, 4, 32), torch.randn(1, 1, 4, 32)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        cache = model.new_cache()
        model(x, cache, update_cache=True)
        layer = cache.layer(0)
        assert layer.k.dtype == torch.float32 and layer.v.dtype == torch.float32
        filled = layer.k[:, :, : layer.length]
        assert torch.equal(filled, filled.bfloat16().float())  # bf16 values, stored exactly
    with torch.inference_mode():
        cache = model.new_cache()
        model(x, cache, update_cache=True)
        step = model(new, cache, update_cache=False)
        full = model(torch.cat((x, new), dim=1))[:, -1:]
    torch.testing.assert_close(step, full, rtol=0, atol=1e-5)
