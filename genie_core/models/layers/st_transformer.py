"""Spatiotemporal (ST) transformer, Genie §2.1 (Bruce et al. 2024, Fig. 4): each block is spatial
attention within a frame, causal temporal attention over the same position across frames (rotary
time positions), then ONE feed-forward layer; pre-norm. A KV cache decodes frame after frame.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from genie_core.models.layers.kv_cache import KVCache, LayerCache
from genie_core.models.layers.rotary import (
    _frame_table,
    _grid_table,
    _rotate,
    apply_grid_rotary,
    apply_rotary,
    grid_angles,
    rotary_angles,
)

__all__ = ["STTransformer", "STBlock", "KVCache", "LayerCache", "rotary_angles", "apply_rotary", "grid_angles",
           "apply_grid_rotary", "linear2d"]


# ----------------------------------------------------------------------------- layers


def linear2d(layer: nn.Module, x: Tensor) -> Tensor:
    """``layer(x)`` through a 2-D view (..., D) -> (N, D). A permuted tensor whose size-1 dims
    carry odd strides (``(B, S, 1, D)`` from ``b t s d -> b s t d`` with T = 1) counts as
    contiguous, yet matmul then broadcasts the weight into a batched bmm: measured 30-100x
    slower under bf16 autocast on CPU."""
    return layer(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], -1)


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

    def project(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (..., L, D) -> qk (..., L, 2, H, Dh) (queries then keys, QK-normed) and v
        (..., L, H, Dh): views of one projection, heads beside each other (every later
        elementwise pass then reads memory in order; a head-major view made the QK-norm and
        rotary passes several times slower on CPU). Queries and keys go through the norm and the
        rotation together: half the small kernels of a play frame's attention (each pass over
        them is a handful of kernels), the same bits as one pass each."""
        qkv = linear2d(self.qkv, x).unflatten(-1, (3, self.heads, self.head_dim))
        qk, v = qkv[..., :2, :, :], qkv[..., 2, :, :]
        if self.qk_norm:
            # F.rms_norm(q, q_scale in q's dtype) computes x * rsqrt(mean(x^2) + eps) * scale in
            # fp32 and rounds once; the same products over the stacked pair give each half's
            # bits (tests/test_st_transformer.py) in half the kernels.
            scale = torch.stack((self.q_scale, self.k_scale)).to(qk.dtype).float()[:, None]
            normed = F.rms_norm(qk.float(), (self.head_dim,)) * scale.expand(2, self.heads, self.head_dim)
            qk = normed.to(qk.dtype)
        return qk, v

    def out(self, y: Tensor) -> Tensor:
        """y (..., H, L, Dh) -> (..., L, D); contiguous before the linear (bf16 fast path)."""
        return linear2d(self.proj, rearrange(y, "... h l d -> ... l (h d)").contiguous())


class SpatialAttention(Attention):
    """Full attention among the S tokens of each frame; x (B, T, S, D). A grid ``table`` (h, w,
    prefix: ``_grid_table``) adds 2-D rotary positions to the queries and keys of the h x w tokens
    after the first ``prefix`` (which keep none)."""

    def forward(self, x: Tensor, table: tuple[Tensor, Tensor, int] | None = None) -> Tensor:
        """``table``: the grid's rotation (``_rotation_tables``); None: no positions."""
        B = x.shape[0]
        qk, v = self.project(x)  # (B, T, S, 2, H, Dh), (B, T, S, H, Dh)
        if table is not None:
            qk = _rotate(qk, table)
        # SDPA's fused CPU kernel takes 4-D inputs only (5-D falls back to the math path).
        q, k, v = (t.transpose(2, 3).flatten(0, 1) for t in (*qk.unbind(-3), v))  # (B*T, H, S, Dh)
        y = rearrange(_attend(q, k, v), "(b t) h s d -> b t h s d", b=B)
        return self.out(y)


