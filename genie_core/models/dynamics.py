"""Dynamics model, Genie §2.1 and appendix: a MaskGIT (Chang et al. 2022) ST-transformer that predicts
the next frame's tokenizer ids from past ids and latent actions (additive embeddings).

Ids (B, T, h, w) in [0, 2**code_bits); ``MASK_ID`` (-1) marks unknown tokens. The vocabulary is
factorised into bit groups: input embedding = sum of group embeddings, output = one softmax per
group, loss = sum of group cross-entropies. ``actions[:, t]`` (B, T-1) took frame t to frame t+1
and is added to frame t+1's tokens; frame 0 gets a learned "no action" embedding.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from genie_core.config.dynamics import DynamicsConfig, SamplingConfig
from genie_core.io.checkpoint_format import Checkpointable
from genie_core.models.layers.st_transformer import KVCache, STTransformer, linear2d
from genie_core.models.sampling import MASK_ID, decode

__all__ = ["DynamicsModel", "random_future_mask", "masked_cross_entropy", "split_ids", "join_ids"]


# ----------------------------------------------------------------------------- bit groups


def split_ids(ids: Tensor, group_bits: tuple[int, ...]) -> list[Tensor]:
    """Ids -> one digit per bit group (group 0 = lowest bits); negative ids stay negative."""
    out, shift = [], 0
    for bits in group_bits:
        out.append(torch.where(ids < 0, ids, (ids >> shift) & ((1 << bits) - 1)))
        shift += bits
    return out


def join_ids(digits: list[Tensor], group_bits: tuple[int, ...]) -> Tensor:
    """Inverse of split_ids for non-negative digits."""
    ids, shift = torch.zeros_like(digits[0]), 0
    for digit, bits in zip(digits, group_bits):
        ids = ids | (digit << shift)
        shift += bits
    return ids


# ----------------------------------------------------------------------------- training mask and loss


def random_future_mask(shape: tuple[int, ...], rate_min: float, rate_max: float,
                       generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                       clean_history: float = 0.0) -> Tensor:
    """Bool (B, T, h, w): frames after the first masked i.i.d. at a per-sample rate ~ U(min, max)
    (Genie §2.1). With probability ``clean_history`` a sample instead keeps every frame before a
    random cut k in [1, T) clean and masks only frames k.. at its rate (what play sees: a known
    past, an unknown next frame). At least one token per sample is masked so every sample has a
    target."""
    B, T = shape[0], shape[1]
    gen_device = generator.device if generator is not None else torch.device("cpu")
    rate = rate_min + (rate_max - rate_min) * torch.rand(B, generator=generator, device=gen_device)
    u = torch.rand(shape, generator=generator, device=gen_device)
    mask = u < rate.view(B, *([1] * (len(shape) - 1)))
    mask[:, 0] = False
    if clean_history > 0:
        clean = torch.rand(B, generator=generator, device=gen_device) < clean_history
        cut = torch.randint(1, T, (B,), generator=generator, device=gen_device)
        keep = clean[:, None] & (torch.arange(T, device=gen_device)[None, :] < cut[:, None])  # (B, T)
        mask &= ~keep.view(B, T, *([1] * (len(shape) - 2)))
        u = torch.where(keep.view(B, T, *([1] * (len(shape) - 2))), torch.ones_like(u), u)
    # The per-sample most-likely-masked future token is always masked (guards tiny rates/shapes).
    flat = rearrange(u[:, 1:], "b t h w -> b (t h w)")
    first = flat.argmin(dim=1)
    mask_future = rearrange(mask[:, 1:], "b t h w -> b (t h w)").clone()
    mask_future[torch.arange(B, device=gen_device), first] = True
    mask[:, 1:] = mask_future.view_as(mask[:, 1:])
    return mask.to(device)


def masked_cross_entropy(logits: list[Tensor], targets: Tensor, group_bits: tuple[int, ...],
                         weight: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Sum over bit groups of the mean CE of group logits (N, V_g) against the ORIGINAL ids (N,),
    weighted per position by ``weight`` (N,) when given (a weighted mean).

    Metrics (detached 0-d tensors, so a compiled loss neither breaks its graph nor waits on the
    device to read them): ``loss``, ``token_acc`` (every group right) and ``ce_g{i}`` per group.
    """
    digits = split_ids(targets, group_bits)
    total, correct, metrics = 0.0, torch.ones_like(targets, dtype=torch.bool), {}
    for i, (lg, digit) in enumerate(zip(logits, digits)):
        if weight is None:
            ce = F.cross_entropy(lg.float(), digit)
        else:
            ce = (F.cross_entropy(lg.float(), digit, reduction="none") * weight).sum() / weight.sum()
        total = total + ce
        correct &= lg.argmax(-1) == digit
        if len(logits) > 1:
            metrics[f"ce_g{i}"] = ce.detach()
    metrics["loss"] = total.detach()
    metrics["token_acc"] = correct.float().mean().detach()
    return total, metrics


