"""Latent action model, Genie §2.1 (Fig. 5) and appendix A.3: an ST-transformer encoder names the
change x_t -> x_{t+1} with one of a few VQ codes; an ST-transformer decoder must predict x_{t+1}
from x_1..x_t and those codes alone, so the codes are forced to carry what changed."""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from genie_core.config.lam import LamConfig
from genie_core.errors import GenieError
from genie_core.io.checkpoint_format import Checkpointable
from genie_core.models.layers.st_transformer import STTransformer
from genie_core.models.vq import QuantizerOutput, VectorQuantizer

__all__ = ["LatentActionModel", "sincos_2d"]


def sincos_2d(h: int, w: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Fixed 2D sine-cosine position embedding (MAE / ViT style), shape (h*w, dim).

    Spatial attention is permutation-invariant, so patches need positions; fixed ones add no
    parameters tied to a frame size.
    """
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    out_y = ys.reshape(-1, 1) * omega[None]  # (h*w, dim/4)
    out_x = xs.reshape(-1, 1) * omega[None]
    emb = torch.cat((out_y.sin(), out_y.cos(), out_x.sin(), out_x.cos()), dim=1)  # (h*w, 4*quarter)
    return F.pad(emb, (0, dim - emb.shape[1]))


class ConvStem(nn.Module):
    """Patch embedding by a strided CNN: (N, C, H, W) -> (N, H/p * W/p, dim) tokens, p a power of 2.

    log2(p) stride-2 4x4 convs, the first ``width`` channels wide, each next one twice as wide
    (capped at dim), then a 1x1 projection. Nothing runs at full resolution, which keeps it cheap
    on a CPU. Each frame is processed on its own, so time stays causal.
    """

    def __init__(self, in_channels: int, dim: int, patch: int, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(patch.bit_length() - 1):  # log2(patch) halvings
            out = min(width * 2 ** i, dim)
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), nn.GELU()]
            channels = out
        layers.append(nn.Conv2d(channels, dim, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return rearrange(self.net(x), "n d h w -> n (h w) d")


MOVED = 2 / 32  # a colour change of 1/32 of the [-1, 1] range marks a pixel as moving


def reconstruction_errors(prediction: Tensor, target: Tensor, previous: Tensor,
                          moving_weight: float = 0.0) -> tuple[Tensor, Tensor]:
    """Mean squared and absolute errors of ``prediction`` against ``target`` (B, 3, T, H, W), each
    pixel weighted ``1 + moving_weight`` where ``target`` differs from ``previous`` by more than
    ``MOVED`` in some channel, else 1, the weights normalised to mean 1 per clip (0: plain means)."""
    err = prediction.float() - target.float()
    if moving_weight == 0:
        return err.pow(2).mean(), err.abs().mean()
    moved = ((target.float() - previous.float()).abs().amax(1, keepdim=True) > MOVED).float()
    weight = 1 + moving_weight * moved  # (B, 1, T, H, W)
    weight = weight / weight.mean(dim=(1, 2, 3, 4), keepdim=True)
    return (weight * err.pow(2)).mean(), (weight * err.abs()).mean()


class LatentActionModel(nn.Module, Checkpointable):
    """Encoder (frames -> one continuous latent per transition) -> VQ -> decoder (past frames +
    quantised actions -> next frames).

    Alignment (docs/design.md): a clip of T frames has T-1 actions and ``actions[:, t]`` takes frame t
    to frame t+1. The encoder is causal in time, and the action of transition t is read from its
    output at frame t+1, so it depends on frames <= t+1 only. The decoder's input at position t
    is frame t plus action t and its output there predicts frame t+1; it never sees frame t+1.
    """

    kind = "lam"
    config_section = "lam"

    def __init__(self, cfg: LamConfig) -> None:
        super().__init__()
        self.config = cfg
        p, dim = cfg.patch_size, cfg.model_dim
        patch_dim = 3 * p * p
        # Encoder: patches of x_t (and of x_t - x_{t-1}) -> ST-transformer -> pooled -> action latent.
        in_frames = 2 if cfg.frame_diff else 1
        if cfg.stem == "conv":
            self.encoder_in: nn.Module = ConvStem(3 * in_frames, dim, p, cfg.stem_channels)
        else:
            self.encoder_in = nn.Linear(patch_dim * in_frames, dim)
        rotary = cfg.spatial_positions == "rotary"
        self.encoder = STTransformer(dim, cfg.encoder_depth, cfg.heads, qk_norm=cfg.qk_norm,
                                     rotary_grid=rotary, grid_prefix=int(cfg.pooling == "token"))
        if cfg.pooling == "token":
            self.action_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.to_action = nn.Linear(dim, cfg.action_dim)
        self.vq = VectorQuantizer(
            cfg.num_actions, cfg.action_dim, commitment_weight=cfg.commitment_weight,
            codebook_weight=cfg.codebook_weight, ema_decay=cfg.codebook_ema,
            normalize=cfg.normalize_codes, dead_code_fraction=cfg.dead_code_fraction,
            usage_decay=cfg.usage_decay)
        # Decoder: patches of x_t + embedding of action t -> ST-transformer -> patches of x_{t+1}.
        self.decoder_in = nn.Linear(patch_dim, dim)
        self.action_in = nn.Linear(cfg.action_dim, dim)
        self.decoder = STTransformer(dim, cfg.decoder_depth, cfg.heads, qk_norm=cfg.qk_norm,
                                     rotary_grid=rotary)
        self.decoder_out = nn.Linear(dim, patch_dim)
        if cfg.predict_residual:
            # Start as "the next frame equals this one"; learning then only has to model change.
            nn.init.zeros_(self.decoder_out.weight)
            nn.init.zeros_(self.decoder_out.bias)

    # ------------------------------------------------------------------------------ helpers
    @property
    def num_actions(self) -> int:
        return self.config.num_actions

    def _check(self, video: Tensor, min_frames: int) -> None:
        if video.ndim != 5 or video.shape[1] != 3:
            raise GenieError(f"LAM expects video (B, 3, T, H, W), got shape {tuple(video.shape)}")
        p = self.config.patch_size
        if video.shape[-2] % p or video.shape[-1] % p:
            raise GenieError(f"frame size {tuple(video.shape[-2:])} is not a multiple of the LAM "
                             f"patch size {p}")
        if video.shape[2] < min_frames:
            raise GenieError(f"LAM needs at least {min_frames} frames, got {video.shape[2]}")

    def _patches(self, video: Tensor) -> Tensor:
        p = self.config.patch_size
        return rearrange(video, "b c t (h p1) (w p2) -> b t (h w) (p1 p2 c)", p1=p, p2=p)

    def _unpatch(self, patches: Tensor, height: int) -> Tensor:
        p = self.config.patch_size
        return rearrange(patches, "b t (h w) (p1 p2 c) -> b c t (h p1) (w p2)", p1=p, p2=p,
                         h=height // p, c=3)

    def _grid(self, video: Tensor) -> tuple[int, int]:
        return video.shape[-2] // self.config.patch_size, video.shape[-1] // self.config.patch_size

    @property
    def _overlapping(self) -> bool:
        stride = self.config.patch_stride
        return stride is not None and stride != self.config.patch_size

    def _encoder_grid(self, video: Tensor) -> tuple[int, int]:
        if not self._overlapping:
            return self._grid(video)
        p, s = self.config.patch_size, self.config.patch_stride
        return (video.shape[-2] - p) // s + 1, (video.shape[-1] - p) // s + 1

    def _overlapping_patches(self, frames: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, T, h*w, (p1 p2 c)) patches every patch_stride pixels."""
        p, s = self.config.patch_size, self.config.patch_stride
        B, C = frames.shape[:2]
        cols = F.unfold(rearrange(frames, "b c t h w -> (b t) c h w"), p, stride=s)  # (BT, C*p*p, L)
        return rearrange(cols, "(b t) (c p1 p2) l -> b t l (p1 p2 c)", b=B, c=C, p1=p)

    def _positions(self, grid: tuple[int, int], x: Tensor) -> Tensor | float:
        """Additive patch positions (S, D) for an h x w grid, or 0 where attention rotates by
        position instead."""
        if self.config.spatial_positions == "rotary":
            return 0.0
        return sincos_2d(*grid, self.config.model_dim, x.device).to(x.dtype)

    def _transform(self, net: STTransformer, x: Tensor, grid: tuple[int, int]) -> Tensor:
        return net(x, grid=grid if self.config.spatial_positions == "rotary" else None)

    # ------------------------------------------------------------------------------ model
    def encode(self, video: Tensor) -> Tensor:
        """Continuous action latents (B, T-1, action_dim) of video (B, 3, T, H, W) in [-1, 1].

        Latent t is read from the encoder's output at frame t+1 (its action token, or the mean of
        its patches): causal temporal attention means it depends on frames <= t+1 only.
        """
        self._check(video, 2)
        frames = video
        if self.config.frame_diff:
            previous = torch.cat((video[:, :, :1], video[:, :, :-1]), dim=2)  # x_{t-1}; x_0 for t=0
            frames = torch.cat((video, video - previous), dim=1)  # (B, 6, T, H, W)
        if self.config.stem == "conv":
            B = video.shape[0]
            x = self.encoder_in(rearrange(frames, "b c t h w -> (b t) c h w"))  # (B*T, S, D)
            x = rearrange(x, "(b t) s d -> b t s d", b=B)
        elif self._overlapping:
            x = self.encoder_in(self._overlapping_patches(frames))  # (B, T, S', D)
        else:
            x = self.encoder_in(self._patches(frames))  # (B, T, S, D)
        grid = self._encoder_grid(video)
        x = x + self._positions(grid, x)
        if self.config.pooling == "token":
            B, T = x.shape[:2]
            token = self.action_token.to(x.dtype).expand(B, T, 1, -1)
            x = torch.cat((token, x), dim=2)  # (B, T, 1 + S, D): the token joins spatial attention
            pooled = self._transform(self.encoder, x, grid)[:, 1:, 0]  # (B, T-1, D)
        else:
            pooled = self._transform(self.encoder, x, grid)[:, 1:].mean(dim=2)  # (B, T-1, D)
        return self.to_action(pooled)  # (B, T-1, action_dim)

    def decode(self, context: Tensor, actions: Tensor) -> Tensor:
        """Predict frames 1..T' from context frames 0..T'-1 (B, 3, T', H, W) and the action
        vectors (B, T', action_dim) taking each to the next; returns (B, 3, T', H, W)."""
        self._check(context, 1)
        patches = self._patches(context)  # (B, T', S, P)
        grid = self._grid(context)
        x = (self.decoder_in(patches) + self._positions(grid, patches)
             + self.action_in(actions)[:, :, None, :])  # action broadcast over space
        h = self._transform(self.decoder, x, grid)  # (B, T', S, D)
        # The pixel head runs in fp32 even under bf16 autocast: the change it adds to x_t is
        # often a few pixels, and bf16 rounding noise on every static pixel would swamp it.
        with torch.autocast(device_type=h.device.type, enabled=False):
            out = self.decoder_out(h.float())  # (B, T', S, P)
            if self.config.predict_residual:
                out = out + patches.float()
        return self._unpatch(out, context.shape[-2])

    def decode_ids(self, context: Tensor, ids: Tensor) -> Tensor:
        """``decode`` with integer actions (B, T') instead of vectors."""
        return self.decode(context, self.vq.lookup(ids).to(context.dtype))

    def forward(self, video: Tensor, quantize: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """Training objective on video (B, 3, T, H, W): reconstruction of frames 1..T-1 + VQ loss.

        aux holds the scalar terms, ``ids`` (B, T-1) and ``prediction`` (B, 3, T-1, H, W).
        The losses are the same in eval mode (only codebook bookkeeping is training-only).
        ``quantize=False`` (the first ``continuous_steps`` of training) hands the decoder the
        continuous latent instead of its code; ``ids`` still names the nearest codes.
        """
        z = self.encode(video)
        if quantize:
            q = self.vq(z)
        else:
            zero = z.new_zeros((), dtype=torch.float32)
            ids = self.vq.nearest(z)
            counts = torch.bincount(ids.reshape(-1), minlength=self.num_actions).float()
            probs = counts / counts.sum()
            perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
            q = QuantizerOutput(z, ids, zero, zero, zero, perplexity)
        prediction = self.decode(video[:, :, :-1], q.quantized.to(video.dtype))
        target = video[:, :, 1:]
        mse, l1 = reconstruction_errors(prediction, target, video[:, :, :-1], self.config.moving_weight)
        recon = {"mse": mse, "l1": l1, "mse+l1": mse + l1}[self.config.recon_loss]
        loss = recon + q.loss
        aux = {"recon_loss": recon.detach(), "mse": mse.detach(), "l1": l1.detach(),
               "vq_loss": q.loss.detach(), "commitment": q.commitment, "codebook": q.codebook,
               "perplexity": q.perplexity, "ids": q.ids, "prediction": prediction.detach()}
        return loss, aux

    # ------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def infer_window(self, video: Tensor) -> Tensor:
        """Action ids (B, T-1) int64 of one window of frames, no windowing."""
        return self.vq.nearest(self.encode(video))

    @torch.no_grad()
    def infer_actions(self, video: Tensor, window: int | None = None,
                      overlap: int | None = None) -> Tensor:
        """Action ids (B, T-1) int64 for video (B, 3, T, H, W) in [-1, 1], windowed when T is
        longer than the training context (see ``infer_actions_stream``)."""
        self._check(video, 2)
        return self.infer_actions_stream([video], window, overlap)

    @torch.no_grad()
    def infer_actions_stream(self, chunks: Iterable[Tensor], window: int | None = None,
                             overlap: int | None = None) -> Tensor:
        """Action ids (B, T-1) for a video given as consecutive chunks (B, 3, t_i, H, W).

        Windows of ``window`` frames (default ``context_frames``) step by ``window - overlap``;
        each transition is taken from exactly one window: the first window gives all of its
        transitions, every later one those after the previous window's last frame, so each has
        at least ``overlap - 1`` frames of past inside its window. Only one window of frames is
        held at a time.
        """
        window = window or self.config.context_frames
        overlap = self.config.window_overlap if overlap is None else overlap
        if window < 2 or not 1 <= overlap < window:
            raise ValueError(f"need window >= 2 and 1 <= overlap < window, got {window}, {overlap}")
        buffer: Tensor | None = None
        start = 0  # absolute index of buffer's first frame
        claimed = 0  # first transition not yet assigned an action
        out: list[Tensor] = []

        def run(frames: Tensor) -> None:
            nonlocal claimed
            ids = self.infer_window(frames)  # transitions start .. start + t - 2
            out.append(ids[:, claimed - start:])
            claimed = start + frames.shape[2] - 1

        for chunk in chunks:
            buffer = chunk if buffer is None else torch.cat((buffer, chunk), dim=2)
            while buffer.shape[2] >= window:
                run(buffer[:, :, :window])
                buffer = buffer[:, :, window - overlap:]
                start += window - overlap
        total = start + (0 if buffer is None else buffer.shape[2])
        if buffer is None or total < 2:
            raise GenieError(f"need at least 2 frames to infer actions, got {total}")
        if start + buffer.shape[2] - 2 >= claimed:  # unassigned transitions remain
            run(buffer)
        return torch.cat(out, dim=1)
