"""Spatiotemporal (ST) transformer, Genie §2.1 (Bruce et al. 2024, Fig. 4): each block is spatial
attention within a frame, causal temporal attention over the same position across frames (rotary
time positions), then ONE feed-forward layer; pre-norm. A KV cache decodes frame after frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = ["STTransformer", "STBlock", "KVCache", "rotary_angles", "apply_rotary"]


# ----------------------------------------------------------------------------- rotary positions


def rotary_angles(positions: Tensor, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos, sin of shape (T, head_dim // 2) for integer ``positions`` (T,), in fp32.

    Positions are absolute frame indices: a cached key keeps the rotation of the frame it came
    from, and q.k then depends only on the distance between frames (RoFormer, Su et al. 2021),
    so nothing shifts when the window slides.
    """
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # (T, Dh/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (..., T, Dh) pairwise (half-split layout) by angles cos/sin (T, Dh/2)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.to(x.dtype)


# ----------------------------------------------------------------------------- KV cache


@dataclass
class KVCache:
    """Temporal keys/values of past frames for every layer, for decoding frame after frame.

    ``position`` is the absolute index of the next frame; the cache holds the frames
    ``[position - length, position)``. A frame sees at most ``window`` frames, itself included,
    so ``window - 1`` past frames are kept (oldest dropped) and a new frame costs the same
    however long the session. Keys are stored already rotated.
    """

    window: int | None = None
    position: int = 0
    keys: list[Tensor | None] = field(default_factory=list)  # per layer (B*S, H, Tc, Dh)
    values: list[Tensor | None] = field(default_factory=list)
    spatial: int = 0  # tokens per frame (S); set on the first update

    @property
    def length(self) -> int:
        """Number of cached frames."""
        return 0 if not self.keys or self.keys[0] is None else self.keys[0].shape[2]

    def layer(self, i: int) -> tuple[Tensor | None, Tensor | None]:
        if i >= len(self.keys):
            return None, None
        return self.keys[i], self.values[i]

    def store(self, i: int, k: Tensor, v: Tensor) -> None:
        """Keep the last ``window - 1`` frames of k/v (B*S, H, T, Dh) for layer i."""
        if self.window is not None and k.shape[2] > self.window - 1:
            first = k.shape[2] - (self.window - 1)
            k, v = k[:, :, first:], v[:, :, first:]
        while len(self.keys) <= i:
            self.keys.append(None)
            self.values.append(None)
        self.keys[i], self.values[i] = k.contiguous(), v.contiguous()

    def reset(self) -> None:
        self.position, self.keys, self.values = 0, [], []

    def copy(self) -> "KVCache":
        """A cache sharing no state with this one (tensors are never modified in place)."""
        return KVCache(self.window, self.position, list(self.keys), list(self.values), self.spatial)

    def repeat(self, n: int) -> "KVCache":
        """Repeat the batch n times (B -> B*n, sample-major), e.g. to branch one prompt into n rollouts."""
        def rep(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            t = rearrange(t, "(b s) h t d -> b s h t d", s=self.spatial)
            return rearrange(t.repeat_interleave(n, dim=0), "b s h t d -> (b s) h t d")
        return KVCache(self.window, self.position, [rep(k) for k in self.keys],
                       [rep(v) for v in self.values], self.spatial)


# ----------------------------------------------------------------------------- layers


class Attention(nn.Module):
    """Multi-head self-attention on a contiguous (N, L, D) input via scaled_dot_product_attention,
    with optional QK-norm (RMS norm on each head's queries and keys; Dehghani et al. 2023)."""

    def __init__(self, dim: int, heads: int, qk_norm: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.qk_norm = qk_norm
        if qk_norm:
            self.q_scale = nn.Parameter(torch.ones(self.head_dim))
            self.k_scale = nn.Parameter(torch.ones(self.head_dim))

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (..., L, D) -> q, k, v each (..., H, L, Dh)."""
        q, k, v = rearrange(self.qkv(x), "... l (three h d) -> three ... h l d", three=3, h=self.heads)
        if self.qk_norm:
            # weights in the activations' dtype: a bf16/fp32 mix misses the fused kernel
            q = F.rms_norm(q, (self.head_dim,), self.q_scale.to(q.dtype))
            k = F.rms_norm(k, (self.head_dim,), self.k_scale.to(k.dtype))
        return q, k, v

    def out(self, y: Tensor) -> Tensor:
        """y (..., H, L, Dh) -> (..., L, D); contiguous before the linear (bf16 fast path)."""
        return self.proj(rearrange(y, "... h l d -> ... l (h d)").contiguous())


class SpatialAttention(Attention):
    """Full attention among the S tokens of each frame; x (B, T, S, D)."""

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.project(x)  # (B, T, H, S, Dh)
        return self.out(F.scaled_dot_product_attention(q, k, v))


class TemporalAttention(Attention):
    """Causal attention over frames at each spatial position, rotary time positions; x (B, T, S, D).

    ``past`` holds earlier frames' rotated keys/values (B*S, H, Tc, Dh) ending right before
    frame ``start``; ``window`` limits how far back a frame looks (itself included).
    Returns the output and the keys/values of past + new frames (for the cache).
    """

    def forward(self, x: Tensor, start: int = 0, past: tuple[Tensor, Tensor] | None = None,
                window: int | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        B, T, S, _ = x.shape
        q, k, v = self.project(rearrange(x, "b t s d -> b s t d").contiguous())  # (B, S, H, T, Dh)
        q, k, v = (rearrange(t, "b s h t d -> (b s) h t d") for t in (q, k, v))
        cos, sin = rotary_angles(torch.arange(start, start + T, device=x.device), self.head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        past_len = 0
        if past is not None and past[0] is not None:
            past_len = past[0].shape[2]
            k = torch.cat((past[0].to(k.dtype), k), dim=2)
            v = torch.cat((past[1].to(v.dtype), v), dim=2)
        L = k.shape[2]
        if window is None or window >= L:
            if past_len == 0:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
            elif T == 1:  # one new frame sees every cached frame: no mask at all
                y = F.scaled_dot_product_attention(q, k, v)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=_band_mask(T, L, None, x.device))
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=_band_mask(T, L, window, x.device))
        y = rearrange(y, "(b s) h t d -> b t s (h d)", b=B).contiguous()
        return self.proj(y), (k, v)


def _band_mask(T: int, L: int, window: int | None, device: torch.device) -> Tensor:
    """(T, L) bool: query i (the last T of L frames) sees key j iff j <= i and i - j < window."""
    qpos = torch.arange(L - T, L, device=device)[:, None]
    kpos = torch.arange(L, device=device)[None, :]
    allowed = kpos <= qpos
    if window is not None:
        allowed &= (qpos - kpos) < window
    return allowed


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mult)
        self.fc = nn.Linear(dim, hidden)
        self.proj = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class STBlock(nn.Module):
    """Pre-norm: x += spatial(norm x); x += temporal(norm x); x += ffw(norm x) (one FFW, Genie §2.1)."""

    def __init__(self, dim: int, heads: int, qk_norm: bool = False, ffw_mult: float = 4.0) -> None:
        super().__init__()
        self.norm_spatial = nn.LayerNorm(dim)
        self.spatial = SpatialAttention(dim, heads, qk_norm)
        self.norm_temporal = nn.LayerNorm(dim)
        self.temporal = TemporalAttention(dim, heads, qk_norm)
        self.norm_ffw = nn.LayerNorm(dim)
        self.ffw = FeedForward(dim, ffw_mult)

    def forward(self, x: Tensor, start: int = 0, past: tuple[Tensor, Tensor] | None = None,
                window: int | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        x = x + self.spatial(self.norm_spatial(x))
        y, kv = self.temporal(self.norm_temporal(x), start, past, window)
        x = x + y
        x = x + self.ffw(self.norm_ffw(x))
        return x, kv


class STTransformer(nn.Module):
    """A stack of ST blocks over (B, T, S, D) with a final LayerNorm.

    Spatial attention is permutation-invariant over S: callers add their own spatial position
    embeddings. Time positions are rotary, taken from the cache (``cache.position``) or 0.

    ``forward(x)``: all frames at once, causal in time (``window`` optionally bands the mask so
    a frame sees only the last ``window`` frames, itself included).
    ``forward(x, cache)``: x holds the frames right after those in the cache; with
    ``update_cache`` the cache then also holds them (sliding to its window), else it is left
    untouched (MaskGIT refines one frame several times before committing it).
    """

    def __init__(self, dim: int, depth: int, heads: int, qk_norm: bool = False, ffw_mult: float = 4.0) -> None:
        super().__init__()
        self.dim, self.depth, self.heads = dim, depth, heads
        self.blocks = nn.ModuleList(STBlock(dim, heads, qk_norm, ffw_mult) for _ in range(depth))
        self.norm_out = nn.LayerNorm(dim)
        self.apply(self._init_weights)
        # GPT-2 style: scale the residual projections so the stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(3 * depth))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def new_cache(self, window: int | None = None) -> KVCache:
        """An empty cache keeping at most ``window`` past frames (None: unbounded)."""
        if window is not None and window < 1:
            raise ValueError(f"cache window must be >= 1, got {window}")
        return KVCache(window=window)

    def forward(self, x: Tensor, cache: KVCache | None = None, update_cache: bool = True,
                window: int | None = None) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"STTransformer expects (B, T, S, D), got shape {tuple(x.shape)}")
        x = x.contiguous()
        if cache is None:
            for block in self.blocks:
                x, _ = block(x, 0, None, window)
            return self.norm_out(x)
        if cache.spatial and cache.spatial != x.shape[2]:
            raise ValueError(f"cache holds {cache.spatial} tokens per frame, input has {x.shape[2]}")
        win = cache.window if window is None else window
        for i, block in enumerate(self.blocks):
            x, (k, v) = block(x, cache.position, cache.layer(i), win)
            if update_cache:
                cache.store(i, k, v)
        if update_cache:
            cache.position += x.shape[1]
            cache.spatial = x.shape[2]
        return self.norm_out(x)
