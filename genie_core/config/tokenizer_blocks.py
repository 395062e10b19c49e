"""Block specs of the tokenizer's encoder/decoder descriptions (MagViT-2 §3.2, the seed's
``enc_desc``): one typed, validated dataclass per block kind, the channel flow from block to block,
and the mirror that derives a decoder from an encoder. No torch import here.
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


def triple(k: int | tuple[int, ...]) -> tuple[int, int, int]:
    """A kernel size or stride as (time, height, width)."""
    return (k, k, k) if isinstance(k, int) else tuple(k)  # type: ignore[return-value]


def _require_at_least_one(key: str, value: int) -> None:
    """The blocks' common check: a count or factor ``key`` must be >= 1 (raises ValueError)."""
    if value < 1:
        raise ValueError(f"{key} must be >= 1, got {value}")


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
        _require_at_least_one("n_rep", self.n_rep)
        for key in ("in_channels", "out_channels"):
            value = getattr(self, key, None)
            if value is not None:  # None: taken from the channel flow
                _require_at_least_one(key, value)
        k = getattr(self, "kernel_size", None)
        if k is not None and any(v < 1 or v % 2 == 0 for v in triple(k)):
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
        _require_at_least_one("num_groups", self.num_groups)


@dataclass(frozen=True)
class _SpaceTimeResampleSpec(BlockSpec):
    """Keys and checks shared by ``spacetime_downsample`` and ``spacetime_upsample``: a causal conv
    that resamples time by ``time_factor`` and both spatial axes by ``space_factor``."""

    out_channels: int | None = None
    kernel_size: int | tuple[int, int, int] = 3
    time_factor: int = 2
    space_factor: int = 2
    pad_mode: PadMode = "replicate"

    def check(self) -> None:
        super().check()
        if self.time_factor < 1 or self.space_factor < 1:
            raise ValueError("time_factor and space_factor must be >= 1")


@dataclass(frozen=True)
class DownsampleSpec(_SpaceTimeResampleSpec):
    """``spacetime_downsample``: a strided causal convolution."""

    name: ClassVar[str] = "spacetime_downsample"

    @property
    def time_down(self) -> int:
        return self.time_factor

    @property
    def space_down(self) -> int:
        return self.space_factor

    def check(self) -> None:
        super().check()
        kt, kh, _ = triple(self.kernel_size)
        if kt < self.time_factor:
            raise ValueError(f"kernel_size in time ({kt}) must be >= time_factor ({self.time_factor})")


@dataclass(frozen=True)
class UpsampleSpec(_SpaceTimeResampleSpec):
    """``spacetime_upsample``: causal conv to ``out * t * s * s`` channels, then depth-to-space-time.

    Output frame ``t * f + i`` comes from latent frame ``t`` only, so upsampling stays causal.
    """

    name: ClassVar[str] = "spacetime_upsample"

    @property
    def time_up(self) -> int:
        return self.time_factor

    @property
    def space_up(self) -> int:
        return self.space_factor


@dataclass(frozen=True)
class _AxisUpsampleSpec(BlockSpec):
    """Keys and checks shared by the seed's ``space_upsample`` and ``time_upsample``: a causal conv,
    then depth-to-space (or depth-to-time) by ``factor`` along one axis."""

    out_channels: int | None = None
    kernel_size: int | tuple[int, int, int] = 3
    factor: int = 2
    pad_mode: PadMode = "replicate"

    def check(self) -> None:
        super().check()
        _require_at_least_one("factor", self.factor)


@dataclass(frozen=True)
class SpaceUpsampleSpec(_AxisUpsampleSpec):
    """``space_upsample``: depth-to-space by ``factor`` (seed name)."""

    name: ClassVar[str] = "space_upsample"

    @property
    def space_up(self) -> int:
        return self.factor


@dataclass(frozen=True)
class TimeUpsampleSpec(_AxisUpsampleSpec):
    """``time_upsample``: depth-to-time by ``factor`` (seed name); causal as above."""

    name: ClassVar[str] = "time_upsample"

    @property
    def time_up(self) -> int:
        return self.factor


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
        _require_at_least_one("num_groups", self.num_groups)

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

    def check(self) -> None:
        super().check()
        _require_at_least_one("num_groups", self.num_groups)


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
