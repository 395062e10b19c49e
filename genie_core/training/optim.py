"""Optimiser pieces of the training loop: AdamW with weight decay on matrices only, the learning
rate schedule (warmup, then cosine or warmup-stable-decay), and optimiser state as named tensors
(saved in safetensors, no pickle)."""

from __future__ import annotations

import math

import torch
from torch import nn

from genie_core.config import OptimConfig


def adamw(named: list[tuple[str, nn.Parameter]], lr: float, ocfg: OptimConfig,
          fused: bool) -> tuple[torch.optim.Optimizer, list[str]]:
    """AdamW with weight decay on matrices and conv kernels only (ndim >= 2), not on biases/norms."""
    decay = [(n, p) for n, p in named if p.ndim >= 2]
    no_decay = [(n, p) for n, p in named if p.ndim < 2]
    groups = [{"params": [p for _, p in decay], "weight_decay": ocfg.weight_decay},
              {"params": [p for _, p in no_decay], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=ocfg.betas, fused=fused or None)
    return opt, [n for n, _ in decay + no_decay]  # state_dict ids follow this order


def learning_rate(step: int, ocfg: OptimConfig, total: int | None = None) -> float:
    """Linear warmup, then cosine to the floor or (wsd) flat with a linear cooldown at the end,
    over ``total`` steps (default ``ocfg.steps``; a time-budgeted stage passes its horizon)."""
    steps = ocfg.steps if total is None else total
    if step < ocfg.warmup_steps:
        return ocfg.lr * (step + 1) / ocfg.warmup_steps
    floor = ocfg.lr * ocfg.min_lr_ratio
    if ocfg.schedule == "cosine":
        progress = min(1.0, (step - ocfg.warmup_steps) / max(1, steps - ocfg.warmup_steps))
        return floor + (ocfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    decay_start = max(ocfg.warmup_steps, steps - round(ocfg.cooldown_fraction * steps))
    progress = min(1.0, max(0, step - decay_start) / max(1, steps - decay_start))
    return ocfg.lr + (floor - ocfg.lr) * progress


def optimizer_tensors(opt: torch.optim.Optimizer, names: list[str], prefix: str) -> dict[str, torch.Tensor]:
    """Every state tensor of ``opt`` as ``prefix/<parameter name>/<slot>`` (slot: exp_avg, ...)."""
    out = {}
    for pid, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            out[f"{prefix}/{names[pid]}/{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def load_optimizer(opt: torch.optim.Optimizer, names: list[str], prefix: str,
                   tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of ``optimizer_tensors`` (``names`` in the optimiser's parameter order)."""
    by_name: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        head, _, rest = key.partition("/")
        if head == prefix:
            name, _, slot = rest.rpartition("/")
            by_name.setdefault(name, {})[slot] = value
    sd = opt.state_dict()
    sd["state"] = {pid: by_name[name] for pid, name in enumerate(names) if name in by_name}
    opt.load_state_dict(sd)
