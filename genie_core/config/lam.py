"""Latent action model config (Genie §2.1). PLACEHOLDER: the LAM work replaces this."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LamConfig:
    num_actions: int = 8
