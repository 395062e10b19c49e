"""MaskGIT iterative decoding (Chang et al. 2022, §3.2; Genie §2.1 samples each frame this way) as a
pure function over a logits function with an explicit ``torch.Generator`` (maskgit's ``decode``).

Positions holding ``MASK_ID`` are filled; all others (the prompt) are never changed. Logits may be
factorised: a sequence of (B, N, V_g) tensors over mixed-radix digits of the id (digit 0 least
significant: with power-of-two V_g, group 0 is the lowest bits), sampled independently per digit.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["MASK_ID", "decode", "mask_schedule", "gumbel_noise", "sample_logits", "SCHEDULES"]

MASK_ID = -1  # ids use all of [0, 2**bits), so "unknown" is a negative sentinel

Logits = Tensor | Sequence[Tensor]
LogitsFn = Callable[[Tensor], Logits]

SCHEDULES: dict[str, Callable[[float], float]] = {
    # fraction of the initially masked tokens still masked after a fraction r of the steps
    "cosine": lambda r: math.cos(math.pi / 2 * r),
    "linear": lambda r: 1.0 - r,
    "square": lambda r: 1.0 - r * r,
    "sqrt": lambda r: 1.0 - math.sqrt(r),
}


def mask_schedule(name: str, ratio: float) -> float:
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r} (choose from {', '.join(SCHEDULES)})")
    return min(1.0, max(0.0, SCHEDULES[name](ratio)))


def gumbel_noise(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None,
                 device: torch.device) -> Tensor:
    """Standard Gumbel noise drawn from ``generator`` (on its own device), moved to ``device``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(shape, generator=generator, device=gen_device, dtype=torch.float32)
    u = u.clamp_(torch.finfo(torch.float32).tiny, 1.0)
    return (-torch.log(-torch.log(u))).to(device)


def sample_logits(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """One id per row of logits (..., V): argmax(logits / T + Gumbel) (Gumbel-max: no softmax and
    no multinomial needed); T = 0 is greedy."""
    if temperature == 0:
        return logits.argmax(-1)
    noise = gumbel_noise(logits.shape, generator, logits.device)
    return (logits.float() / temperature + noise).argmax(-1)


def _as_groups(logits: Logits) -> list[Tensor]:
    return [logits] if isinstance(logits, Tensor) else list(logits)


@torch.no_grad()
def decode(inputs: Tensor, generator: torch.Generator | None, tokens_to_logits: LogitsFn, *,
           steps: int = 8, temperature: float = 1.0, schedule: str = "cosine",
           unmask: str = "confidence", choice_temperature: float = 0.0) -> Tensor:
    """Fill every ``MASK_ID`` position of ``inputs`` (B, N) in ``steps`` rounds; return (B, N) ids.

    Each round: sample every masked position from ``tokens_to_logits(tokens)`` ((B, N, V) or a
    sequence of factorised (B, N, V_g)), then re-mask the least confident (``unmask="confidence"``:
    log-probability of the sampled id under the untempered logits) or a random subset
    (``"random"``) so that a fraction ``schedule(step / steps)`` of the initially masked positions
    stays masked; the last round keeps everything. ``choice_temperature`` adds MaskGIT's
    Gumbel noise to the confidences, annealed linearly to 0 over the rounds.
    """
    if inputs.ndim != 2:
        raise ValueError(f"decode expects (B, N) ids, got shape {tuple(inputs.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if unmask not in ("confidence", "random"):
        raise ValueError(f"unknown unmasking rule {unmask!r} (use confidence or random)")
    mask_schedule(schedule, 0.0)  # validate the name before any work
    tokens = inputs.clone()
    unknown = inputs == MASK_ID  # (B, N)
    num_unknown = unknown.sum(-1)  # (B,)
    for step in range(steps):
        masked = tokens == MASK_ID
        if not masked.any():
            break
        groups = _as_groups(tokens_to_logits(tokens))
        digits = [sample_logits(g, temperature, generator) for g in groups]  # each (B, N)
        sampled = torch.zeros_like(tokens)
        radix = 1
        for digit, g in zip(digits, groups):  # mixed radix, digit 0 least significant
            sampled = sampled + digit * radix
            radix *= g.shape[-1]
        sampled = torch.where(masked, sampled, tokens)
        if step == steps - 1:
            return sampled

        # How many of each sample's initially masked tokens stay masked after this round:
        # at least one fewer than now (progress), at least one (a later round has work).
        ratio = mask_schedule(schedule, (step + 1) / steps)
        keep_masked = torch.floor(num_unknown.float() * ratio).long()
        keep_masked = torch.minimum(keep_masked, masked.sum(-1) - 1).clamp(min=1)
        keep_masked = torch.where(masked.any(-1), keep_masked, torch.zeros_like(keep_masked))

        if unmask == "confidence":
            confidence = torch.zeros(tokens.shape, device=tokens.device)
            for digit, g in zip(digits, groups):
                g = g.float()
                picked = g.gather(-1, digit.unsqueeze(-1)).squeeze(-1)
                confidence += picked - torch.logsumexp(g, dim=-1)  # log p(sampled digit)
        else:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            confidence = torch.rand(tokens.shape, generator=generator, device=gen_device).to(tokens.device)
        if choice_temperature > 0:
            anneal = choice_temperature * (1.0 - (step + 1) / steps)
            confidence = confidence + anneal * gumbel_noise(tokens.shape, generator, tokens.device)
        confidence = confidence.masked_fill(~masked, math.inf)  # known tokens are never re-masked
        # rank 0 = least confident; re-mask the keep_masked lowest ranks of each row
        rank = confidence.argsort(dim=-1).argsort(dim=-1)
        remask = rank < keep_masked[:, None]
        tokens = torch.where(remask, torch.full_like(sampled, MASK_ID), sampled)
    return tokens
