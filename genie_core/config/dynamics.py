"""Dynamics model config (Genie §2.1 and appendix: a MaskGIT ST-transformer over the tokenizer's
ids, latent actions as additive embeddings) and its MaskGIT sampling defaults (Chang et al. 2022).

``code_bits``, ``token_size`` and ``num_actions`` describe the tokenizer and the LAM the model is
paired with, so a preset leaves them unset (None): they are derived from the trained models when
a world is paired (``genie_core.models.world.paired_dynamics_config``), or from the preset's own
tokenizer, LAM and data for a model built from the preset alone
(``genie_core.config.dynamics_config_for_preset``). A value a preset does state that disagrees
with the trained models is reported, never used silently. No torch import here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Schedule = Literal["cosine", "linear", "square", "sqrt"]
Unmask = Literal["confidence", "random"]
Render = Literal["tokens", "replenish"]
SpatialPositions = Literal["learned", "rotary", "both"]
ActionSource = Literal["latent", "truth"]


@dataclass(frozen=True)
class SamplingConfig:
    """Iterative MaskGIT decoding of one frame (defaults for ``genie play`` and evaluation)."""

    steps: int = 25  # the paper's 25 steps
    temperature: float = 1.0  # divides the LOGITS; 0 picks the most likely token
    schedule: Schedule = "cosine"  # fraction still masked after step i of n
    unmask: Unmask = "confidence"  # which sampled tokens to keep: most confident, or random
    choice_temperature: float = 0.0  # MaskGIT's annealed Gumbel noise on the confidences (0: none)
    # How a generated frame becomes pixels. "tokens": its ids decoded. "replenish": the same, but
    # each token patch whose id is the one the previous frame had there keeps the previous frame's
    # pixels (conditional replenishment, as in video codecs): the prompt's real pixels stay until
    # the world changes their tokens. The ids, and so the sampling, are the same either way.
    render: Render = "tokens"
    # Added to the logit of the id each token had in the previous frame: a prior that the world
    # stays as it is where the model is unsure (exp(keep_bias) times the odds of keeping a token's
    # id; with the vocabulary split into G bit groups, each group's digit gets it, so about
    # exp(G * keep_bias) for the whole id). 0: the model's own distribution.
    keep_bias: float = 0.0
    # Nucleus sampling: each token (each bit group's digit) is drawn only from its most likely ids
    # whose probabilities add up to top_p, so the long tail of unlikely ids, which over 256 tokens
    # a frame changes some token somewhere at every step, is never drawn. 1: the whole distribution.
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"sampling.steps must be >= 1, got {self.steps}")
        if self.temperature < 0:
            raise ValueError(f"sampling.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"sampling.top_p must be in (0, 1], got {self.top_p}")
        if not math.isfinite(self.keep_bias):
            raise ValueError(f"sampling.keep_bias must be a finite number, got {self.keep_bias}")
        if self.render not in ("tokens", "replenish"):
            raise ValueError(f"sampling.render must be tokens or replenish, got {self.render!r}")
        if self.choice_temperature < 0:
            raise ValueError(f"sampling.choice_temperature must be >= 0, got {self.choice_temperature}")


@dataclass(frozen=True)
class DynamicsConfig:
    """MaskGIT ST-transformer over token ids (B, T, h, w) with vocabulary 2**code_bits."""

    # What the model is paired with; None: derived from the tokenizer / LAM / data (see above).
    code_bits: int | None = None  # ids are in [0, 2**code_bits): the LFQ tokenizer's total bits
    token_size: tuple[int, int] | None = None  # (h, w) tokens per frame
    num_actions: int | None = None  # the LAM's codebook size (or the game's action count with true actions)
    context_frames: int = 16  # frames a generated frame attends to, itself included
    # "latent": the LAM's actions (Genie); "truth": the sidecars' ground-truth actions, an oracle
    # that separates a LAM failure from a dynamics failure and gives a world driven by the
    # game's own actions (named by ``action_names`` where the data gives names).
    action_source: ActionSource = "latent"
    action_names: tuple[str, ...] = ()

    # The transformer (Genie's CoinRun dynamics: 12 layers x 512).
    model_dim: int = 256
    depth: int = 4
    heads: int = 4
    qk_norm: bool = True
    ffw_mult: float = 4.0
    # Positions in spatial attention: a learned table per token, 2-D rotary (relative offsets:
    # one motion rule at every position), or both.
    spatial_positions: SpatialPositions = "learned"

    # Factorised vocabulary: ids split into groups of at most this many bits, each with its own
    # input embedding (summed) and softmax head (losses summed): 18 bits -> two 512-way heads.
    max_group_bits: int = 10

    # Training mask (Genie §2.1): frames after the first, Bernoulli at a rate ~ U(min, max).
    mask_rate_min: float = 0.5
    mask_rate_max: float = 1.0
    # Share of training samples whose history is clean: frames before a random cut k >= 1 are
    # left unmasked (as in play, where every past frame is known) and frames from k on are
    # masked at the sample's rate. 0 is the paper's scheme.
    clean_history: float = 0.0
    # Loss weight of positions whose token differs from the previous frame's (1: plain mean).
    # On mostly static scenes copying the last frame is right at most positions; this weight
    # keeps the motion from drowning in them.
    changed_weight: float = 1.0

    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        if self.code_bits is not None and not 1 <= self.code_bits <= 30:
            raise ValueError(f"code_bits must be in [1, 30], got {self.code_bits}")
        if self.token_size is not None and min(self.token_size) < 1:
            raise ValueError(f"token_size must be positive, got {self.token_size}")
        if self.num_actions is not None and self.num_actions < 1:
            raise ValueError(f"num_actions must be >= 1, got {self.num_actions}")
        if self.context_frames < 2:
            raise ValueError(f"context_frames must be >= 2, got {self.context_frames}")
        if self.model_dim < 1 or self.depth < 1 or self.heads < 1:
            raise ValueError("model_dim, depth and heads must be >= 1")
        if self.model_dim % self.heads:
            raise ValueError(f"model_dim {self.model_dim} is not divisible by heads {self.heads}")
        if (self.model_dim // self.heads) % 2:
            raise ValueError(f"head size {self.model_dim // self.heads} must be even (rotary positions)")
        if not 1 <= self.max_group_bits <= 16:
            raise ValueError(f"max_group_bits must be in [1, 16], got {self.max_group_bits}")
        if not 0.0 <= self.clean_history <= 1.0:
            raise ValueError(f"clean_history must be in [0, 1], got {self.clean_history}")
        if self.changed_weight <= 0:
            raise ValueError(f"changed_weight must be > 0, got {self.changed_weight}")
        if self.spatial_positions != "learned" and (self.model_dim // self.heads) % 4:
            raise ValueError(f"spatial_positions={self.spatial_positions!r} needs a head size divisible by 4, "
                             f"got {self.model_dim // self.heads}")
        if self.action_names and self.num_actions is not None and len(self.action_names) != self.num_actions:
            raise ValueError(f"{len(self.action_names)} action_names for num_actions={self.num_actions}")
        if not 0.0 < self.mask_rate_min <= self.mask_rate_max <= 1.0:
            raise ValueError(f"need 0 < mask_rate_min <= mask_rate_max <= 1, got "
                             f"{self.mask_rate_min}, {self.mask_rate_max}")

    @property
    def paired(self) -> bool:
        """Whether the values derived from the tokenizer / LAM are all set (a model can be built)."""
        return None not in (self.code_bits, self.token_size, self.num_actions)

    @property
    def group_bits(self) -> tuple[int, ...]:
        """Bits per output group, as even as possible; group 0 holds the lowest bits of an id."""
        n = math.ceil(self.code_bits / self.max_group_bits)
        base, extra = divmod(self.code_bits, n)
        return tuple(base + (1 if i < extra else 0) for i in range(n))

    @property
    def vocab_size(self) -> int:
        return 2 ** self.code_bits
