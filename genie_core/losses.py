"""Tokenizer training losses (MagViT-2 §3.2, after the seed's ``disc_kwargs``): a residual GAN
discriminator with spatial self-attention over frames or whole clips, hinge / non-saturating GAN
losses, and a VGG16 perceptual loss read from local weights (never downloaded)."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from genie_core.errors import GenieError
from genie_core.layers.conv import blur_pool2d

ACTIVATIONS = {"leaky": lambda: nn.LeakyReLU(0.2), "relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}


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


# ---------------------------------------------------------------------------------------------
# GAN objectives
# ---------------------------------------------------------------------------------------------

def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator hinge loss: E[relu(1 - D(x))] + E[relu(1 + D(G(z)))] (Lim & Ye 2017)."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """Generator side of the hinge GAN: -E[D(G(z))]."""
    return -fake_logits.mean()


def non_saturating_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Logistic discriminator loss: E[softplus(-D(x))] + E[softplus(D(G(z)))] (Goodfellow 2014)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def non_saturating_g_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss: E[softplus(-D(G(z)))] = -E[log sigmoid(D(G(z)))]."""
    return F.softplus(-fake_logits).mean()


GAN_LOSSES = {"hinge": (hinge_d_loss, hinge_g_loss), "non_saturating": (non_saturating_d_loss, non_saturating_g_loss)}


def adaptive_gan_weight(rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor,
                        max_weight: float = 1e4, eps: float = 1e-4) -> Tensor:
    """VQGAN's balance (Esser et al. 2021, eq. 7): ||grad rec|| / (||grad gan|| + eps) at the decoder's
    last layer, detached. Without autograd (eval, no_grad) there is no gradient to compare: 1.0, so
    eval losses keep a real GAN term."""
    if not (torch.is_grad_enabled() and last_layer.requires_grad and g_loss.requires_grad):
        return torch.ones((), device=g_loss.device)
    rec_grad, = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    gan_grad, = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    return (rec_grad.norm() / (gan_grad.norm() + eps)).clamp(0.0, max_weight).detach()


def sample_frames(videos: Sequence[Tensor], num_frames: int | None,
                  generator: torch.Generator | None = None) -> list[Tensor]:
    """Pick the same ``num_frames`` random frames per clip from each (B, C, T, H, W) video and fold
    them to (B * n, C, H, W); ``None`` or n >= T keeps every frame (seed's ``gan_frames_per_batch``)."""
    b, _, t = videos[0].shape[:3]
    if num_frames is None or num_frames >= t:
        return [rearrange(v, "b c t h w -> (b t) c h w") for v in videos]
    device = videos[0].device
    # (B, n): independent random frame subsets per clip, shared across the videos
    idx = torch.stack([torch.randperm(t, generator=generator)[:num_frames] for _ in range(b)]).to(device)
    rows = torch.arange(b, device=device)[:, None]
    # v[:, :, ...] indexed by (rows, idx) after moving time next to batch: (B, n, C, H, W)
    return [rearrange(v.transpose(1, 2)[rows, idx], "b n c h w -> (b n) c h w") for v in videos]


# ---------------------------------------------------------------------------------------------
# Perceptual loss: VGG16 features (Simonyan & Zisserman 2015), torchvision layer indices
# ---------------------------------------------------------------------------------------------

VGG16_FILE = "vgg16-397923af.pth"
# torchvision's vgg16 "D" config: ints are 3x3 conv + ReLU, "M" is 2x2 max-pool
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class _FrozenConv2d(nn.Module):
    """3x3 conv whose weights are non-persistent buffers: frozen, not in ``parameters()`` (so no
    optimizer sees them) and not in ``state_dict()`` (so tokenizer checkpoints don't carry 58 MB
    of public VGG weights). The input still gets gradients."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.empty(out_ch, in_ch, 3, 3), persistent=False)
        self.register_buffer("bias", torch.empty(out_ch), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, padding=1)


def _vgg16_features(depth: int) -> nn.Sequential:
    """The first ``depth`` modules of torchvision's ``vgg16().features`` (same indices)."""
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [_FrozenConv2d(in_ch, v), nn.ReLU()]
            in_ch = v
    return nn.Sequential(*layers[:depth])


def default_vgg16_path() -> Path:
    """Torch hub cache: ``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth`` (TORCH_HOME defaults to
    ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


def load_vgg16_features(path: str | os.PathLike) -> dict[str, Tensor]:
    """The ``features.*`` tensors of a torchvision VGG16 state dict, loaded without unpickling code
    (``weights_only=True``; a ``.safetensors`` file works too)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a checkpoint, truncated, or a pickle that holds code
        text = str(exc).strip() or type(exc).__name__
        if isinstance(exc, pickle.UnpicklingError) and text.startswith("Weights only load failed"):
            # torch's message advises weights_only=False, not advice to pass on: keep its reason only
            lines = [l.replace("WeightsUnpickler error:", "").strip() for l in text.splitlines()[1:]]
            reason = next((l for l in lines if l and not l.startswith(("Please file", "Check the doc"))), "?")
            why = f"not a plain tensor file, refused by the safe (weights_only) loader: {reason[:120]}"
        else:
            why = text.splitlines()[0]
        raise GenieError(f"cannot load VGG16 weights from {path}: {why}") from None
    if not isinstance(state, dict):
        raise GenieError(f"VGG16 weights file {path} does not hold a state dict")
    return {k: v for k, v in state.items() if isinstance(k, str) and k.startswith("features.")
            and isinstance(v, Tensor)}


