"""The tokenizer's GAN discriminator (MagViT-2 §3.2, after the seed's ``disc_kwargs``): residual
blocks with spatial self-attention, over single frames or whole clips."""

from __future__ import annotations

import math
from typing import Sequence

import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from genie_core.models.layers.blocks import ACTIVATIONS as BLOCK_ACTIVATIONS
from genie_core.models.layers.conv import blur_pool2d

# The discriminator's activations: the blocks' table (one set of constructors), these four names.
ACTIVATIONS = {name: BLOCK_ACTIVATIONS[name] for name in ("leaky", "relu", "silu", "gelu")}


# ---------------------------------------------------------------------------------------------
# Discriminator
# ---------------------------------------------------------------------------------------------

def _fold_time(fn, x: Tensor) -> Tensor:
    """Apply a per-frame op to (B, C, T, H, W) by folding time into the batch; 4D passes through."""
    if x.ndim == 4:
        return fn(x)
    b = x.shape[0]
    y = fn(rearrange(x, "b c t h w -> (b t) c h w"))
    return rearrange(y, "(b t) c h w -> b c t h w", b=b)


class Downsample(nn.Module):
    """Spatial /stride: blur pooling (anti-aliased, Zhang 2019) or average pooling; time is kept."""

    def __init__(self, stride: int, use_blur: bool) -> None:
        super().__init__()
        self.stride, self.use_blur = stride, use_blur

    def _down2d(self, x: Tensor) -> Tensor:
        if self.use_blur:
            return blur_pool2d(x, stride=self.stride)
        # ceil_mode matches blur_pool2d's ceil(H / stride) output size
        return F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)

    def forward(self, x: Tensor) -> Tensor:
        return _fold_time(self._down2d, x)