# ----------------------------------------------------------------------------- model


def _keep_biased(tokens_to_logits: Any, previous: Tensor, group_bits: tuple[int, ...], bias: float) -> Any:
    """``tokens_to_logits`` with ``bias`` added to the logit of ``previous`` (B, N) ids' digit in
    every bit group (``split_ids``: group 0 the lowest bits, as ``decode`` assembles ids)."""
    digits = [d[..., None] for d in split_ids(previous, group_bits)]  # each (B, N, 1)

    def biased(tokens: Tensor) -> list[Tensor]:
        out = []
        for logits, digit in zip(tokens_to_logits(tokens), digits):
            logits = logits.float()  # a small bias on bf16 logits of size ~10 would round away
            add = torch.full(digit.shape, bias, dtype=logits.dtype, device=logits.device)
            out.append(logits.scatter_add(-1, digit.to(logits.device), add))
        return out

    return biased


class DynamicsModel(nn.Module, Checkpointable):
    """MaskGIT ST-transformer over token ids with additive latent-action embeddings."""

    kind = "dynamics"
    config_section = "dynamics"

    @classmethod
    def from_preset(cls, name: str, overrides: tuple[str, ...] | list[str] = ()) -> "DynamicsModel":
        """An untrained model of a preset, paired with the preset's own tokenizer, LAM and data."""
        from genie_core.config import dynamics_config_for_preset, load_preset
        return cls(dynamics_config_for_preset(load_preset(name, overrides)))

    def __init__(self, cfg: DynamicsConfig) -> None:
        super().__init__()
        if not cfg.paired:  # a ValueError: a checkpoint holding such a config "does not match" it
            raise ValueError("a dynamics model needs dynamics.code_bits, token_size and num_actions: "
                             "pair it with a tokenizer and LAM (DynamicsModel.from_preset does)")
        self.config = cfg
        self.group_bits = cfg.group_bits
        D, (h, w) = cfg.model_dim, cfg.token_size
        self.token_emb = nn.ModuleList(nn.Embedding(2 ** b, D) for b in self.group_bits)
        self.mask_emb = nn.Parameter(torch.zeros(D))
        learned = cfg.spatial_positions in ("learned", "both")
        # Learned spatial positions (a zero buffer when the positions are rotary only).
        if learned:
            self.pos_emb = nn.Parameter(torch.zeros(h * w, D))
        else:
            self.register_buffer("pos_emb", torch.zeros(h * w, D), persistent=False)
        self.action_emb = nn.Embedding(cfg.num_actions + 1, D)  # last row: "no action" (frame 0)
        grid = (h, w) if cfg.spatial_positions in ("rotary", "both") else None
        self.transformer = STTransformer(D, cfg.depth, cfg.heads, cfg.qk_norm, cfg.ffw_mult, grid=grid)
        self.head = nn.Linear(D, sum(2 ** b for b in self.group_bits))
        for emb in (*self.token_emb, self.action_emb):
            nn.init.normal_(emb.weight, std=0.02)
        nn.init.normal_(self.mask_emb, std=0.02)
        if learned:
            nn.init.normal_(self.pos_emb, std=0.02)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    # ---- shapes ------------------------------------------------------------------------
    @property
    def token_size(self) -> tuple[int, int]:
        return self.config.token_size

    @property
    def num_actions(self) -> int:
        return self.config.num_actions

    @property
    def context_frames(self) -> int:
        return self.config.context_frames

    def _check_ids(self, ids: Tensor) -> None:
        if ids.ndim != 4 or tuple(ids.shape[2:]) != tuple(self.token_size):
            raise ValueError(f"dynamics expects ids (B, T, {self.token_size[0]}, {self.token_size[1]}), "
                             f"got shape {tuple(ids.shape)}")

    # ---- embedding and head ------------------------------------------------------------
    def embed(self, ids: Tensor, frame_actions: Tensor) -> Tensor:
        """ids (B, T, h, w) with MASK_ID allowed, frame_actions (B, T) (the action that produced
        each frame; negative = none) -> (B, T, S, D)."""
        tokens = rearrange(ids, "b t h w -> b t (h w)")
        masked = tokens < 0
        x = sum(emb(digit.clamp(min=0)) for emb, digit in zip(self.token_emb, split_ids(tokens, self.group_bits)))
        x = torch.where(masked[..., None], self.mask_emb.to(x.dtype), x)
        none = torch.full_like(frame_actions, self.num_actions)
        acts = torch.where(frame_actions < 0, none, frame_actions)
        # A data-dependent check: a compiled graph would break on it (and wait on the device) every
        # step, so it runs eagerly only; compiled code still bounds-checks the embedding's index.
        if not torch.compiler.is_compiling() and (acts > self.num_actions).any():
            raise ValueError(f"actions must be < num_actions={self.num_actions}")
        # Additive action conditioning (Genie §2.1: better than concatenation), one per frame.
        return x + self.pos_emb + self.action_emb(acts)[:, :, None, :]  # (B, T, S, D)

    def logits(self, hidden: Tensor) -> list[Tensor]:
        """hidden (..., D) -> one logits tensor (..., 2**bits_g) per bit group."""
        return list(linear2d(self.head, hidden).split([2 ** b for b in self.group_bits], dim=-1))

    @staticmethod
    def frame_actions(actions: Tensor | None, batch: int, frames: int, device: torch.device) -> Tensor:
        """Transition actions (B, T-1) -> per-frame actions (B, T): frame t+1 gets actions[:, t]."""
        none = torch.full((batch, 1), -1, dtype=torch.long, device=device)
        if actions is None:
            return none.expand(batch, frames)
        if actions.shape != (batch, frames - 1):
            raise ValueError(f"expected actions of shape ({batch}, {frames - 1}) for {frames} frames, "
                             f"got {tuple(actions.shape)}")
        return torch.cat((none, actions.long()), dim=1)

    # ---- forward -----------------------------------------------------------------------
    def forward(self, ids: Tensor, actions: Tensor | None = None, select: Tensor | None = None) -> list[Tensor]:
        """Logits for ids (B, T, h, w) (MASK_ID where unknown) given actions (B, T-1).

        Returns per bit group (B, T, h, w, V_g), or (N, V_g) at the N positions where the bool
        ``select`` (B, T, h, w) is True (the training loss needs only the masked ones).
        """
        self._check_ids(ids)
        B, T, h, w = ids.shape
        x = self.embed(ids, self.frame_actions(actions, B, T, ids.device))
        hidden = self.transformer(x, window=self.context_frames)  # (B, T, S, D)
        hidden = rearrange(hidden, "b t (h w) d -> b t h w d", h=h)
        if select is not None:
            hidden = hidden[select]  # (N, D)
        return self.logits(hidden)

    def loss(self, ids: Tensor, actions: Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """MaskGIT training loss on clean ids (B, T, h, w): mask future frames at a rate ~ U(0.5, 1),
        cross-entropy against the original ids at the masked positions only."""
        cfg = self.config
        mask = random_future_mask(tuple(ids.shape), cfg.mask_rate_min, cfg.mask_rate_max,
                                  generator, ids.device, clean_history=cfg.clean_history)
        logits = self(ids.masked_fill(mask, MASK_ID), actions, select=mask)
        weight = None
        if cfg.changed_weight != 1.0:
            changed = torch.zeros_like(mask)
            changed[:, 1:] = ids[:, 1:] != ids[:, :-1]
            weight = 1.0 + (cfg.changed_weight - 1.0) * changed[mask].float()
        return masked_cross_entropy(logits, ids[mask], self.group_bits, weight)

    # ---- frame-by-frame generation -----------------------------------------------------
    @property
    def receptive_frames(self) -> int:
        """How many past frames can reach the next one through the banded mask: each of the
        ``depth`` layers looks ``context_frames - 1`` frames back."""
        return self.config.depth * (self.context_frames - 1)

    def new_cache(self) -> KVCache:
        """A KV cache over at most ``context_frames`` frames (the window slides past that)."""
        return self.transformer.new_cache(self.context_frames)

    def prefill(self, ids: Tensor, actions: Tensor | None = None, cache: KVCache | None = None) -> KVCache:
        """Run context ids (B, T, h, w) (actions (B, T-1) between them) into a cache.

        Into a fresh cache the first frame gets "no action"; frames appended to a non-empty
        cache need one action each: pass ``actions`` of shape (B, T) then."""
        self._check_ids(ids)
        B, T = ids.shape[:2]
        cache = self.new_cache() if cache is None else cache
        if cache.position == 0:
            frame_actions = self.frame_actions(actions, B, T, ids.device)
        else:
            if actions is None or actions.shape != (B, T):
                raise ValueError("frames appended to a cache need one action each, shape (B, T)")
            frame_actions = actions.long()
        self.transformer(self.embed(ids, frame_actions), cache, update_cache=True, output=False)
        return cache

    def next_logits(self, cache: KVCache, ids: Tensor, action: Tensor) -> list[Tensor]:
        """Logits (B, h, w, V_g) of the frame right after the cache: ids (B, h, w) with MASK_ID,
        ``action`` (B,) the action taken at the last cached frame. The cache is not changed."""
        x = self.embed(ids[:, None], action.long()[:, None])
        hidden = self.transformer(x, cache, update_cache=False)[:, 0]  # (B, S, D)
        return self.logits(rearrange(hidden, "b (h w) d -> b h w d", h=self.token_size[0]))

    def recompute_logits(self, context: Tensor, context_actions: Tensor | None, ids: Tensor,
                         action: Tensor) -> list[Tensor]:
        """``next_logits`` without a cache: the frame right after the session's ids ``context``
        (B, T, h, w) (from its first frame on; ``context_actions`` (B, T-1) between them), by the
        banded forward of training over the last ``receptive_frames`` of them (earlier frames
        cannot reach the new one), each with its real action and its own time position."""
        self._check_ids(context)
        B, T = context.shape[:2]
        if context_actions is None and T > 1:
            raise ValueError("context ids of more than one frame need context_actions (B, T-1)")
        act = action.long()[:, None]
        trans = act if context_actions is None else torch.cat((context_actions.long(), act), 1)
        acts = self.frame_actions(trans, B, T + 1, context.device)  # (B, T+1): frame 0 "no action"
        first = T - min(T, self.receptive_frames)
        x = self.embed(torch.cat((context[:, first:], ids[:, None]), dim=1), acts[:, first:])
        hidden = self.transformer(x, window=self.context_frames, start=first)[:, -1]  # (B, S, D)
        return self.logits(rearrange(hidden, "b (h w) d -> b h w d", h=self.token_size[0]))

    def generate_next(self, context: KVCache | Tensor, action: Tensor, *,
                      context_actions: Tensor | None = None, sampling: SamplingConfig | None = None,
                      generator: torch.Generator | None = None, prompt: Tensor | None = None,
                      previous: Tensor | None = None, **overrides: Any) -> Tensor:
        """Sample the next frame's ids (B, h, w) by MaskGIT decoding.

        ``context``: a KVCache (from ``prefill``/earlier calls; the new frame is appended to it, so
        each frame costs the same however long the session), or the session's ids (B, T, h, w)
        from its first frame on, with ``context_actions`` (B, T-1), recomputed from scratch at
        every MaskGIT step by the banded forward of training (no cache; only the last
        ``receptive_frames`` frames can reach the new one, so only those are run, each with its
        real action). Both give the same logits. ``action`` (B,) takes the last context frame
        to the new one. ``sampling`` defaults to the config's; keyword ``overrides`` (steps,
        temperature, schedule, unmask, choice_temperature, top_p) replace single fields. ``prompt``
        (B, h, w) may fix some tokens of the new frame (MASK_ID elsewhere). ``sampling.keep_bias``
        is added to the logit of each token's id in the last context frame: ``previous`` (B, h, w),
        which a KVCache context needs (the cache holds no ids); ids context gives it itself.
        """
        sampling = dataclasses.replace(sampling or self.config.sampling, **overrides)
        B = action.shape[0]
        h, w = self.token_size
        device = action.device
        start = torch.full((B, h * w), MASK_ID, dtype=torch.long, device=device) if prompt is None \
            else rearrange(prompt, "b h w -> b (h w)").long()

        if isinstance(context, KVCache):
            def tokens_to_logits(tokens: Tensor) -> list[Tensor]:
                frame = rearrange(tokens, "b (h w) -> b h w", h=h)
                return [rearrange(lg, "b h w v -> b (h w) v") for lg in self.next_logits(context, frame, action)]
        else:
            self._check_ids(context)

            def tokens_to_logits(tokens: Tensor) -> list[Tensor]:
                frame = rearrange(tokens, "b (h w) -> b h w", h=h)
                return [rearrange(lg, "b h w v -> b (h w) v")
                        for lg in self.recompute_logits(context, context_actions, frame, action)]

        if sampling.keep_bias:
            if previous is None and isinstance(context, KVCache):
                raise ValueError("sampling.keep_bias needs the previous frame's ids (previous=) with a KVCache context")
            last = context[:, -1] if previous is None else previous
            tokens_to_logits = _keep_biased(tokens_to_logits, rearrange(last.long(), "b h w -> b (h w)"),
                                            self.group_bits, sampling.keep_bias)
        new = decode(start, generator, tokens_to_logits, steps=sampling.steps, temperature=sampling.temperature,
                     schedule=sampling.schedule, unmask=sampling.unmask,
                     choice_temperature=sampling.choice_temperature, top_p=sampling.top_p)
        new = rearrange(new, "b (h w) -> b h w", h=h)
        if isinstance(context, KVCache):
            self.prefill(new[:, None], action[:, None], cache=context)  # commit the frame
        return new