class PerceptualLoss(nn.Module):
    """LPIPS-like distance on frozen VGG16 features, without LPIPS's learned per-channel weights:
    per layer, features are unit-normalised along channels, the squared difference is summed over
    channels and averaged over positions; the loss is the mean over layers and frames
    (``normalize=False``: the seed's plain MSE between raw features instead).

    Inputs in [-1, 1], (N, 3, H, W) or (B, 3, T, H, W) (time folded into the batch; ``num_frames``
    picks that many random frames per clip, the same ones in both videos). ``lazy=True`` reads the
    weights on first use, so building a model for inference never needs the file.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None,
                 feat_layers: Sequence[str] = ("features.6", "features.13", "features.18", "features.25"),
                 num_frames: int | None = None, normalize: bool = True, lazy: bool = False) -> None:
        super().__init__()
        feat_layers = (feat_layers,) if isinstance(feat_layers, str) else tuple(feat_layers)
        n_layers = 2 * sum(v != "M" for v in _VGG16_CFG) + _VGG16_CFG.count("M")
        idx = []
        for name in feat_layers:
            num = name.removeprefix("features.")
            if not name.startswith("features.") or not num.isdigit() or int(num) >= n_layers:
                raise ValueError(f"unknown perceptual layer {name!r}: use 'features.N' with N in 0..{n_layers - 1} "
                                 "(torchvision vgg16 indices; ReLUs are 1, 3, 6, 8, 11, 13, 15, 18, 20, 22, 25, 27, 29)")
            idx.append(int(num))
        if not idx:
            raise ValueError("feat_layers is empty")
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"num_frames must be positive or None, got {num_frames}")
        self.feat_idx = sorted(set(idx))
        self.num_frames, self.normalize = num_frames, normalize
        self.weights_path = Path(weights_path) if weights_path is not None else None
        self.features = _vgg16_features(self.feat_idx[-1] + 1)  # only as deep as the last layer used
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.loaded = False
        self.eval()
        if not lazy:
            self.load_weights()

    def train(self, mode: bool = True) -> "PerceptualLoss":
        return super().train(False)  # always a fixed feature extractor

    def load_weights(self) -> None:
        """Copy the VGG16 ``features.*`` tensors from ``weights_path`` (else the hub cache)."""
        path = self.weights_path or default_vgg16_path()
        if not path.is_file():
            where = ("" if self.weights_path else
                     " (the torch hub cache: set TORCH_HOME or pass a weights path to look elsewhere)")
            raise GenieError(f"VGG16 weights for the perceptual loss not found: put torchvision's "
                             f"{VGG16_FILE} at {path}{where}; nothing is downloaded")
        state = load_vgg16_features(path)
        for name, buf in self.named_buffers():
            if not name.startswith("features."):
                continue
            if name not in state:
                raise GenieError(f"VGG16 weights file {path} lacks tensor {name!r} (torchvision key names expected)")
            if tuple(state[name].shape) != tuple(buf.shape):
                raise GenieError(f"VGG16 weights file {path}: {name} has shape {tuple(state[name].shape)}, "
                                 f"expected {tuple(buf.shape)}")
            with torch.no_grad():
                buf.copy_(state[name])
        self.loaded = True

    def _features(self, x: Tensor) -> list[Tensor]:
        x = ((x + 1) / 2 - self.mean.to(x.dtype)) / self.std.to(x.dtype)  # [-1, 1] -> ImageNet stats
        feats, want = [], set(self.feat_idx)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in want:
                feats.append(x)
        return feats

    def forward(self, input: Tensor, target: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Scalar distance between ``input`` (gets the gradient) and ``target``."""
        if input.shape != target.shape or input.ndim not in (4, 5) or input.shape[1] != 3:
            raise ValueError(f"perceptual loss expects matching (N, 3, H, W) or (B, 3, T, H, W) inputs, "
                             f"got {tuple(input.shape)} and {tuple(target.shape)}")
        min_side = 2 ** sum(1 for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d))
        if min(input.shape[-2:]) < min_side:
            raise ValueError(f"perceptual loss needs frames of at least {min_side}x{min_side} for layer "
                             f"features.{self.feat_idx[-1]}, got {tuple(input.shape[-2:])}")
        if not self.loaded:
            self.load_weights()
        if input.ndim == 5:
            input, target = sample_frames([input, target], self.num_frames, generator)  # (N, 3, H, W)
        fx = self._features(input)
        # the target rarely needs a gradient: skip its autograd graph (half the activation memory)
        with torch.set_grad_enabled(torch.is_grad_enabled() and target.requires_grad):
            fy = self._features(target)
        dists = []
        for a, b in zip(fx, fy):
            a, b = a.float(), b.float()  # bf16 sums over 512 channels are too coarse
            if self.normalize:
                # LPIPS eq. 1 with w_l = 1: unit-normalise channels, sum sq. diff over C, mean over H, W;
                # eps inside the root bounds the gradient where a position's features are all zero
                a = a * torch.rsqrt(a.pow(2).sum(dim=1, keepdim=True) + 1e-8)
                b = b * torch.rsqrt(b.pow(2).sum(dim=1, keepdim=True) + 1e-8)
                dists.append((a - b).pow(2).sum(dim=1).mean())
            else:
                dists.append(F.mse_loss(a, b))
        return torch.stack(dists).mean()