class DiscResBlock(nn.Module):
    """Pre-activation residual block (GroupNorm, act, conv) x2, then optional down-sampling of both
    branches; the sum is scaled by 1/sqrt(2) to keep the activation variance (StyleGAN2 discriminator)."""

    def __init__(self, in_dim: int, out_dim: int, down: int | None, kernel_size: int, num_groups: int,
                 act_fn: str, use_blur: bool, video: bool) -> None:
        super().__init__()
        conv = nn.Conv3d if video else nn.Conv2d
        pad = kernel_size // 2
        self.body = nn.Sequential(
            nn.GroupNorm(num_groups, in_dim), ACTIVATIONS[act_fn](),
            conv(in_dim, out_dim, kernel_size, padding=pad),
            nn.GroupNorm(num_groups, out_dim), ACTIVATIONS[act_fn](),
            conv(out_dim, out_dim, kernel_size, padding=pad),
        )
        self.skip = conv(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()
        self.down = Downsample(down, use_blur) if down and down > 1 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return (self.down(self.body(x)) + self.down(self.skip(x))) * 2 ** -0.5


# Not layers.st_transformer's: this one takes conv feature maps (N, C, H, W), owns its GroupNorm and
# residual and has 1x1-conv weights (keys norm/to_qkv/to_out); sharing would rename saved tensors.
class SpatialAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of each frame, pre-norm and residual."""

    def __init__(self, dim: int, num_heads: int, dim_head: int, num_groups: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(num_groups, dim)
        self.to_qkv = nn.Conv2d(dim, 3 * num_heads * dim_head, 1)
        self.to_out = nn.Conv2d(num_heads * dim_head, dim, 1)

    def _attend(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        qkv = self.to_qkv(self.norm(x))
        # (N, 3*heads*d, H, W) -> 3 x (N, heads, H*W, d)
        q, k, v = rearrange(qkv, "n (three g d) h w -> three n g (h w) d", three=3, g=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(out, "n g (h w) d -> n (g d) h w", h=h, w=w)
        return x + self.to_out(out)

    def forward(self, x: Tensor) -> Tensor:
        return _fold_time(self._attend, x)


# Not layers.st_transformer's (Linear fc/proj on tokens, no norm): 1x1 convs in one ``net`` with its
# GroupNorm and residual, 2-D or 3-D; the saved keys (net.0..net.3) and forward differ.
class FeedForward(nn.Module):
    """Pointwise MLP (1x1 convolutions, 4x hidden), pre-norm and residual."""

    def __init__(self, dim: int, num_groups: int, act_fn: str, video: bool) -> None:
        super().__init__()
        conv = nn.Conv3d if video else nn.Conv2d
        self.net = nn.Sequential(nn.GroupNorm(num_groups, dim), conv(dim, 4 * dim, 1),
                                 ACTIVATIONS[act_fn](), conv(4 * dim, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class Discriminator(nn.Module):
    """GAN discriminator with the seed's ``disc_kwargs``.

    Stage i is a residual block ``model_dim * dim_mults[i-1] -> model_dim * dim_mults[i]`` that
    down-samples space by ``down_step[i]`` (None = keep), followed, when ``use_attn``, by spatial
    self-attention and a feed-forward block. Attention runs at stages with at most
    ``attn_max_tokens`` positions per frame (default 16x16) and always at the last stage: attention
    cost grows with the square of the positions, and at 32x32 on CPU it already outweighs all the
    convolutions of the seed config. A conv + linear head gives one logit.

    ``discriminate='frames'``: 2D convs; (N, 3, H, W) -> (N,) and (B, 3, T, H, W) -> (B, T).
    ``discriminate='video'``: 3D convs (time kernel = ``kernel_size``, no time down-sampling) over
    the whole clip, (B, 3, T, H, W) -> (B,); the head averages its per-frame logits over time, so
    any clip length works. Frames must be ``inp_size``.
    """

    def __init__(self, inp_size: int | Sequence[int] = (64, 64), model_dim: int = 64,
                 dim_mults: Sequence[int] = (1, 2, 4), down_step: Sequence[int | None] = (None, 2, 2),
                 inp_channels: int = 3, kernel_size: int = 3, num_groups: int = 8, act_fn: str = "leaky",
                 use_blur: bool = True, use_attn: bool = True, num_heads: int = 4, dim_head: int = 32,
                 discriminate: str = "frames", attn_max_tokens: int = 256) -> None:
        super().__init__()
        inp_size = (inp_size, inp_size) if isinstance(inp_size, int) else tuple(inp_size)
        dim_mults, down_step = tuple(dim_mults), tuple(down_step)
        dims = [model_dim * m for m in dim_mults]
        self._validate(inp_size, dims, down_step, kernel_size, num_groups, act_fn, discriminate,
                       num_heads, dim_head, model_dim)
        self.inp_size, self.inp_channels = inp_size, inp_channels
        self.video = discriminate == "video"
        conv = nn.Conv3d if self.video else nn.Conv2d

        self.proj_in = conv(inp_channels, model_dim, kernel_size, padding=kernel_size // 2)
        self.stages = nn.Sequential()
        size, in_dim = inp_size, model_dim
        for i, (out_dim, down) in enumerate(zip(dims, down_step)):
            size = tuple(math.ceil(s / (down or 1)) for s in size)
            blocks = [DiscResBlock(in_dim, out_dim, down, kernel_size, num_groups, act_fn, use_blur, self.video)]
            if use_attn and (size[0] * size[1] <= attn_max_tokens or i == len(dims) - 1):
                blocks += [SpatialAttention(out_dim, num_heads, dim_head, num_groups),
                           FeedForward(out_dim, num_groups, act_fn, self.video)]
            self.stages.append(nn.Sequential(*blocks))
            in_dim = out_dim

        self.head = nn.Sequential(conv(in_dim, in_dim, kernel_size, padding=kernel_size // 2),
                                  ACTIVATIONS[act_fn]())
        self.to_logit = nn.Linear(in_dim * size[0] * size[1], 1)

    @staticmethod
    def _validate(inp_size, dims, down_step, kernel_size, num_groups, act_fn, discriminate,
                  num_heads, dim_head, model_dim) -> None:
        if len(inp_size) != 2 or min(inp_size) < 1:
            raise ValueError(f"inp_size must be (H, W) of positive ints, got {inp_size}")
        if not dims or len(dims) != len(down_step):
            raise ValueError(f"dim_mults ({len(dims)} entries) and down_step ({len(down_step)} entries) "
                             "must have the same, non-zero length")
        for d in down_step:
            if d is not None and (not isinstance(d, int) or d < 1):
                raise ValueError(f"down_step entries must be None or a positive int (space stride), got {d!r}")
        if act_fn not in ACTIVATIONS:
            raise ValueError(f"unknown act_fn {act_fn!r} (use one of {', '.join(ACTIVATIONS)})")
        if discriminate not in ("frames", "video"):
            raise ValueError(f"discriminate must be 'frames' or 'video', got {discriminate!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}")
        bad = [d for d in (model_dim, *dims) if d % num_groups]
        if bad:
            raise ValueError(f"channel widths {bad} are not divisible by num_groups={num_groups}")
        if num_heads < 1 or dim_head < 1:
            raise ValueError(f"num_heads and dim_head must be positive, got {num_heads}, {dim_head}")

    def forward(self, x: Tensor) -> Tensor:
        ranks = (5,) if self.video else (4, 5)
        if x.ndim not in ranks or x.shape[1] != self.inp_channels or tuple(x.shape[-2:]) != self.inp_size:
            layout = "(B, C, T, H, W)" if self.video else "(N, C, H, W) or (B, C, T, H, W)"
            raise ValueError(f"discriminator expects {layout} with C={self.inp_channels} and "
                             f"(H, W)={self.inp_size}, got shape {tuple(x.shape)}")
        clip = None
        if x.ndim == 5 and not self.video:
            clip = x.shape[0]
            x = rearrange(x, "b c t h w -> (b t) c h w")  # frames mode: every frame on its own
        h = self.head(self.stages(self.proj_in(x)))
        if self.video:
            # per-frame logits from the spatial map, averaged over time: (B,)
            return self.to_logit(rearrange(h, "b c t h w -> b t (c h w)")).squeeze(-1).mean(dim=1)
        logits = self.to_logit(rearrange(h, "n c h w -> n (c h w)")).squeeze(-1)  # (N,)
        return logits if clip is None else rearrange(logits, "(b t) -> b t", b=clip)
