"""Evaluation metrics (docs/design.md, "Metrics"): PSNR and SSIM for reconstructions and Genie's ΔtPSNR
(§3.1), codebook usage for the tokenizer and LAM, and NMI / best-mapping accuracy of latent
actions against ground-truth actions. Image metrics in torch, discrete ones in numpy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

PSNR_CAP_DB = 100.0  # identical inputs: MSE is floored at 10**-10 (data range 1), so means stay finite


# ----------------------------------------------------------------------------- image metrics

def _as_frames(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...], bool]:
    """(N, C, H, W) float views of both inputs, the leading shape, and whether the input was a
    video (B, C, T, H, W), whose per-frame scores are averaged over T."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise TypeError("psnr/ssim expect float images in [0, 1]; convert uint8 with x / 255")
    if a.ndim < 3:
        raise ValueError(f"expected (..., C, H, W) or (B, C, T, H, W), got {tuple(a.shape)}")
    video = a.ndim == 5
    if video:  # (B, C, T, H, W): score each frame
        a, b = (rearrange(x, "b c t h w -> b t c h w") for x in (a, b))
    lead = tuple(a.shape[:-3])
    a, b = (x.reshape(-1, *x.shape[-3:]).float() for x in (a, b))  # (N, C, H, W)
    return a, b, lead, video


def _finish(scores: torch.Tensor, lead: tuple[int, ...], video: bool) -> torch.Tensor:
    scores = scores.reshape(lead)
    return scores.mean(dim=-1) if video else scores  # video: (B, T) -> (B,)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image: input (..., C, H, W) -> (...); a video
    (B, C, T, H, W) (a 5-d input is always read this way) -> (B,), the mean of its per-frame PSNRs.

    Identical images give PSNR_CAP_DB (100 dB) rather than inf, so averages stay finite."""
    a, b, lead, video = _as_frames(a, b)
    mse = (a - b).pow(2).mean(dim=(1, 2, 3))  # (N,)
    floor = 10 ** (-PSNR_CAP_DB / 10) * data_range ** 2
    scores = 10 * torch.log10(data_range ** 2 / mse.clamp_min(floor))
    return _finish(scores, lead, video)


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return g.expand(channels, size).contiguous()  # (C, k): the 2-D window is separable


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image: 11x11 Gaussian window, sigma 1.5,
    K1=0.01, K2=0.03, 'valid' filtering, averaged over positions and channels. Shapes as ``psnr``.

    Images smaller than the window use the largest odd window that fits (same sigma)."""
    a, b, lead, video = _as_frames(a, b)
    a, b = a.double(), b.double()  # E[x^2] - E[x]^2 cancels badly in float32 next to C2 = 9e-4
    channels, height, width = a.shape[1:]
    size = min(window, height, width)
    size -= 1 - size % 2  # odd, so the window has a centre
    kernel = _gaussian_window(size, sigma, channels, a.device)

    rows, cols = kernel[:, None, :, None], kernel[:, None, None, :]  # (C, 1, k, 1), (C, 1, 1, k)

    def blur(x: torch.Tensor) -> torch.Tensor:
        # Two 1-D passes equal the 2-D Gaussian (separable) at ~4x less work.
        return F.conv2d(F.conv2d(x, rows, groups=channels), cols, groups=channels)  # (N, C, H-k+1, W-k+1)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return _finish(ssim_map.mean(dim=(1, 2, 3)).float(), lead, video)


# ----------------------------------------------------------------------------- discrete metrics

