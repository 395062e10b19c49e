"""Tokenizer config (MagViT-2, Yu et al. 2023 §3; the seed's ``enc_desc`` block lists).

An encoder/decoder description is a list of blocks in the seed's form ``[name, {kwargs}]``. Each
block kind is a typed, validated spec; channel counts flow from one block to the next
(``in_channels`` is optional, and must match when given). ``dec_desc: null`` mirrors the encoder.
No torch import here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from genie_core.config.base import from_dict
from genie_core.config.tokenizer_blocks import (  # noqa: F401  (re-exported)
    _UPSAMPLERS,
    BLOCKS,
    VIDEO_CHANNELS,
    Activation,
    AdaptiveGroupNormSpec,
    BlockSpec,
    CausalConvSpec,
    DownsampleSpec,
    PadMode,
    ProjOutSpec,
    ResidualSpec,
    SpaceUpsampleSpec,
    TimeUpsampleSpec,
    UpsampleSpec,
    _check_groups,
    mirror_blocks,
    resolve_blocks,
)

# -------------------------------------------------------------------------------- discriminator

@dataclass(frozen=True)
class DiscriminatorConfig:
    """The seed's ``disc_kwargs`` (passed to ``genie_core.models.discriminator.Discriminator``)."""

    inp_size: tuple[int, int] = (64, 64)  # frame (H, W)
    model_dim: int = 64
    dim_mults: tuple[int, ...] = (1, 2, 4)
    down_step: tuple[int | None, ...] = (None, 2, 2)
    inp_channels: int = 3
    kernel_size: int = 3
    num_groups: int = 8
    act_fn: Activation = "leaky"
    use_blur: bool = True
    use_attn: bool = True
    num_heads: int = 4
    dim_head: int = 32

    def __post_init__(self) -> None:
        if len(self.dim_mults) != len(self.down_step):
            raise ValueError(f"disc.dim_mults {self.dim_mults} and disc.down_step {self.down_step} "
                             "must have the same length")
        if self.model_dim < 1 or min(self.dim_mults, default=1) < 1:
            raise ValueError("disc.model_dim and disc.dim_mults must be >= 1")
        for m in self.dim_mults:
            if (self.model_dim * m) % self.num_groups:
                raise ValueError(f"disc: {self.model_dim * m} channels not divisible by "
                                 f"num_groups={self.num_groups}")
        if any(d is not None and d < 1 for d in self.down_step):
            raise ValueError(f"disc.down_step entries must be null or >= 1, got {self.down_step}")
        if min(self.inp_size) < 1:
            raise ValueError(f"disc.inp_size must be positive, got {self.inp_size}")

    def kwargs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


# ------------------------------------------------------------------------------------ tokenizer

TINY_ENC_DESC: tuple[BlockSpec, ...] = (
    CausalConvSpec(in_channels=VIDEO_CHANNELS, out_channels=8),
    ResidualSpec(num_groups=4),
    ResidualSpec(out_channels=16, downsample=(1, 2), num_groups=4),
    ProjOutSpec(out_channels=8, num_groups=4),
)