class TemporalAttention(Attention):
    """Causal attention over frames at each spatial position, rotary time positions; x (B, T, S, D).

    ``cache`` (this layer's) holds earlier frames' rotated keys/values ending right before frame
    ``start``; with ``update`` the new frames join it. ``window`` limits how far back a frame
    looks (itself included). ``output=False`` (with a cache to update) only stores the new
    frames' keys/values and returns None: a last block whose output nothing reads.
    """

    def forward(self, x: Tensor, start: int = 0, cache: LayerCache | None = None,
                window: int | None = None, update: bool = True, output: bool = True, *,
                table: tuple[Tensor, Tensor, int]) -> Tensor | None:
        """``table``: the rotation of frames start..start+T-1 (``_rotation_tables``)."""
        B, T, S, _ = x.shape
        qk, v = self.project(rearrange(x, "b t s d -> b s t d").contiguous())  # (B, S, T, 2, H, Dh)
        qk = _rotate(qk, table)
        q, k, v = (t.transpose(2, 3).flatten(0, 1) for t in (*qk.unbind(-3), v))  # (B*S, H, T, Dh)
        if not output and (cache is None or not update):
            raise ValueError("output=False only makes sense when updating a cache")
        if cache is not None and cache.fast_path(start, T):
            if not output:
                cache.append_one(k, v)
                return None
            y = cache.attend_one(q, k, v, update)
        else:
            past = cache.ordered() if cache is not None else None
            past_len = 0
            if past is not None:
                past_len = past[0].shape[2]
                k = torch.cat((past[0].to(k.dtype), k), dim=2)
                v = torch.cat((past[1].to(v.dtype), v), dim=2)
            if not output:
                cache.store(k, v, start + T)
                return None
            L = k.shape[2]
            if _written_out(L):
                y = _explicit_attention(q, k, v, _band_mask(T, L, window, x.device))
            elif (window is None or window >= L) and past_len == 0:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
            elif (window is None or window >= L) and T == 1:  # sees every cached frame
                y = F.scaled_dot_product_attention(q, k, v)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=_band_mask(T, L, window, x.device))
            if cache is not None and update:
                cache.store(k, v, start + T)
        y = rearrange(y, "(b s) h t d -> b t s (h d)", b=B).contiguous()
        return linear2d(self.proj, y)


# In training, attention over short sequences (a few frames at each position, or the tokens of a
# small frame) runs faster written out: the fused CPU kernel's backward took 6-10x as long over
# 16 frames and 4.6x over 64 tokens, but won over 256 tokens of 64-wide heads (bench/bench_attention.py).
_EXPLICIT_MAX_LEN = 160


def _explicit_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None = None) -> Tensor:
    """softmax(q k^T / sqrt(Dh), masked to ``allowed`` (T, L) when given) v, through plain matmuls
    (autograd differentiates them with matmuls too). Every query must see at least one key."""
    # In fp32, as the fused kernel accumulates: bf16 scores (an ulp of 0.03 at 5) and bf16
    # probabilities trained a measurably worse quickstart world. Over so few keys it costs little.
    wide = torch.promote_types(q.dtype, torch.float32)
    with torch.autocast(q.device.type, enabled=False):
        scores = torch.matmul(q.to(wide), k.to(wide).transpose(-1, -2)) * (q.shape[-1] ** -0.5)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        return torch.matmul(scores.softmax(dim=-1), v.to(wide)).to(q.dtype)


def _written_out(keys: int) -> bool:
    """Whether attention over ``keys`` keys takes ``_explicit_attention``: in training, when short."""
    return torch.is_grad_enabled() and keys <= _EXPLICIT_MAX_LEN


