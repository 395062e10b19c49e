"""The tokenizer's training losses (MagViT-2 §3.2): hinge / non-saturating GAN losses, VQGAN's
adaptive weight, the frames the discriminator sees, and a VGG16 perceptual loss read from local
weights (never downloaded). The discriminator itself is ``genie_core.models.discriminator``."""

from __future__ import annotations

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
