"""Tokenizer config (MagViT-2, Yu et al. 2023 §3; the seed's ``enc_desc`` block lists).

An encoder/decoder description is a list of blocks in the seed's form ``[name, {kwargs}]``. Each
block kind is a typed, validated spec; channel counts flow from one block to the next
(``in_channels`` is optional, and must match when given). ``dec_desc: null`` mirrors the encoder.
No torch import here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping

from genie_core.config.base import from_dict, to_dict
from genie_core.errors import ConfigError

VIDEO_CHANNELS = 3  # RGB in, RGB out
Activation = Literal["swish", "silu", "relu", "gelu", "leaky"]
PadMode = Literal["replicate", "constant"]  # how causal convs fill the frames before the clip


def _triple(k: int | tuple[int, ...]) -> tuple[int, int, int]:
    return (k, k, k) if isinstance(k, int) else tuple(k)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------- blocks

@dataclass(frozen=True)
class BlockSpec:
    """One entry of an encoder/decoder description. Subclasses set ``name`` and their keys.

    ``in_channels`` is optional everywhere: the channel count flows from the previous block.
    ``n_rep`` repeats the block; repeats after the first map out_channels to out_channels.
    """

    name: ClassVar[str] = ""
    n_rep: int = 1
    in_channels: int | None = None

    # --- channel / resolution bookkeeping (overridden where a block changes them)
    def out_channels_for(self, in_ch: int) -> int:
        out = getattr(self, "out_channels", None)
        return in_ch if out is None else out

    @property
    def time_down(self) -> int:
        return 1

    @property
    def space_down(self) -> int:
        return 1

    @property
    def time_up(self) -> int:
        return 1

    @property
    def space_up(self) -> int:
        return 1

    def check(self) -> None:
        """Per-block value checks (raise ValueError)."""
        if self.n_rep < 1:
            raise ValueError(f"n_rep must be >= 1, got {self.n_rep}")
        for key in ("in_channels", "out_channels"):
            value = getattr(self, key, None)
            if value is not None and value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        k = getattr(self, "kernel_size", None)
        if k is not None and any(v < 1 or v % 2 == 0 for v in _triple(k)):
            raise ValueError(f"kernel_size must be odd and >= 1, got {k}")

    def __post_init__(self) -> None:
        self.check()

    # --- (de)serialisation in the seed's [name, {kwargs}] form
    @classmethod
    def from_raw(cls, value: Any, where: str, source: str) -> "BlockSpec":
        if isinstance(value, BlockSpec):
            return value
        if isinstance(value, str):
            name, kwargs = value, {}
        elif isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str):
            name, kwargs = value
        else:
            raise ConfigError(f"{source}: '{where}' must be [block_name, {{key: value}}], got {value!r}")
        if name not in BLOCKS:
            raise ConfigError(f"{source}: '{where}': unknown block '{name}' "
                              f"(known: {', '.join(sorted(BLOCKS))})")
        spec_cls = BLOCKS[name]
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, Mapping):
            raise ConfigError(f"{source}: '{where}' ({name}): options must be a mapping, got {kwargs!r}")
        known = [f.name for f in dataclasses.fields(spec_cls)]
        for key in kwargs:
            if key not in known:
                raise ConfigError(f"{source}: '{where}' ({name}): unknown key '{key}' "
                                  f"(known: {', '.join(known)})")
        return from_dict(spec_cls, kwargs, source=source, prefix=where)

    def to_raw(self) -> list:
        """``[name, {kwargs}]`` with only the keys that differ from the defaults (compact YAML)."""
        kwargs = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                kwargs[f.name] = to_dict(value)
        return [self.name, kwargs]


@dataclass(frozen=True)
class CausalConvSpec(BlockSpec):
    """``causal``: a causal 3D convolution (time padded on the past side only)."""

    name: ClassVar[str] = "causal"
    out_channels: int | None = None
    kernel_size: int | tuple[int, int, int] = 3
    pad_mode: PadMode = "replicate"


@dataclass(frozen=True)
class ResidualSpec(BlockSpec):
    """``residual``: pre-activation residual block, optional (time, space) downsampling first."""

    name: ClassVar[str] = "residual"
    out_channels: int | None = None
    kernel_size: int | tuple[int, int, int] = 3
    num_groups: int = 1
    downsample: int | tuple[int, int] | None = None  # (time, space) or one factor for both
    use_causal: bool = True  # False pads time symmetrically: decoder only (it sees the future)
    use_blur: bool = True  # blur-pool (anti-aliased) downsampling instead of a strided conv
    use_norm: bool = True
    act_fn: Activation = "swish"
    pad_mode: PadMode = "replicate"

    @property
    def factors(self) -> tuple[int, int]:
        if self.downsample is None:
            return (1, 1)
        if isinstance(self.downsample, int):
            return (self.downsample, self.downsample)
        return tuple(self.downsample)  # type: ignore[return-value]

    @property
    def time_down(self) -> int:
        return self.factors[0]

    @property
    def space_down(self) -> int:
        return self.factors[1]

    def check(self) -> None:
        super().check()
        if min(self.factors) < 1:
            raise ValueError(f"downsample factors must be >= 1, got {self.downsample}")
        if self.num_groups < 1:
            raise ValueError(f"num_groups must be >= 1, got {self.num_groups}")


@dataclass(frozen=True)
class DownsampleSpec(BlockSpec):
    """``spacetime_downsample``: a strided causal convolution."""

    name: ClassVar[str] = "spacetime_downsample"
    out_channels: int | None = None
    kernel_size: int | tuple[int, int, int] = 3
    time_factor: int = 2
    space_factor: int = 2
    pad_mode: PadMode = "replicate"

    @property
    def time_down(self) -> int:
        return self.time_factor

    @property
    def space_down(self) -> int:
        return self.space_factor

    def check(self) -> None:
        super().check()
        if self.time_factor < 1 or self.space_factor < 1:
            raise ValueError("time_factor and space_factor must be >= 1")
        kt, kh, _ = _triple(self.kernel_size)
        if kt < self.time_factor:
            raise ValueError(f"kernel_size in time ({kt}) must be >= time_factor ({self.time_factor})")


@dataclass(frozen=True)
class UpsampleSpec(BlockSpec):
    """``spacetime_upsample``: causal conv to ``out * t * s * s`` channels, then depth-to-space-time.

    Output frame ``t * f + i`` comes from latent frame ``t`` only, so upsampling stays causal.
    """

    name: ClassVar[str] = "spacetime_upsample"
    out_channels: int | None = None
    kernel_size: int | tuple[int, int, int] = 3
    time_factor: int = 2
    space_factor: int = 2
    pad_mode: PadMode = "replicate"

    @property
    def time_up(self) -> int:
        return self.time_factor

    @property
    def space_up(self) -> int:
        return self.space_factor

    def check(self) -> None:
        super().check()
        if self.time_factor < 1 or self.space_factor < 1:
            raise ValueError("time_factor and space_factor must be >= 1")


@dataclass(frozen=True)
class SpaceUpsampleSpec(BlockSpec):
    """``space_upsample``: depth-to-space by ``factor`` (seed name)."""

    name: ClassVar[str] = "space_upsample"
    out_channels: int | None = None
    kernel_size: int | tuple[int, int, int] = 3
    factor: int = 2
    pad_mode: PadMode = "replicate"

    @property
    def space_up(self) -> int:
        return self.factor

    def check(self) -> None:
        super().check()
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")


@dataclass(frozen=True)
class TimeUpsampleSpec(BlockSpec):
    """``time_upsample``: depth-to-time by ``factor`` (seed name); causal as above."""

    name: ClassVar[str] = "time_upsample"
    out_channels: int | None = None
    kernel_size: int | tuple[int, int, int] = 3
    factor: int = 2
    pad_mode: PadMode = "replicate"

    @property
    def time_up(self) -> int:
        return self.factor

    def check(self) -> None:
        super().check()
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")


@dataclass(frozen=True)
class AdaptiveGroupNormSpec(BlockSpec):
    """``adaptive_group_norm`` (decoder only): per-frame group norm whose scale and shift come from
    the quantised latents (MagViT-2 §3.2). ``num_channels`` is the seed's name for in_channels;
    ``has_ext`` is accepted for the seed's descriptions: the norm is always conditioned."""

    name: ClassVar[str] = "adaptive_group_norm"
    num_channels: int | None = None
    num_groups: int = 1
    has_ext: bool = True

    def check(self) -> None:
        super().check()
        if self.num_channels is not None and self.in_channels is not None \
                and self.num_channels != self.in_channels:
            raise ValueError(f"num_channels {self.num_channels} != in_channels {self.in_channels}")
        if self.num_groups < 1:
            raise ValueError(f"num_groups must be >= 1, got {self.num_groups}")

    @property
    def declared_in(self) -> int | None:
        return self.num_channels if self.num_channels is not None else self.in_channels