def _attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Unmasked attention: written out in training over short sequences, else the fused kernel."""
    if _written_out(k.shape[-2]):
        return _explicit_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)


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
        # exact GELU: the tanh approximation ran ~9x slower on CPU (bf16 and fp32)
        return linear2d(self.proj, F.gelu(linear2d(self.fc, x)))


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

    def forward(self, x: Tensor, start: int = 0, cache: LayerCache | None = None,
                window: int | None = None, update: bool = True, output: bool = True, *,
                tables: tuple[Any, Any]) -> Tensor | None:
        """``output=False`` (a last block whose output nothing reads, updating a cache) stops
        once the temporal keys/values are in the cache: no temporal attention, no feed-forward;
        returns None. ``tables``: the (grid or None, time) rotations (``_rotation_tables``)."""
        x = x + self.spatial(self.norm_spatial(x), tables[0])
        if not output:
            self.temporal(self.norm_temporal(x), start, cache, window, update, output=False, table=tables[1])
            return None
        x = x + self.temporal(self.norm_temporal(x), start, cache, window, update, table=tables[1])
        return x + self.ffw(self.norm_ffw(x))


def _traced_rotation_tables(grid: tuple[int, int, int] | None, start: int, frames: int, head_dim: int,
                            heads: int, device: torch.device) -> tuple[Any, Any]:
    """The (grid, time) rotations every block of one forward uses (memoised tables)."""
    frame = _frame_table(start, frames, head_dim, heads, torch.float32, device, pairs=2)
    if grid is None:
        return None, frame
    h, w, prefix = grid
    return _grid_table(h, w, head_dim, heads, torch.float32, device, prefix, pairs=2), frame


# Looked up outside torch.compile, so compiled graphs take the tables as inputs: traced, their cos
# and sin were recomputed in every compiled forward and backward (the compiled CoinRun dynamics
# loss pass took 1.03-1.04x as long that way in fp32 on CPU: bench/bench_dynamics_loss.py).
_rotation_tables = torch.compiler.disable(_traced_rotation_tables)


class STTransformer(nn.Module):
    """A stack of ST blocks over (B, T, S, D) with a final LayerNorm.

    Spatial attention is permutation-invariant over S: callers add their own spatial position
    embeddings. Time positions are rotary, taken from the cache (``cache.position``) or 0.

    ``forward(x)``: all frames at once, causal in time (``window`` optionally bands the mask so
    a frame sees only the last ``window`` frames, itself included); ``start`` is the first
    frame's time position (a slice of a longer sequence keeps that sequence's rotations).
    ``forward(x, cache)``: x holds the frames right after those in the cache; with
    ``update_cache`` the cache then also holds them (sliding to its window), else it is left
    untouched (MaskGIT refines one frame several times before committing it). With
    ``output=False`` only the cache is wanted (committing a sampled frame): the last block's
    temporal attention and feed-forward and the final norm, which no key or value depends on,
    are skipped and the result is None.
    """

    def __init__(self, dim: int, depth: int, heads: int, qk_norm: bool = False, ffw_mult: float = 4.0,
                 grid: tuple[int, int] | None = None, rotary_grid: bool | None = None,
                 grid_prefix: int = 0) -> None:
        super().__init__()
        self.dim, self.depth, self.heads = dim, depth, heads
        # (h, w): 2-D rotary positions in spatial attention over an h x w grid of S = h * w tokens
        # (forward's ``grid`` names it per call instead, for models built before the frame size
        # is known); ``grid_prefix`` tokens before the grid (a pooling token) keep no position.
        self.grid = tuple(grid) if grid is not None else None
        self.rotary_grid = self.grid is not None if rotary_grid is None else rotary_grid
        self.grid_prefix = grid_prefix
        if self.rotary_grid and (dim // heads) % 4:
            raise ValueError(f"2-D rotary positions need a head size divisible by 4, got {dim // heads}")
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

    def _grid_angles(self, x: Tensor, grid: tuple[int, int] | None) -> tuple[int, int, int] | None:
        """The (h, w, prefix) of 2-D rotary positions, checked against x's tokens per frame."""
        if not self.rotary_grid:
            if grid is not None:
                raise ValueError("this transformer was built without 2-D rotary positions")
            return None
        grid = grid if grid is not None else self.grid
        if grid is None:
            raise ValueError("2-D rotary positions need the token grid (h, w)")
        h, w = grid
        if x.shape[2] != self.grid_prefix + h * w:
            extra = f" + {self.grid_prefix}" if self.grid_prefix else ""
            raise ValueError(f"expected {h} x {w}{extra} tokens per frame, got {x.shape[2]}")
        return h, w, self.grid_prefix

    def new_cache(self, window: int | None = None) -> KVCache:
        """An empty cache keeping at most ``window`` past frames (None: unbounded)."""
        if window is not None and window < 1:
            raise ValueError(f"cache window must be >= 1, got {window}")
        return KVCache(window=window)

    def forward(self, x: Tensor, cache: KVCache | None = None, update_cache: bool = True,
                window: int | None = None, start: int = 0, grid: tuple[int, int] | None = None,
                output: bool = True) -> Tensor | None:
        if x.ndim != 4:
            raise ValueError(f"STTransformer expects (B, T, S, D), got shape {tuple(x.shape)}")
        if not output and (cache is None or not update_cache):
            raise ValueError("output=False only makes sense when updating a cache")
        x = x.contiguous()
        grid = self._grid_angles(x, grid)
        position = start if cache is None else cache.position
        tables = _rotation_tables(grid, position, x.shape[1], self.dim // self.heads, self.heads, x.device)
        if cache is None:
            for block in self.blocks:
                x = block(x, start, None, window, tables=tables)
            return self.norm_out(x)
        if cache.spatial and cache.spatial != x.shape[2]:
            raise ValueError(f"cache holds {cache.spatial} tokens per frame, input has {x.shape[2]}")
        win = cache.window if window is None else window
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            y = block(x, cache.position, cache.layer(i), win, update_cache, output=output or i < last,
                      tables=tables)
            x = x if y is None else y
        if update_cache:
            cache.position += x.shape[1]
            cache.spatial = x.shape[2]
        return self.norm_out(x) if output else None