def _labels(x: Any, name: str) -> np.ndarray:
    """Flatten ids or labels (numpy, torch, list) to a 1-d int64 array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x).reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must be non-negative")
    return arr.astype(np.int64)


def _pair(latent: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    latent, truth = _labels(latent, "latent"), _labels(truth, "truth")
    if latent.shape != truth.shape:
        raise ValueError(f"{latent.size} latent labels but {truth.size} true labels")
    if latent.size == 0:
        raise ValueError("no labels")
    return latent, truth


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def codebook_usage(ids: Any, vocab: int) -> tuple[float, float]:
    """(fraction of the ``vocab`` codes used at least once, perplexity = exp(entropy) of the
    empirical code distribution; vocab means perfectly uniform use, 1 means collapse)."""
    ids = _labels(ids, "ids")
    if ids.size == 0:
        raise ValueError("no ids")
    if ids.max() >= vocab:
        raise ValueError(f"id {ids.max()} outside a vocabulary of {vocab}")
    _, counts = np.unique(ids, return_counts=True)  # memory grows with codes used, not vocab
    return len(counts) / vocab, math.exp(_entropy(counts))


def token_stability(frames: torch.Tensor, ids: torch.Tensor, tolerance: int = 6) -> float:
    """How often a token keeps its id when the pixels it covers do not change: over consecutive
    frames, P(id[t] == id[t-1] | every pixel of its patch moved by <= ``tolerance`` of 255).

    ``frames`` are uint8 (B, T, H, W, 3) and ``ids`` (B, T, h, w) with one token frame per video
    frame (time stride 1) and H / h = W / w. A world model predicts the next frame's ids, so ids
    that flip where nothing moved (frame-wide normalisation, wide receptive fields) are noise it
    must learn; 1.0 means none flip. NaN when no patch is unchanged.
    """
    if frames.ndim != 5 or ids.ndim != 4 or frames.shape[:2] != ids.shape[:2]:
        raise ValueError(f"expected frames (B, T, H, W, 3) and ids (B, T, h, w) with the same B "
                         f"and T, got {tuple(frames.shape)} and {tuple(ids.shape)}")
    b, t, h, w = ids.shape
    height, width = frames.shape[2:4]
    if height % h or width % w or height // h != width // w:
        raise ValueError(f"frames {height}x{width} are not square patches of {h}x{w} tokens")
    if t < 2:
        return float("nan")
    step = (frames[:, 1:].int() - frames[:, :-1].int()).abs().amax(-1)  # (B, T-1, H, W)
    moved = F.max_pool2d(step.reshape(-1, 1, height, width).float(), height // h)
    still = moved.reshape(b, t - 1, h, w) <= tolerance
    if not bool(still.any()):
        return float("nan")
    same = ids[:, 1:] == ids[:, :-1]
    return float(same[still].float().mean())


def confusion(latent: Any, truth: Any, n_latent: int | None = None,
              n_true: int | None = None) -> np.ndarray:
    """Counts int64 (n_latent, n_true): entry [i, j] = how often latent action i met true action j."""
    latent, truth = _pair(latent, truth)
    n_latent = int(latent.max()) + 1 if n_latent is None else n_latent
    n_true = int(truth.max()) + 1 if n_true is None else n_true
    if latent.max() >= n_latent or truth.max() >= n_true:
        raise ValueError(f"labels exceed n_latent={n_latent} / n_true={n_true}")
    return np.bincount(latent * n_true + truth, minlength=n_latent * n_true).reshape(n_latent, n_true)


def nmi(latent: Any, truth: Any) -> float:
    """Normalised mutual information I(L; T) / ((H(L) + H(T)) / 2), arithmetic-mean normalisation
    (sklearn's default). 1 when one labelling is a relabelling of the other, ~0 when independent.
    Two constant labellings count as identical (1.0)."""
    latent, truth = _pair(latent, truth)
    _, latent = np.unique(latent, return_inverse=True)  # compact ids: the table has only used labels
    _, truth = np.unique(truth, return_inverse=True)
    joint = confusion(latent, truth).astype(np.float64)
    h_latent, h_truth = _entropy(joint.sum(1)), _entropy(joint.sum(0))
    if h_latent == 0 and h_truth == 0:
        return 1.0
    p = joint / joint.sum()
    outer = p.sum(1, keepdims=True) * p.sum(0, keepdims=True)  # p(l) p(t)
    nz = p > 0
    mutual = float((p[nz] * np.log(p[nz] / outer[nz])).sum())
    return float(np.clip(mutual / ((h_latent + h_truth) / 2), 0.0, 1.0))


def mapping_accuracy(latent: Any, truth: Any) -> tuple[float, dict[int, int]]:
    """Accuracy of the best many-to-one map from latent to true actions: each latent action is
    mapped to the true action it co-occurs with most (ties: the smallest id). Returns
    (accuracy, {latent: true})."""
    latent, truth = _pair(latent, truth)
    table = confusion(latent, truth)
    used = np.flatnonzero(table.sum(1))
    mapping = {int(i): int(table[i].argmax()) for i in used}
    return float(table.max(axis=1).sum() / latent.size), mapping
