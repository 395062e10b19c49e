"""Convolution primitives for the MagViT-2 tokenizer (Yu et al. 2023, §3.2): causal 3D convolution,
anti-aliased (blur) pooling (Zhang 2019, "Making CNNs shift-invariant again")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

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
    channels = x.shape[1]
    mode = "reflect" if min(x.shape[-2:]) > 1 else "replicate"
    x = F.pad(x, (1, 1, 1, 1), mode=mode)
    return F.conv2d(x, _blur_kernel(channels, x.dtype, x.device), stride=stride, groups=channels)
