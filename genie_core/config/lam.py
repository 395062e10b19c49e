"""Latent action model config (Genie §2.1 and appendix A.3): ST-transformer encoder and decoder
over pixel patches, a small VQ codebook of latent actions between them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class LamConfig:
    """Defaults follow the paper's shape at a CPU-friendly size (paper: 8 codes of dim 32)."""

    # Frame size (H, W) the model is trained on and that inference resizes to; None (the presets'
    # default) means "data.resolution" and the training stage fills it in before building.
    resolution: tuple[int, int] | None = None
    num_actions: int = 8  # VQ codebook size (paper: 8; the CoinRun case study: 6)
    action_dim: int = 32  # dimension of each latent action code
    patch_size: int = 8  # square pixel patches; frame sides must be multiples of it
    model_dim: int = 256
    encoder_depth: int = 4
    decoder_depth: int = 4
    heads: int = 4
    qk_norm: bool = True
    # Encoder input per frame: its patches plus the patches of x_t - x_{t-1} (a causal function of
    # frames <= t, so the encoder still sees only frames <= t+1; it makes motion easy to see).
    frame_diff: bool = True
    # Encoder patch embedding: "linear" (ViT: one matrix per patch) or "conv" (a small strided
    # CNN over each frame and its difference to the previous one, stem_channels wide at first;
    # local motion, a product of temporal and spatial differences, is hard for one linear map).
    stem: Literal["linear", "conv"] = "linear"
    # Encoder patches (linear stem) every patch_stride pixels; < patch_size overlaps them, so
    # whatever the offset of a moving object against the patch grid, some patch sees it at each
    # offset (with non-overlapping patches a 4-pixel move split each direction into one latent
    # per offset). A divisor of patch_size; None: patch_size (no overlap). The decoder always
    # uses non-overlapping patches.
    patch_stride: int | None = None
    stem_channels: int = 16
    # How the encoder names a transition: "token" reads a learned per-frame action token that
    # attends to the frame's patches (it can focus on what moved); "mean" averages the patches.
    pooling: Literal["token", "mean"] = "token"
    # Patch positions in encoder and decoder: "sincos" (fixed 2-D sine-cosine, added to the
    # patches) or "rotary" (2-D rotary in spatial attention: attention sees only the offset
    # between two patches, so "the sprite moved one patch left" is one rule at every position).
    spatial_positions: Literal["sincos", "rotary"] = "sincos"
    # Decoder outputs x_{t+1} - x_t added to x_t (an identity prior; x_t is already its input).
    predict_residual: bool = True
    recon_loss: Literal["mse", "l1", "mse+l1"] = "mse"
    # The reconstruction loss weighted towards pixels that move: a pixel whose colour changes
    # between x_t and x_{t+1} (by more than 1/32 of the range in some channel) weighs
    # 1 + moving_weight, a still one 1, normalised to a mean weight of 1 per clip. In a game most
    # pixels stay put, and the few that move carry the action. 0: the plain loss.
    moving_weight: float = 0.0
    # VQ: EMA codebook updates when codebook_ema > 0 (Razavi et al. 2019), else codebook +
    # commitment losses (van den Oord 2017; then codebook_weight applies). With only a few codes
    # the encoder's latents start nearly identical, all on one code, and a commitment term pulls
    # them together faster than the decoder's gradient can separate them (on Breakout, 0.05
    # collapsed whole runs onto one or three codes); EMA codes follow the latents anyway, so by
    # default there is none.
    commitment_weight: float = 0.0
    codebook_weight: float = 1.0
    codebook_ema: float = 0.9
    # Training steps at the start in which the decoder gets the encoder's continuous latent (no
    # quantisation): encoder and decoder first learn to pass the change through the bottleneck,
    # then the VQ (k-means-initialised on that batch) discretises it. 0: quantise from step 0.
    continuous_steps: int = 0
    normalize_codes: bool = False  # cosine-similarity VQ: l2-normalise latents and codes
    # Dead-code reset: a code whose running share of assignments falls below
    # dead_code_fraction / num_actions is moved onto a random latent from the batch.
    dead_code_fraction: float = 0.1
    usage_decay: float = 0.8  # running average of code usage (per training step)
    # Inference on long videos: windows of context_frames frames overlapping by window_overlap
    # (every transition gets exactly one action, with >= window_overlap - 1 frames of past).
    context_frames: int = 16
    window_overlap: int = 8

    def __post_init__(self) -> None:
        if self.num_actions < 2:
            raise ValueError(f"num_actions must be >= 2, got {self.num_actions}")
        for name in ("action_dim", "patch_size", "model_dim", "encoder_depth", "decoder_depth", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.resolution is not None and (min(self.resolution) < 1 or any(
                side % self.patch_size for side in self.resolution)):
            raise ValueError(f"resolution {list(self.resolution)} must be positive multiples of "
                             f"patch_size ({self.patch_size})")
        if self.stem == "conv" and self.patch_size & (self.patch_size - 1):
            raise ValueError(f"stem 'conv' needs a power-of-two patch_size, got {self.patch_size}")
        if self.patch_stride is not None and not (
                1 <= self.patch_stride <= self.patch_size and self.patch_size % self.patch_stride == 0):
            raise ValueError(f"patch_stride must divide patch_size ({self.patch_size}), got {self.patch_stride}")
        if self.patch_stride not in (None, self.patch_size) and self.stem != "linear":
            raise ValueError("patch_stride applies to the linear stem only")
        if self.stem_channels < 1:
            raise ValueError(f"stem_channels must be >= 1, got {self.stem_channels}")
        if self.model_dim % self.heads or (self.model_dim // self.heads) % 2:
            raise ValueError(f"model_dim ({self.model_dim}) must be divisible by heads ({self.heads}) "
                             "into an even head size (rotary positions)")
        if self.spatial_positions not in ("sincos", "rotary"):
            raise ValueError(f"spatial_positions must be 'sincos' or 'rotary', got {self.spatial_positions!r}")
        if self.spatial_positions == "rotary" and (self.model_dim // self.heads) % 4:
            raise ValueError(f"spatial_positions='rotary' needs a head size divisible by 4, got "
                             f"{self.model_dim // self.heads}")
        if self.model_dim % 4:
            raise ValueError(f"model_dim must be a multiple of 4 (2D sine positions), got {self.model_dim}")
        if not 0.0 <= self.codebook_ema < 1.0:
            raise ValueError(f"codebook_ema must be in [0, 1), got {self.codebook_ema}")
        if not 0.0 <= self.usage_decay < 1.0:
            raise ValueError(f"usage_decay must be in [0, 1), got {self.usage_decay}")
        if not 0.0 <= self.dead_code_fraction < 1.0:
            raise ValueError(f"dead_code_fraction must be in [0, 1), got {self.dead_code_fraction}")
        if self.commitment_weight < 0 or self.codebook_weight < 0:
            raise ValueError("commitment_weight and codebook_weight must be >= 0")
        if self.continuous_steps < 0:
            raise ValueError(f"continuous_steps must be >= 0, got {self.continuous_steps}")
        if self.context_frames < 2:
            raise ValueError(f"context_frames must be >= 2, got {self.context_frames}")
        if not 1 <= self.window_overlap < self.context_frames:
            raise ValueError(f"window_overlap must be in [1, context_frames), got {self.window_overlap}")
