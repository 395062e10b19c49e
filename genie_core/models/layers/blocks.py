"""Tokenizer blocks (MagViT-2, Yu et al. 2023 §3.2): residual blocks with space/time downsampling,
depth-to-space-time upsampling, adaptive group norm, the projection to/from the quantiser.

Every block maps (B, C, T, H, W) -> (B, C', T', H', W') and is causal in time. ``build_block``
turns a resolved ``BlockSpec`` (genie_core.config.tokenizer) into a module.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from genie_core.config.tokenizer import (
    AdaptiveGroupNormSpec,
    BlockSpec,
    CausalConvSpec,
    DownsampleSpec,
    ProjOutSpec,
    ResidualSpec,
    SpaceUpsampleSpec,
    TimeUpsampleSpec,
    UpsampleSpec,
)
from genie_core.models.layers.conv import (
    CausalConv3d,
    FrameGroupNorm,
    PointwiseConv3d,
    blur_pool2d,
    causal_time_pool,
    frame_group_norm,
)

ACTIVATIONS = {"swish": nn.SiLU, "silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU,
                "leaky": lambda: nn.LeakyReLU(0.2)}


class Block(nn.Module):
    """A tokenizer block; ``cond`` (the quantised latents) is used by adaptive norms only."""

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class CausalConvBlock(Block):
    def __init__(self, spec: CausalConvSpec) -> None:
        super().__init__()
        self.conv = CausalConv3d(spec.in_channels, spec.out_channels, spec.kernel_size,  # type: ignore[arg-type]
                                 pad_mode=spec.pad_mode)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.conv(x)


class BlurDownsample(nn.Module):
    """Anti-aliased downsampling: per-frame blur pool in space, causal frame averaging in time."""

    def __init__(self, time_factor: int, space_factor: int) -> None:
        super().__init__()
        self.time_factor, self.space_factor = time_factor, space_factor

    def forward(self, x: Tensor) -> Tensor:
        if self.space_factor > 1:
            b = x.shape[0]
            frames = rearrange(x, "b c t h w -> (b t) c h w")
            frames = blur_pool2d(frames, self.space_factor)
            x = rearrange(frames, "(b t) c h w -> b c t h w", b=b)
        return causal_time_pool(x, self.time_factor)


class ResidualBlock(Block):
    """Pre-activation residual block: [down] -> (norm, act, conv, norm, act, conv) + skip.

    Downsampling happens first, so both convolutions run at the lower resolution (the seed ran the
    first one at full resolution; this is cheaper and the decoder mirror stays symmetric). Norms
    are per frame. The skip is a 1x1x1 conv when the channel count changes.
    """

    def __init__(self, spec: ResidualSpec) -> None:
        super().__init__()
        c_in, c_out = spec.in_channels, spec.out_channels
        t, s = spec.factors
        if t > 1 or s > 1:
            self.down: nn.Module = (BlurDownsample(t, s) if spec.use_blur else
                                    CausalConv3d(c_in, c_in, (max(3, t), 3, 3), stride=(t, s, s),  # type: ignore[arg-type]
                                                 pad_mode=spec.pad_mode))
        else:
            self.down = nn.Identity()
        norm = (lambda c: FrameGroupNorm(spec.num_groups, c)) if spec.use_norm else (lambda c: nn.Identity())
        act = ACTIVATIONS[spec.act_fn]
        conv = lambda a, b: CausalConv3d(a, b, spec.kernel_size, pad_mode=spec.pad_mode,  # noqa: E731
                                         causal=spec.use_causal)
        self.main = nn.Sequential(norm(c_in), act(), conv(c_in, c_out), norm(c_out), act(),
                                  conv(c_out, c_out))
        self.skip = PointwiseConv3d(c_in, c_out) if c_in != c_out else nn.Identity()  # type: ignore[arg-type]

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        x = self.down(x)
        return self.main(x) + self.skip(x)


class SpaceTimeDownsample(Block):
    """``spacetime_downsample``: one strided causal convolution."""

    def __init__(self, spec: DownsampleSpec) -> None:
        super().__init__()
        self.conv = CausalConv3d(spec.in_channels, spec.out_channels, spec.kernel_size,  # type: ignore[arg-type]
                                 stride=(spec.time_factor, spec.space_factor, spec.space_factor),
                                 pad_mode=spec.pad_mode)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.conv(x)


class DepthToSpaceTimeUpsample(Block):
    """Causal conv to C' * t * s * s channels, then move them into time and space.

    Output frame ``j t + i`` is built from latent frame j alone: upsampling adds no look-ahead.
    The conv is initialised so that every sub-position gets the same filter, i.e. the block
    starts as a nearest-neighbour upsample (no checkerboard at initialisation).
    """

    def __init__(self, in_channels: int, out_channels: int, time_factor: int, space_factor: int,
                 kernel_size: int | tuple[int, int, int], pad_mode: str) -> None:
        super().__init__()
        self.t, self.s = time_factor, space_factor
        sub = time_factor * space_factor * space_factor
        self.conv = CausalConv3d(in_channels, out_channels * sub, kernel_size, pad_mode=pad_mode)
        with torch.no_grad():
            w = self.conv.conv.weight  # (C' * sub, C, kt, kh, kw), channel order (c, p, q, r)
            base = w[::sub].clone()
            w.copy_(base.repeat_interleave(sub, dim=0))
            if self.conv.conv.bias is not None:
                self.conv.conv.bias.copy_(self.conv.conv.bias[::sub].repeat_interleave(sub))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        x = self.conv(x)
        return rearrange(x, "b (c p q r) t h w -> b c (t p) (h q) (w r)", p=self.t, q=self.s, r=self.s)


class AdaptiveGroupNorm(Block):
    """Per-frame group norm whose scale and shift are predicted from the quantised latents at each
    position (MagViT-2 §3.2). The latents are resized to the feature map by nearest neighbour,
    which in time maps feature frame i to latent frame floor(i / f): causal. Zero-initialised, so
    the block starts as a plain group norm.
    """

    def __init__(self, channels: int, num_groups: int, cond_channels: int) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.to_scale_shift = PointwiseConv3d(cond_channels, 2 * channels)
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is None:
            raise ValueError("adaptive_group_norm needs the quantised latents as cond")
        x = frame_group_norm(x, self.num_groups)
        # 1x1x1 conv and 1 + scale at the latent resolution, then nearest upsampling of each
        # (channels-last, so the fused addcmul streams through memory once): same result, cheaper.
        scale, shift = self.to_scale_shift(cond).chunk(2, dim=1)
        fmt = torch.channels_last_3d
        scale = F.interpolate((1 + scale).contiguous(memory_format=fmt), size=x.shape[2:], mode="nearest")
        shift = F.interpolate(shift.contiguous(memory_format=fmt), size=x.shape[2:], mode="nearest")
        return torch.addcmul(shift, x, scale)


class ProjOut(Block):
    """``proj_out``: per-frame group norm, SiLU, causal conv."""

    def __init__(self, spec: ProjOutSpec) -> None:
        super().__init__()
        self.norm = FrameGroupNorm(spec.num_groups, spec.in_channels)  # type: ignore[arg-type]
        self.act = nn.SiLU()
        self.conv = CausalConv3d(spec.in_channels, spec.out_channels, spec.kernel_size,  # type: ignore[arg-type]
                                 pad_mode=spec.pad_mode)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.conv(self.act(self.norm(x)))


def frame_local(block: nn.Module) -> bool:
    """Whether output frame i of ``block`` depends on input frame i (and the latents' frame i)
    alone: every convolution in it has time kernel and stride 1, nothing moves frames in time,
    norms are per frame. Unknown modules count as not local."""
    if isinstance(block, DepthToSpaceTimeUpsample) and block.t != 1:
        return False
    if not isinstance(block, (CausalConvBlock, ResidualBlock, SpaceTimeDownsample,
                              DepthToSpaceTimeUpsample, AdaptiveGroupNorm, ProjOut)):
        return False
    for m in block.modules():
        if isinstance(m, CausalConv3d) and (m.time_kernel, m.time_stride) != (1, 1):
            return False
        if isinstance(m, BlurDownsample) and m.time_factor != 1:
            return False
        if isinstance(m, (nn.GroupNorm, nn.BatchNorm3d)) and not isinstance(m, FrameGroupNorm):
            return False
    return True


def build_block(spec: BlockSpec, cond_channels: int) -> Block:
    """Module for one resolved spec (n_rep == 1, channels explicit)."""
    if isinstance(spec, CausalConvSpec):
        return CausalConvBlock(spec)
    if isinstance(spec, ResidualSpec):
        return ResidualBlock(spec)
    if isinstance(spec, DownsampleSpec):
        return SpaceTimeDownsample(spec)
    if isinstance(spec, (UpsampleSpec, SpaceUpsampleSpec, TimeUpsampleSpec)):
        return DepthToSpaceTimeUpsample(spec.in_channels, spec.out_channels,  # type: ignore[arg-type]
                                        spec.time_up, spec.space_up, spec.kernel_size, spec.pad_mode)
    if isinstance(spec, AdaptiveGroupNormSpec):
        return AdaptiveGroupNorm(spec.in_channels, spec.num_groups, cond_channels)  # type: ignore[arg-type]
    if isinstance(spec, ProjOutSpec):
        return ProjOut(spec)
    raise TypeError(f"no module for block spec {spec!r}")