@dataclass(frozen=True)
class ProjOutSpec(BlockSpec):
    """``proj_out``: group norm, SiLU, causal conv (to the quantiser, or to RGB in the decoder)."""

    name: ClassVar[str] = "proj_out"
    out_channels: int | None = None
    kernel_size: int | tuple[int, int, int] = 3
    num_groups: int = 1
    pad_mode: PadMode = "replicate"


BLOCKS: dict[str, type[BlockSpec]] = {cls.name: cls for cls in (
    CausalConvSpec, ResidualSpec, DownsampleSpec, UpsampleSpec, SpaceUpsampleSpec,
    TimeUpsampleSpec, AdaptiveGroupNormSpec, ProjOutSpec)}
_UPSAMPLERS = (UpsampleSpec, SpaceUpsampleSpec, TimeUpsampleSpec)


def _declared_in(block: BlockSpec) -> int | None:
    if isinstance(block, AdaptiveGroupNormSpec):
        return block.declared_in
    return block.in_channels


def resolve_blocks(blocks: tuple[BlockSpec, ...], in_ch: int, label: str) -> tuple[list[BlockSpec], int]:
    """Expand ``n_rep`` and fill ``in_channels`` (and ``out_channels``) from the channel flow.

    Returns (one spec per module, each with n_rep=1 and explicit channels; final channel count).
    Raises ValueError naming the block whose declared in_channels contradicts the flow.
    """
    out: list[BlockSpec] = []
    ch = in_ch
    for i, block in enumerate(blocks):
        declared = _declared_in(block)
        if declared is not None and declared != ch:
            source = f"{label}[{i - 1}]" if i else "the input"
            raise ValueError(f"{label}[{i}] ({block.name}): in_channels is {declared} but "
                             f"{source} gives {ch} channels")
        for rep in range(block.n_rep):
            changes: dict[str, Any] = {"n_rep": 1, "in_channels": ch}
            if isinstance(block, AdaptiveGroupNormSpec):
                changes["num_channels"] = ch
            else:
                changes["out_channels"] = block.out_channels_for(ch)
            spec = dataclasses.replace(block, **changes)
            ch = spec.out_channels_for(ch)
            out.append(spec)
    return out, ch


