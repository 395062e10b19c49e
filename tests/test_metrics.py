"""Metrics (docs/design.md, "Metrics"): PSNR/SSIM identities and closed forms, shapes for images and
videos; codebook usage; NMI and mapping accuracy invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genie_core import metrics


def _pair(shape, noise, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=gen)
    return a, (a + noise * torch.randn(shape, generator=gen)).clamp(0, 1)


# ---- PSNR / SSIM -------------------------------------------------------------------------------

def test_identical_inputs_hit_the_cap_and_ssim_one():
    a, _ = _pair((2, 3, 16, 16), 0)
    assert torch.equal(metrics.psnr(a, a), torch.full((2,), metrics.PSNR_CAP_DB))
    torch.testing.assert_close(metrics.ssim(a, a), torch.ones(2))


def test_psnr_closed_form_and_ssim_constant_offset():
    a = torch.full((1, 3, 16, 16), 0.3)
    b = a + 0.1  # MSE = 0.01 -> 20 dB
    torch.testing.assert_close(metrics.psnr(a, b), torch.tensor([20.0]))
    # Flat images: variances and covariance are 0, so SSIM is the luminance term alone.
    c1 = 0.01 ** 2
    expected = (2 * 0.3 * 0.4 + c1) / (0.3 ** 2 + 0.4 ** 2 + c1)
    torch.testing.assert_close(metrics.ssim(a, b), torch.tensor([expected]))


def test_more_noise_lowers_both_and_both_are_symmetric():
    a, slight = _pair((4, 3, 24, 24), 0.02)
    _, heavy = _pair((4, 3, 24, 24), 0.2)
    assert (metrics.psnr(a, slight) > metrics.psnr(a, heavy)).all()
    assert (metrics.ssim(a, slight) > metrics.ssim(a, heavy)).all()
    assert (metrics.ssim(a, heavy) < 1).all()
    torch.testing.assert_close(metrics.psnr(a, heavy), metrics.psnr(heavy, a))
    torch.testing.assert_close(metrics.ssim(a, heavy), metrics.ssim(heavy, a))


def test_shapes_images_leading_dims_and_videos():
    a, b = _pair((2, 3, 5, 16, 16), 0.1)  # video (B, C, T, H, W): a 5-d input is always a video
    frames_a = a.permute(0, 2, 1, 3, 4).reshape(10, 3, 16, 16)  # (B*T, C, H, W) single frames
    frames_b = b.permute(0, 2, 1, 3, 4).reshape(10, 3, 16, 16)
    for fn in (metrics.psnr, metrics.ssim):
        per_frame = fn(frames_a, frames_b).reshape(2, 5)
        torch.testing.assert_close(fn(a, b), per_frame.mean(dim=1))  # video: mean over frames
        assert fn(a[0, :, 0], b[0, :, 0]).shape == ()
        assert fn(a[:, :, 0], b[:, :, 0]).shape == (2,)


def test_small_images_and_bad_inputs():
    a, b = _pair((1, 3, 8, 8), 0.1)  # smaller than the 11x11 window
    assert 0 < metrics.ssim(a, b).item() < 1
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.psnr(a, b[..., :4])
    with pytest.raises(TypeError):
        metrics.psnr((a * 255).to(torch.uint8), (b * 255).to(torch.uint8))


# ---- discrete metrics --------------------------------------------------------------------------

def test_codebook_usage():
    assert metrics.codebook_usage(np.zeros(100, np.int64), 8) == (0.125, 1.0)  # collapse
    fraction, perplexity = metrics.codebook_usage(torch.arange(16).repeat(4), 32)
    assert fraction == 0.5 and perplexity == pytest.approx(16.0)
    with pytest.raises(ValueError):
        metrics.codebook_usage([3, 9], 8)


def test_nmi_relabelling_is_one_independent_is_zero():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 6, size=5000)
    permuted = np.array([3, 0, 5, 1, 4, 2])[truth] + 10  # any relabelling, even with gaps
    assert metrics.nmi(permuted, truth) == pytest.approx(1.0)
    assert metrics.nmi(rng.integers(0, 6, size=5000), truth) < 0.01
    assert metrics.nmi(truth, truth % 2) == pytest.approx(metrics.nmi(truth % 2, truth))
    assert 0 < metrics.nmi(truth, truth % 2) < 1  # a coarsening keeps part of the information
    assert metrics.nmi([1, 1, 1], [0, 0, 0]) == 1.0


def test_mapping_accuracy_many_to_one_and_relabelling():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, size=2000)
    latent = np.where(rng.random(2000) < 0.5, 2 * truth, 2 * truth + 1)  # two latents per action
    accuracy, mapping = metrics.mapping_accuracy(latent, truth)
    assert accuracy == 1.0 and mapping == {i: i // 2 for i in range(6)}
    noisy = np.where(rng.random(2000) < 0.2, rng.integers(0, 6, size=2000), latent)
    base, _ = metrics.mapping_accuracy(noisy, truth)
    relabelled, _ = metrics.mapping_accuracy(np.array([5, 3, 1, 0, 2, 4])[noisy], truth)
    assert 0.5 < base < 1 and relabelled == base


def test_confusion_counts():
    table = metrics.confusion([0, 1, 1, 2], [1, 0, 0, 1], n_latent=4, n_true=2)
    np.testing.assert_array_equal(table, [[0, 1], [2, 0], [0, 1], [0, 0]])
    assert table.sum() == 4
    with pytest.raises(ValueError):
        metrics.confusion([0, 1], [0])
    assert math.isclose(metrics.mapping_accuracy([0, 1, 1, 2], [1, 0, 0, 1])[0], 1.0)


def test_token_stability_counts_only_patches_whose_pixels_stayed_still():
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 1, 16, 16, 3), dtype=torch.uint8, generator=gen).repeat(1, 3, 1, 1, 1)
    frames[:, 1:, :4, :4] += 50  # patch (0, 0) changes at frames 1 (and stays changed at 2)
    ids = torch.randint(0, 64, (2, 1, 4, 4), generator=gen).repeat(1, 3, 1, 1)
    assert metrics.token_stability(frames, ids) == 1.0
    ids[:, 1:, 0, 0] += 1  # a flip where the pixels moved is not counted
    assert metrics.token_stability(frames, ids) == 1.0
    ids[:, 2, 3, 3] += 1  # a flip where nothing moved is: 2 of the 2 * 2 * 16 - 2 still patches
    assert metrics.token_stability(frames, ids) == pytest.approx(1 - 2 / 62)
    frames[:, 1] = 255 - frames[:, 1]  # everything moves: nothing to measure
    assert math.isnan(metrics.token_stability(frames, ids))


def test_token_stability_bad_shapes():
    frames = torch.zeros(1, 3, 16, 16, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="patches"):
        metrics.token_stability(frames, torch.zeros(1, 3, 4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="same B"):
        metrics.token_stability(frames, torch.zeros(1, 2, 4, 4, dtype=torch.long))
