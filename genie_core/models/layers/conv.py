"""Convolution primitives for the MagViT-2 tokenizer (Yu et al. 2023, §3.2): causal 3D convolution,
per-frame group norm, anti-aliased (blur) pooling (Zhang 2019, "Making CNNs shift-invariant again").

Causality: time is padded on the past side only, and normalisation statistics never span time
(each frame is normalised on its own), so output frame t depends on input frames <= t.

Time groups are counted from the end of the clip: a time-/s layer maps T frames to ceil(T / s),
output j summarising the s frames that end at input frame T - 1 - (ceil(T / s) - 1 - j) s. The
last output always ends at the last frame, and stacked layers compose (a /2 then a /2 group
exactly as one /4). When s does not divide T the first group is the short one, completed by
repeating the first frame before the clip; with T = 1 + s k the first output is frame 0 alone and
the rest are groups of s (MagViT-2's grouping).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from genie_core.config.tokenizer_blocks import triple

# Binomial [1, 2, 1] filter: the 3-tap low-pass of Zhang (2019), normalised to sum 1.
_BLUR_1D = (1.0, 2.0, 1.0)


def _blur_kernel(channels: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Depthwise 3x3 binomial kernel, shape (C, 1, 3, 3)."""
    k = torch.tensor(_BLUR_1D, dtype=dtype, device=device)
    k2 = k[:, None] * k[None, :]
    k2 = k2 / k2.sum()
    return k2.expand(channels, 1, 3, 3).contiguous()


def blur_pool2d(x: Tensor, stride: int = 2) -> Tensor:
    """Anti-aliased downsample: blur with a 3x3 binomial filter, then subsample by ``stride``.

    x: (N, C, H, W) -> (N, C, ceil(H / stride), ceil(W / stride)). Reflect padding keeps the borders
    unbiased (zero padding darkens them). stride=1 is a pure blur.
    """
    if x.ndim != 4:
        raise ValueError(f"blur_pool2d expects (N, C, H, W), got shape {tuple(x.shape)}")
    channels, dtype = x.shape[1], x.dtype
    mode = "reflect" if min(x.shape[-2:]) > 1 else "replicate"
    # fp32 with autocast off: on CPU the bf16 depthwise conv (backward especially) ran ~10x
    # slower than fp32 (bench: 16 ms vs 1.5 ms for 16x128x16x16); the blur is memory-bound anyway.
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = F.pad(x.float(), (1, 1, 1, 1), mode=mode)
        out = F.conv2d(x, _blur_kernel(channels, x.dtype, x.device), stride=stride, groups=channels)
    return out.to(dtype)


def _layout(x: Tensor) -> torch.memory_format:
    """channels_last_3d when ``x`` is stored that way, else contiguous."""
    cl = x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()
    return torch.channels_last_3d if cl else torch.contiguous_format


class _CausalTimePad(torch.autograd.Function):
    """Forward: copy into a preallocated tensor of the input's layout (torch.cat returned a
    contiguous tensor, costing a second copy in the next channels-last conv). Backward: the
    gradient keeps the incoming layout (autograd's slice-copy backward made it contiguous, which
    sent the SiLU / GroupNorm backward kernels down slow mixed-layout paths)."""

    @staticmethod
    def forward(ctx, x: Tensor, amount: int, replicate: bool) -> Tensor:  # type: ignore[override]
        ctx.amount, ctx.replicate = amount, replicate
        b, c, t, h, w = x.shape
        out = torch.empty((b, c, t + amount, h, w), dtype=x.dtype, device=x.device,
                          memory_format=_layout(x))
        out[:, :, amount:] = x
        if replicate:
            out[:, :, :amount] = x[:, :, :1]
        else:
            out[:, :, :amount] = 0
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        a = ctx.amount
        gx = grad[:, :, a:].contiguous(memory_format=_layout(grad))
        if ctx.replicate:  # the replicated first frame collects the padding's gradient
            gx[:, :, :1] += grad[:, :, :a].sum(dim=2, keepdim=True)
        return gx, None, None


