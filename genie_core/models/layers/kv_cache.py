"""The KV cache of frame-by-frame decoding: each temporal attention layer's rotated keys and
values of past frames (``LayerCache``, a ring buffer), for every layer (``KVCache``), and the
attention of one new frame over them (``_attend_cached``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import Tensor

__all__ = ["KVCache", "LayerCache"]


# Over at most this many frames the products and sums written out beat the batched matmuls,
# whose (1 x L) @ (L x Dh) took 2-3x as long for L <= 6 on CPU (one thread, 256 x 4 rows).
_ELEMENTWISE_MAX_FRAMES = 6


def _wide(dtype: torch.dtype) -> torch.dtype:
    """The cache's dtype for keys/values of ``dtype``: fp32, or wider when they are."""
    return torch.promote_types(dtype, torch.float32)


def _attend_cached(q: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """Attention of one query frame q (N, H, 1, Dh) over the cache's keys/values (N, H, L, Dh), no
    mask, in their (fp32 or wider) dtype; q's dtype out. From bf16 inputs this is the exact
    attention rounded once to bf16."""
    with torch.autocast(q.device.type, enabled=False):  # autocast would round them to bf16
        qf = q.to(keys.dtype)
        if keys.shape[-2] <= _ELEMENTWISE_MAX_FRAMES:
            p = ((qf * keys).sum(-1) * (q.shape[-1] ** -0.5)).softmax(dim=-1)  # (N, H, L)
            return (p[..., None] * values).sum(-2, keepdim=True).to(q.dtype)
        scores = torch.matmul(qf, keys.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
        return torch.matmul(scores.softmax(dim=-1), values).to(q.dtype)


class LayerCache:
    """One layer's rotated temporal keys/values in a ring buffer (B*S, H, C, Dh): the frame at
    absolute position p lives in slot p % C. With a window W, C = W: W - 1 past frames plus one
    free slot into which the frame being decoded is written, so decoding a frame copies nothing
    but that frame's own keys (concatenating the cache at every MaskGIT step cost ~20% of a step).

    The buffers are fp32 (fp64 for an fp64 model) whatever the model's precision: they hold the
    keys and values exactly as computed (bf16 values are exact in fp32), and one new frame attends
    over them with plain fp32 matmuls (``_attend_cached``), 2.5-3.6x faster on CPU than the fused kernel on bf16 inputs over
    2-8 frames (``bench/bench_attention.py``), which spent its time on per-(position, head) overhead.
    """

    def __init__(self, window: int | None) -> None:
        self.window = window
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.length = 0  # valid past frames
        self.end = 0  # absolute position right after the last cached frame

    @property
    def keep(self) -> int | None:
        return None if self.window is None else self.window - 1

    def ordered(self) -> tuple[Tensor, Tensor] | None:
        """The cached frames' k, v in time order, (B*S, H, length, Dh); None when empty."""
        if self.k is None or self.length == 0:
            return None
        C = self.k.shape[2]
        slots = torch.arange(self.end - self.length, self.end, device=self.k.device) % C
        return self.k.index_select(2, slots), self.v.index_select(2, slots)

    def store(self, k: Tensor, v: Tensor, end: int) -> None:
        """Replace the contents with the last ``keep`` of frames k, v (B*S, H, T, Dh) in time
        order, the last one at position ``end - 1``."""
        T = k.shape[2]
        n = T if self.keep is None else min(T, self.keep)
        C = self.window if self.window is not None else max(16, 2 * end)
        shape = (k.shape[0], k.shape[1], C, k.shape[3])
        wide = _wide(k.dtype)
        self.k, self.v = k.new_zeros(shape, dtype=wide), v.new_zeros(shape, dtype=wide)
        slots = torch.arange(end - n, end, device=k.device) % C
        self.k.index_copy_(2, slots, k[:, :, T - n:].to(wide))
        self.v.index_copy_(2, slots, v[:, :, T - n:].to(wide))
        self.length, self.end = n, end

    def fast_path(self, start: int, T: int) -> bool:
        """One new frame right after the cache, whose visible past is exactly the cache."""
        if self.k is None or T != 1 or start != self.end:
            return False
        full = self.keep is not None and self.length == self.keep
        return full or self.end == self.length  # not full: slots 0..length-1, never wrapped

    def attend_one(self, q: Tensor, k: Tensor, v: Tensor, update: bool) -> Tensor:
        """Attention of one new frame (q, k, v: (B*S, H, 1, Dh)) over the cache and itself."""
        full = self.keep is not None and self.length == self.keep
        self._write(k, v)
        # Order does not matter to one query with no mask: attend to the filled slots as they lie.
        keys, values = (self.k, self.v) if full else (self.k[:, :, : self.length + 1], self.v[:, :, : self.length + 1])
        y = _attend_cached(q, keys, values)
        if update:
            self._advance()
        return y

    def append_one(self, k: Tensor, v: Tensor) -> None:
        """``attend_one(..., update=True)`` for the cache alone: the frame joins, nothing attends."""
        self._write(k, v)
        self._advance()

    def _write(self, k: Tensor, v: Tensor) -> None:
        """Put one new frame's k, v (B*S, H, 1, Dh) into the slot after the cached frames."""
        C = self.k.shape[2]
        if self.window is None and self.end >= C:  # unbounded cache: grow
            grow = lambda t: torch.cat((t, torch.zeros_like(t)), dim=2)  # noqa: E731
            self.k, self.v = grow(self.k), grow(self.v)
            C *= 2
        if self.k.dtype != _wide(k.dtype):  # precision changed between calls (fp32 <-> fp64)
            self.k, self.v = self.k.to(_wide(k.dtype)), self.v.to(_wide(v.dtype))
        slot = self.end % C
        self.k[:, :, slot] = k[:, :, 0]
        self.v[:, :, slot] = v[:, :, 0]

    def _advance(self) -> None:
        self.end += 1
        self.length = self.length + 1 if self.keep is None else min(self.length + 1, self.keep)

    def clone(self) -> "LayerCache":
        out = LayerCache(self.window)
        out.k = None if self.k is None else self.k.clone()
        out.v = None if self.v is None else self.v.clone()
        out.length, out.end = self.length, self.end
        return out


@dataclass
class KVCache:
    """Temporal keys/values of past frames for every layer, for decoding frame after frame.

    ``position`` is the absolute index of the next frame; the cache holds the frames
    ``[position - length, position)``. A frame sees at most ``window`` frames, itself included,
    so ``window - 1`` past frames are kept (oldest dropped) and a new frame costs the same
    however long the session. Keys are stored already rotated (positions never shift).
    """

    window: int | None = None
    position: int = 0
    layers: list[LayerCache] = field(default_factory=list)
    spatial: int = 0  # tokens per frame (S); set on the first update

    @property
    def length(self) -> int:
        """Number of cached frames."""
        return self.layers[0].length if self.layers else 0

    def layer(self, i: int) -> LayerCache:
        while len(self.layers) <= i:
            self.layers.append(LayerCache(self.window))
        return self.layers[i]

    def reset(self) -> None:
        self.position, self.layers, self.spatial = 0, [], 0

    def copy(self) -> "KVCache":
        """An independent copy (decoding writes into the buffers in place)."""
        return KVCache(self.window, self.position, [c.clone() for c in self.layers], self.spatial)

    def repeat(self, n: int) -> "KVCache":
        """Repeat the batch n times (B -> B*n, sample-major), e.g. to branch one prompt into n rollouts."""
        def rep(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            t = rearrange(t, "(b s) h c d -> b s h c d", s=self.spatial)
            return rearrange(t.repeat_interleave(n, dim=0), "b s h c d -> (b s) h c d")
        out = self.copy()
        for c in out.layers:
            c.k, c.v = rep(c.k), rep(c.v)
        return out