@dataclass(frozen=True)
class TokenizerConfig:
    """Everything that defines a VideoTokenizer (architecture, LFQ, losses): saved in checkpoints."""

    enc_desc: tuple[BlockSpec, ...] = TINY_ENC_DESC
    dec_desc: tuple[BlockSpec, ...] | None = None  # None: mirror the encoder
    # Lookup-free quantisation (MagViT-2 §3.1): d bits per codebook, n codebooks.
    d_codebook: int = 8
    n_codebook: int = 1
    lfq_bias: bool = True  # bias of the in/out projections (only when channels != d * n)
    lfq_frac_sample: float = 1.0  # fraction of tokens used to estimate the entropy terms
    lfq_commit_weight: float = 0.25
    lfq_entropy_weight: float = 0.1
    lfq_diversity_weight: float = 1.0  # weight of the codebook entropy inside the entropy term
    lfq_inv_temperature: float = 100.0  # the seed's beta: logits = 2 * beta * <z, c>
    lfq_entropy_group_bits: int = 9  # codebook entropy estimated exactly within groups of <= this many bits
    # Losses.
    perceptual_model: Literal["vgg16"] | None = None
    perceptual_weights: str | None = None  # path; None: $TORCH_HOME/hub/checkpoints/vgg16-397923af.pth
    perc_feat_layers: tuple[str, ...] = ("features.6", "features.13", "features.18", "features.25")
    disc: DiscriminatorConfig | None = None
    gan_discriminate: Literal["frames", "video"] = "frames"
    gan_frames_per_batch: int = 4  # frames per clip shown to the frame discriminator / perceptual loss
    gan_loss: Literal["hinge", "non_saturating"] = "hinge"
    gan_adaptive_weight: bool = True  # VQGAN's balance of GAN vs reconstruction gradients
    gan_loss_weight: float = 1.0
    perc_loss_weight: float = 1.0
    quant_loss_weight: float = 1.0
    rec_loss_weight: float = 1.0

    def __post_init__(self) -> None:
        # Accept the seed's raw forms too (lists of [name, {kwargs}], a disc_kwargs dict), e.g.
        # from dataclasses.replace; the YAML loader already hands over typed values.
        norm = lambda desc, key: tuple(BlockSpec.from_raw(b, f"{key}[{i}]", "TokenizerConfig")  # noqa: E731
                                       for i, b in enumerate(desc))
        object.__setattr__(self, "enc_desc", norm(self.enc_desc, "enc_desc"))
        if self.dec_desc is not None:
            object.__setattr__(self, "dec_desc", norm(self.dec_desc, "dec_desc"))
        if isinstance(self.disc, Mapping):
            object.__setattr__(self, "disc", from_dict(DiscriminatorConfig, self.disc,
                                                       source="TokenizerConfig", prefix="disc"))
        object.__setattr__(self, "perc_feat_layers", tuple(self.perc_feat_layers))
        if not self.enc_desc:
            raise ValueError("enc_desc must list at least one block")
        if self.d_codebook < 1 or self.n_codebook < 1:
            raise ValueError("d_codebook and n_codebook must be >= 1")
        if self.code_bits > 31:  # token files hold int32 ids
            raise ValueError(f"d_codebook * n_codebook = {self.code_bits} bits do not fit an int32 "
                             "token id (at most 31)")
        if not 0.0 < self.lfq_frac_sample <= 1.0:
            raise ValueError(f"lfq_frac_sample must be in (0, 1], got {self.lfq_frac_sample}")
        if not 1 <= self.lfq_entropy_group_bits <= 12:
            raise ValueError(f"lfq_entropy_group_bits must be in 1..12, got {self.lfq_entropy_group_bits}")
        if self.lfq_inv_temperature <= 0:
            raise ValueError("lfq_inv_temperature must be > 0")
        for name in ("lfq_commit_weight", "lfq_entropy_weight", "lfq_diversity_weight",
                     "gan_loss_weight", "perc_loss_weight", "quant_loss_weight", "rec_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.gan_frames_per_batch < 1:
            raise ValueError(f"gan_frames_per_batch must be >= 1, got {self.gan_frames_per_batch}")
        if self.perceptual_weights is not None and self.perceptual_model is None:
            raise ValueError("perceptual_weights is set but perceptual_model is null")
        self.architecture()  # channel flow and resolution checks

    # ------------------------------------------------------------------ derived architecture
    @property
    def code_bits(self) -> int:
        return self.d_codebook * self.n_codebook

    def architecture(self) -> tuple[list[BlockSpec], list[BlockSpec]]:
        """(encoder, decoder) as resolved block lists (n_rep expanded, channels explicit).

        Checks: channels flow, the encoder only downsamples and is causal, the decoder only
        upsamples and undoes exactly the encoder's (time, space) factors, ends in RGB.
        """
        enc, enc_out = resolve_blocks(self.enc_desc, VIDEO_CHANNELS, "enc_desc")
        for i, b in enumerate(enc):
            if isinstance(b, _UPSAMPLERS):
                raise ValueError(f"enc_desc: an encoder cannot contain '{b.name}' blocks")
            if isinstance(b, AdaptiveGroupNormSpec):
                raise ValueError("enc_desc: 'adaptive_group_norm' conditions on the quantised "
                                 "latents and belongs in dec_desc")
            if isinstance(b, ResidualSpec) and not b.use_causal:
                raise ValueError("enc_desc: residual blocks must keep use_causal: true (the tokens "
                                 "of frame t may depend on frames <= t only)")
        _check_groups(enc, "enc_desc")
        if self.dec_desc is None:
            dec = mirror_blocks(enc, enc_out)
            label = "mirrored decoder"
        else:
            dec, _ = resolve_blocks(self.dec_desc, enc_out, "dec_desc")
            label = "dec_desc"
        dec, dec_out = resolve_blocks(tuple(dec), enc_out, label)
        for b in dec:
            if b.time_down > 1 or b.space_down > 1:
                raise ValueError(f"{label}: a decoder cannot downsample ('{b.name}' with "
                                 f"downsample={getattr(b, 'downsample', None)})")
        _check_groups(dec, label)
        if dec_out != VIDEO_CHANNELS:
            raise ValueError(f"{label} ends with {dec_out} channels, expected {VIDEO_CHANNELS} (RGB)")
        t_down, s_down = _prod(b.time_down for b in enc), _prod(b.space_down for b in enc)
        t_up, s_up = _prod(b.time_up for b in dec), _prod(b.space_up for b in dec)
        if (t_down, s_down) != (t_up, s_up):
            raise ValueError(f"encoder/decoder mismatch: the encoder downsamples time by {t_down} "
                             f"and space by {s_down}, but {label} upsamples time by {t_up} and space "
                             f"by {s_up}; the reconstruction would not have the input's shape")
        return enc, dec

    @property
    def time_downsample(self) -> int:
        return _prod(b.time_down for b in self.architecture()[0])

    @property
    def space_downsample(self) -> int:
        return _prod(b.space_down for b in self.architecture()[0])

    @property
    def latent_channels(self) -> int:
        return resolve_blocks(self.enc_desc, VIDEO_CHANNELS, "enc_desc")[1]


def _prod(values: Any) -> int:
    out = 1
    for v in values:
        out *= v
    return out


__all__ = ["TokenizerConfig", "DiscriminatorConfig", "BlockSpec", "BLOCKS", "CausalConvSpec",
           "ResidualSpec", "DownsampleSpec", "UpsampleSpec", "SpaceUpsampleSpec",
           "TimeUpsampleSpec", "AdaptiveGroupNormSpec", "ProjOutSpec", "resolve_blocks",
           "mirror_blocks", "VIDEO_CHANNELS"]