def _check_groups(blocks: list[BlockSpec], label: str) -> None:
    for i, b in enumerate(blocks):
        groups = getattr(b, "num_groups", 1)
        if isinstance(b, ResidualSpec):
            chans = [b.in_channels, b.out_channels] if b.use_norm else []
        elif isinstance(b, (ProjOutSpec, AdaptiveGroupNormSpec)):
            chans = [b.in_channels]
        else:
            chans = []
        for c in chans:
            if c % groups:
                raise ValueError(f"{label} block {i} ({b.name}): {c} channels are not divisible "
                                 f"by num_groups={groups}")


def mirror_blocks(enc: list[BlockSpec], code_channels: int) -> list[BlockSpec]:
    """A decoder that mirrors a resolved encoder (``dec_desc: null``), block by block in reverse.

    proj_out(C->D) at the end of the encoder becomes causal(D->C) at the start of the decoder and
    causal(3->C) at its start becomes proj_out(C->3). A residual block that downsampled by (t, s)
    is undone by its reverse (at the low resolution) followed by a depth-to-space-time upsample and
    an adaptive group norm conditioned on the quantised latents (MagViT-2 §3.2); a strided
    ``spacetime_downsample`` (C->C') by a ``spacetime_upsample`` (C'->C), which from RGB (a
    patchifying first layer) is the decoder's output layer.
    """
    blocks = list(enc)
    groups = max((getattr(b, "num_groups", 1) for b in blocks), default=1)
    dec: list[BlockSpec] = []
    ch = code_channels
    last = blocks[-1]
    if isinstance(last, (ProjOutSpec, CausalConvSpec)):
        dec.append(CausalConvSpec(in_channels=ch, out_channels=last.in_channels,
                                  kernel_size=last.kernel_size))
        ch = last.in_channels  # type: ignore[assignment]
        blocks = blocks[:-1]
    for i in range(len(blocks) - 1, -1, -1):
        block = blocks[i]
        c_in, c_out = block.in_channels, block.out_channels_for(block.in_channels)  # type: ignore[arg-type]
        if i == 0 and isinstance(block, (CausalConvSpec, ProjOutSpec)) and c_in == VIDEO_CHANNELS:
            g = groups if ch % groups == 0 else 1
            dec.append(ProjOutSpec(in_channels=ch, out_channels=c_in, num_groups=g,
                                   kernel_size=block.kernel_size))
            return _drop_norm_before_output(dec)
        t, s = block.time_down, block.space_down
        if isinstance(block, DownsampleSpec):
            # a strided conv is undone by one depth-to-space-time conv (c_out -> c_in); from RGB
            # (a patchifying first layer) that is the decoder's output layer
            dec.append(UpsampleSpec(in_channels=c_out, out_channels=c_in, time_factor=t,
                                    space_factor=s, kernel_size=block.kernel_size))
            if i == 0 and c_in == VIDEO_CHANNELS:
                return dec
            dec.append(AdaptiveGroupNormSpec(num_channels=c_in,
                                             num_groups=groups if c_in % groups == 0 else 1))
            ch = c_in
            continue
        if isinstance(block, ResidualSpec):
            dec.append(dataclasses.replace(block, in_channels=c_out, out_channels=c_in, downsample=None))
        elif isinstance(block, (CausalConvSpec, ProjOutSpec)) and c_in != c_out:
            dec.append(CausalConvSpec(in_channels=c_out, out_channels=c_in,
                                      kernel_size=block.kernel_size))
        if t > 1 or s > 1:
            dec.append(UpsampleSpec(in_channels=c_in, out_channels=c_in, time_factor=t, space_factor=s))
            dec.append(AdaptiveGroupNormSpec(num_channels=c_in,
                                             num_groups=groups if c_in % groups == 0 else 1))
        ch = c_in
    g = groups if ch % groups == 0 else 1  # the encoder did not start with a conv from RGB
    dec.append(ProjOutSpec(in_channels=ch, out_channels=VIDEO_CHANNELS, num_groups=g))
    return _drop_norm_before_output(dec)


def _drop_norm_before_output(dec: list[BlockSpec]) -> list[BlockSpec]:
    """An adaptive norm directly before the final proj_out (whose own group norm follows at once)
    costs a full-resolution pass for little: the earlier adaptive norms condition the decoder."""
    if len(dec) >= 2 and isinstance(dec[-2], AdaptiveGroupNormSpec) and isinstance(dec[-1], ProjOutSpec):
        return dec[:-2] + dec[-1:]
    return dec


# -------------------------------------------------------------------------------- discriminator

@dataclass(frozen=True)
class DiscriminatorConfig:
    """The seed's ``disc_kwargs`` (passed to ``genie_core.losses.Discriminator``)."""

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
        if self.code_bits > 62:
            raise ValueError(f"d_codebook * n_codebook = {self.code_bits} bits do not fit an int64 "
                             "token id (at most 62)")
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