def causal_time_pad(x: Tensor, amount: int, mode: str = "replicate") -> Tensor:
    """Pad ``amount`` frames before the clip (x: (B, C, T, H, W)); never after it.

    ``replicate`` repeats the first frame (the clip is treated as if the scene had been still
    before it started); ``constant`` pads zeros (the network can tell where a clip starts).
    """
    if amount <= 0:
        return x
    if mode not in ("replicate", "constant"):
        raise ValueError(f"unknown time pad mode {mode!r}")
    return _CausalTimePad.apply(x, amount, mode == "replicate")


def causal_time_pool(x: Tensor, factor: int) -> Tensor:
    """Average groups of ``factor`` frames: (B, C, T, H, W) -> (B, C, ceil(T / factor), H, W).

    Group j covers frames [j f, j f + f) counted from the END of the clip (the first group is
    completed by replicating the first frame), so output j depends on no frame after its group.
    """
    if factor == 1:
        return x
    x = causal_time_pad(x, (-x.shape[2]) % factor, "replicate")
    return rearrange(x, "b c (t f) h w -> b c t f h w", f=factor).mean(dim=3)


def frame_group_norm(x: Tensor, num_groups: int, weight: Tensor | None = None,
                     bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Group norm of each frame on its own: statistics over (C / G, H, W), never over time."""
    b = x.shape[0]
    frames = rearrange(x, "b c t h w -> (b t) c h w")
    out = F.group_norm(frames, num_groups, weight, bias, eps)
    return rearrange(out, "(b t) c h w -> b c t h w", b=b)


class FrameGroupNorm(nn.GroupNorm):
    """nn.GroupNorm applied per frame to (B, C, T, H, W) video (see ``frame_group_norm``)."""

    def forward(self, x: Tensor) -> Tensor:
        return frame_group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class PointwiseConv3d(nn.Linear):
    """1x1x1 convolution as a matmul over channels: (B, C, T, H, W) -> (B, C', T, H, W).

    On channels-last video the channel-last view is free; nn.Conv3d with a 1x1x1 kernel fell to
    the slow reference kernel on CPU.
    """

    def forward(self, x: Tensor) -> Tensor:
        return torch.movedim(F.linear(torch.movedim(x, 1, -1), self.weight, self.bias), -1, 1)


class CausalConv3d(nn.Module):
    """3D convolution, causal in time: ``kt - st`` frames (plus what makes T divisible by ``st``)
    are padded before the clip, none after; space is zero-padded symmetrically ("same").

    With time stride s the output has n = ceil(T / s) frames and output j ends exactly at input
    frame T - 1 - (n - 1 - j) s (the last output ends at the last frame; (j + 1) s - 1 when s
    divides T): a latent frame never sees a frame after the ones it summarises.
    ``causal=False`` pads time symmetrically instead (for decoders that may look ahead; never
    used by the encoder).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int] = 3,
                 stride: int | tuple[int, int, int] = 1, pad_mode: str = "replicate",
                 causal: bool = True, bias: bool = True) -> None:
        super().__init__()
        kt, kh, kw = triple(kernel_size)
        st, sh, sw = triple(stride)
        if kt < st:
            raise ValueError(f"time kernel {kt} must be >= time stride {st}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.time_kernel, self.time_stride = kt, st
        self.pad_mode, self.causal = pad_mode, causal
        self.conv = nn.Conv3d(in_channels, out_channels, (kt, kh, kw), stride=(st, sh, sw),
                              padding=(0, kh // 2, kw // 2), bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        pad = self.time_kernel - self.time_stride + (-x.shape[2]) % self.time_stride
        if self.causal:
            x = causal_time_pad(x, pad, self.pad_mode)
        elif pad:  # symmetric: half the context comes from the future
            x = F.pad(x, (0, 0, 0, 0, pad - pad // 2, pad // 2), mode=self.pad_mode)
        return self.conv(x)
