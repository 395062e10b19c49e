"""Video tokenizer (MagViT-2, Yu et al. 2023 §3; Genie §2.1 "video tokenizer"): a causal 3D-conv
encoder, lookup-free quantisation, a decoder with adaptive group norm, and the training losses
(reconstruction, LFQ, VGG16 perceptual, GAN). Seed-compatible API (``open-genie``'s README).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from genie_core.config.base import from_dict
from genie_core.config.tokenizer import TokenizerConfig
from genie_core.errors import ArgumentError, GenieError
from genie_core.io.checkpoint_format import Checkpointable
from genie_core.models.layers.blocks import Block, build_block, frame_local
from genie_core.models.lfq import LFQ

# Submodules only training needs (GAN discriminator, perceptual loss); inference loads without them.
TRAINING_ONLY = ("discriminator.", "perceptual.")


def _desc(*blocks: tuple[str, dict]) -> tuple[tuple[str, MappingProxyType], ...]:
    """A read-only block description (so no caller can mutate the shared constants)."""
    return tuple((name, MappingProxyType(dict(kwargs))) for name, kwargs in blocks)


# The seed's MagViT-2 encoder (time /4, space /8) with two changes: residual blocks are causal
# (the seed's defaulted to symmetric time padding, so its encoder saw the future) and proj_out
# emits d_codebook = 18 channels (the seed's 128 contradicted its own decoder's 18-channel input).
MAGVIT2_ENC_DESC = _desc(
    ("causal", {"in_channels": 3, "out_channels": 128, "kernel_size": 3}),
    ("residual", {"n_rep": 4, "in_channels": 128}),
    ("spacetime_downsample", {"in_channels": 128, "out_channels": 128, "kernel_size": 3,
                              "time_factor": 1, "space_factor": 2}),
    ("residual", {"in_channels": 128, "out_channels": 256}),
    ("residual", {"n_rep": 3, "in_channels": 256}),
    ("spacetime_downsample", {"in_channels": 256, "out_channels": 256, "kernel_size": 3,
                              "time_factor": 2, "space_factor": 2}),
    ("residual", {"n_rep": 4, "in_channels": 256}),
    ("spacetime_downsample", {"in_channels": 256, "out_channels": 256, "kernel_size": 3,
                              "time_factor": 2, "space_factor": 2}),
    ("residual", {"in_channels": 256, "out_channels": 512}),
    ("residual", {"n_rep": 7, "in_channels": 512}),
    ("proj_out", {"in_channels": 512, "out_channels": 18, "num_groups": 8, "kernel_size": 3}),
)

# The seed's MagViT-2 decoder (time x4, space x8). Every adaptive group norm is conditioned on
# the quantised latents (the seed's last one lacked has_ext and could not run).
MAGVIT2_DEC_DESC = _desc(
    ("causal", {"in_channels": 18, "out_channels": 512, "kernel_size": 3}),
    ("residual", {"n_rep": 4, "in_channels": 512}),
    ("adaptive_group_norm", {"num_groups": 8, "num_channels": 512, "has_ext": True}),
    ("residual", {"n_rep": 4, "in_channels": 512}),
    ("spacetime_upsample", {"in_channels": 512, "kernel_size": 3, "time_factor": 2, "space_factor": 2}),
    ("adaptive_group_norm", {"num_groups": 8, "num_channels": 512, "has_ext": True}),
    ("residual", {"in_channels": 512, "out_channels": 256}),
    ("residual", {"n_rep": 3, "in_channels": 256}),
    ("spacetime_upsample", {"in_channels": 256, "kernel_size": 3, "time_factor": 2, "space_factor": 2}),
    ("adaptive_group_norm", {"num_groups": 8, "num_channels": 256, "has_ext": True}),
    ("residual", {"n_rep": 4, "in_channels": 256}),
    ("spacetime_upsample", {"in_channels": 256, "kernel_size": 3, "time_factor": 1, "space_factor": 2}),
    ("adaptive_group_norm", {"num_groups": 8, "num_channels": 256, "has_ext": True}),
    ("residual", {"in_channels": 256, "out_channels": 128}),
    ("residual", {"n_rep": 3, "in_channels": 128}),
    ("proj_out", {"in_channels": 128, "out_channels": 3, "num_groups": 8, "kernel_size": 3}),
)

_SEED_DEFAULTS: dict[str, Any] = dict(
    d_codebook=18, n_codebook=1, lfq_bias=True, lfq_frac_sample=1.0, lfq_commit_weight=0.25,
    lfq_entropy_weight=0.1, lfq_diversity_weight=1.0, perceptual_model=None,
    perc_feat_layers=("features.6", "features.13", "features.18", "features.25"),
    gan_discriminate="frames", gan_frames_per_batch=4, gan_loss_weight=1.0, perc_loss_weight=1.0,
    quant_loss_weight=1.0,
)


def _to_channels_last(module: nn.Module) -> None:
    """Store 5D (Conv3d) weights channels-last. With bf16 autocast oneDNN's conv3d ran 2.5x faster
    that way on the development CPU (128->128 channels, 16x32x32: 4.5 ms vs 11.4 ms contiguous;
    fp32: 52 vs 46 ms, about even). Inputs are made channels-last in encode/decode to match."""
    for p in module.parameters():
        if p.ndim == 5:
            p.data = p.data.contiguous(memory_format=torch.channels_last_3d)


class VideoTokenizer(nn.Module, Checkpointable):
    """MagViT-2 video tokenizer: (B, 3, T, H, W) in [-1, 1] <-> codes (B, D, T', h, w) / ids.

    Build it from a ``TokenizerConfig`` (``VideoTokenizer(cfg)``, ``from_config``, ``from_preset``)
    or with the seed's keywords (``VideoTokenizer(enc_desc=..., dec_desc=..., disc_kwargs=...,
    d_codebook=18, ...)``; every keyword but ``enc_desc`` has a default; ``dec_desc=None``
    mirrors the encoder). Unlike the seed, the perceptual and GAN losses are off unless asked for
    (``perceptual_model='vgg16'``, ``disc_kwargs={...}``): their weights must be supplied locally.
    """

    kind = "tokenizer"
    config_section = "tokenizer"

    def __init__(self, enc_desc: TokenizerConfig | Sequence[Any], dec_desc: Sequence[Any] | None = None,
                 disc_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__()
        if isinstance(enc_desc, TokenizerConfig):
            if dec_desc is not None or disc_kwargs is not None or kwargs:
                raise TypeError("VideoTokenizer(cfg) takes no other arguments")
            cfg = enc_desc
        else:
            raw = {**_SEED_DEFAULTS, **kwargs, "enc_desc": enc_desc, "dec_desc": dec_desc,
                   "disc": disc_kwargs}
            cfg = from_dict(TokenizerConfig, raw, source="VideoTokenizer(...)")
        self.config = cfg
        enc_specs, dec_specs = cfg.architecture()
        latent_ch = cfg.latent_channels
        self.encoder = nn.ModuleList(build_block(s, latent_ch) for s in enc_specs)
        self.quantizer = LFQ(latent_ch, cfg.d_codebook, cfg.n_codebook, use_bias=cfg.lfq_bias,
                             frac_sample=cfg.lfq_frac_sample, commit_weight=cfg.lfq_commit_weight,
                             entropy_weight=cfg.lfq_entropy_weight,
                             diversity_weight=cfg.lfq_diversity_weight,
                             inv_temperature=cfg.lfq_inv_temperature,
                             group_bits=cfg.lfq_entropy_group_bits)
        self.decoder = nn.ModuleList(build_block(s, latent_ch) for s in dec_specs)
        # decode(last=True): from this block on every block is frame-local (see decode)
        self._frame_local_from = len(self.decoder)
        while self._frame_local_from > 0 and frame_local(self.decoder[self._frame_local_from - 1]):
            self._frame_local_from -= 1
        self._time_down, self._space_down = cfg.time_downsample, cfg.space_downsample
        _to_channels_last(self.encoder)
        _to_channels_last(self.decoder)

        # Losses (genie_core.models.losses, imported here so the architecture alone needs none of it).
        from genie_core.models import losses
        from genie_core.models.discriminator import Discriminator
        self.perceptual = None
        if cfg.perceptual_model is not None and cfg.perc_loss_weight > 0:
            # lazy: the VGG16 file is read on first use, so inference never needs it
            self.perceptual = losses.PerceptualLoss(cfg.perceptual_weights, cfg.perc_feat_layers,
                                                    lazy=True)
        self.discriminator = None
        if cfg.disc is not None and cfg.gan_loss_weight > 0:
            self.discriminator = Discriminator(**cfg.disc.kwargs(),
                                                      discriminate=cfg.gan_discriminate)
        self._gan_d, self._gan_g = losses.GAN_LOSSES[cfg.gan_loss]

    # ------------------------------------------------------------------------------ properties
    @property
    def time_downsample(self) -> int:
        return self._time_down

    @property
    def space_downsample(self) -> int:
        return self._space_down

    @property
    def code_bits(self) -> int:
        return self.quantizer.code_bits

    @property
    def vocab_size(self) -> int:
        return self.quantizer.vocab_size

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """Everything the main optimiser trains: all parameters but the discriminator's."""
        for name, p in self.named_parameters():
            if not name.startswith("discriminator."):
                yield p

    # ------------------------------------------------------------------------------- encoding
    def _check_video(self, video: Tensor) -> None:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ArgumentError(f"expected video (B, 3, T, H, W), got shape {tuple(video.shape)}")
        h, w = video.shape[-2:]
        if h % self._space_down or w % self._space_down:
            raise ArgumentError(f"frame size {h}x{w} is not divisible by the tokenizer's spatial "
                                f"downsampling factor {self._space_down}")

    def encode(self, video: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> continuous latents (B, D, n, H / s, W / s), D = d * n_codebook.

        With time downsampling t, n = ceil(T / t) and latent frame j covers frames up to and
        including T - 1 - (n - 1 - j) t: the last latent frame ends at the last frame, and no
        latent frame sees a frame after its group. T = 1 + t k gives MagViT-2's grouping (frame 0
        alone, then groups of t); otherwise the first group is the short one, completed by
        repeating frame 0 before the clip (``decode`` then returns n t frames, of which
        ``reconstruct`` keeps the last T)."""
        self._check_video(video)
        x = video.contiguous(memory_format=torch.channels_last_3d)
        for block in self.encoder:
            x = block(x)
        return self.quantizer.project_in(x)

    @torch.no_grad()
    def tokenize(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """(codes (B, D, T', h, w) in {-1, 1}, ids (B, T', h, w) int64). Mode is left unchanged."""
        z = self.encode(video).float()
        codes = torch.where(z > 0, 1.0, -1.0)
        return codes, self.quantizer.codes_to_ids(codes)

    def ids_to_codes(self, ids: Tensor) -> Tensor:
        """(B, T', h, w) ids -> (B, D, T', h, w) codes in {-1, 1}."""
        return self.quantizer.ids_to_codes(ids)

    # ------------------------------------------------------------------------------- decoding
    def decode(self, codes: Tensor, last: bool = False) -> Tensor:
        """(B, D, T', h, w) codes -> (B, 3, T' t, h s, w s). Frame i depends on latents <= i // t.

        ``last``: only the newest frame, (B, 3, 1, H, W): ``decode(codes)[:, :, -1:]``. Past the
        decoder's last block that mixes frames (a causal conv with a time kernel) every block
        works frame by frame, so from there on only the last frame is run: half the decoder's
        work when play decodes two frames of context to draw one. The values are the same up to
        summation order: a per-frame CPU kernel (group norm) may sum a one-frame batch in another
        order than a two-frame one (on the shipped CoinRun decoder in bf16: at most one uint8
        level on ~6% of pixels; fp32: the same uint8 frames; small grids: bit for bit).
        """
        cond = self.quantizer.project_out(codes).contiguous(memory_format=torch.channels_last_3d)
        x = cond
        split = self._frame_local_from if last else len(self.decoder)
        for i, block in enumerate(self.decoder):
            if i == split:
                # The newest feature frame reads the newest latent frame (nearest upsampling in
                # time maps the last onto the last), so both are cut to their last frame.
                x, cond = x[:, :, -1:], cond[:, :, -1:]
            x = block(x, cond)
        return x[:, :, -1:] if last else x

    def decode_ids(self, ids: Tensor, last: bool = False) -> Tensor:
        """``decode`` of ids (B, T', h, w); ``last``: the newest frame only."""
        return self.decode(self.ids_to_codes(ids), last=last)

    @torch.no_grad()
    def reconstruct(self, video: Tensor) -> Tensor:
        """tokenize then decode, trimmed to the input's frame count."""
        codes, _ = self.tokenize(video)
        return self.decode(codes)[:, :, -video.shape[2]:]

    # --------------------------------------------------------------------------------- losses
    def _gan_inputs(self, video: Tensor, rec: Tensor) -> tuple[Tensor, Tensor]:
        """What the discriminator / perceptual loss see: ``gan_frames_per_batch`` frames per clip
        (the same frames in both; random in training, fixed in eval mode) as (N, 3, H, W)."""
        from genie_core.models.losses import sample_frames
        gen = None if self.training else torch.Generator().manual_seed(0)
        real, fake = sample_frames([video, rec], self.config.gan_frames_per_batch, gen)
        return real, fake

    def generator_loss(self, video: Tensor, use_gan: bool = True) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """(loss, terms, reconstruction) for the encoder/quantiser/decoder (Genie §2.1).

        loss = rec_w * MSE + quant_w * LFQ (entropy + commitment) + perc_w * perceptual
        + gan_w * lambda * hinge generator loss (lambda: VQGAN's adaptive weight when enabled,
        1 without gradients). Terms are real numbers in eval mode too. ``use_gan=False`` skips the
        discriminator (e.g. before it is switched on in training).
        """
        cfg = self.config
        z = self.encode(video)
        quant = self.quantizer(z)
        rec = self.decode(quant.codes)[:, :, -video.shape[2]:]
        rec_loss = F.mse_loss(rec.float(), video.float())
        terms: dict[str, Tensor] = {"rec": rec_loss, "quant": quant.loss, **quant.aux}
        loss = cfg.rec_loss_weight * rec_loss + cfg.quant_loss_weight * quant.loss
        want_gan = use_gan and self.discriminator is not None
        if self.perceptual is not None or want_gan:
            real_f, fake_f = self._gan_inputs(video, rec)
        nll = cfg.rec_loss_weight * rec_loss
        if self.perceptual is not None:
            perc = self.perceptual(fake_f, real_f)
            terms["perc"] = perc
            nll = nll + cfg.perc_loss_weight * perc
            loss = loss + cfg.perc_loss_weight * perc
        if want_gan:
            logits = self.discriminator(fake_f if cfg.gan_discriminate == "frames" else rec)  # type: ignore[misc]
            g_loss = self._gan_g(logits)
            weight = torch.ones((), device=g_loss.device)
            if cfg.gan_adaptive_weight:
                from genie_core.models.losses import adaptive_gan_weight
                weight = adaptive_gan_weight(nll, g_loss, self._last_decoder_weight())
            terms["gan"], terms["gan_weight"] = g_loss, weight
            loss = loss + cfg.gan_loss_weight * weight * g_loss
        terms["loss"] = loss
        return loss, terms, rec

    def discriminator_loss(self, video: Tensor, reconstruction: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """(hinge loss, terms) for the discriminator; the reconstruction is detached here."""
        if self.discriminator is None:
            raise GenieError("this tokenizer has no discriminator (tokenizer.disc is null or "
                             "gan_loss_weight is 0)")
        rec = reconstruction.detach()
        if self.config.gan_discriminate == "frames":
            real, fake = self._gan_inputs(video, rec)
        else:
            real, fake = video, rec
        real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
        d_loss = self._gan_d(real_logits, fake_logits)
        return d_loss, {"disc": d_loss, "logits_real": real_logits.mean().detach(),
                        "logits_fake": fake_logits.mean().detach()}

    def forward(self, video: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Seed API: ``loss, aux = tokenizer(video)``; the generator loss and every term (with
        the discriminator's own loss, for logging only, when there is one)."""
        loss, terms, rec = self.generator_loss(video)
        if self.discriminator is not None:
            with torch.no_grad():
                terms["disc"] = self.discriminator_loss(video, rec)[0]
        return loss, terms

    def _last_decoder_weight(self) -> Tensor:
        last = [m for m in self.decoder.modules() if isinstance(m, nn.Conv3d)][-1]
        return last.weight


__all__ = ["VideoTokenizer", "MAGVIT2_ENC_DESC", "MAGVIT2_DEC_DESC", "Block"]
