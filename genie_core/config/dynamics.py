"""Dynamics model config (Genie §2.1, MaskGIT). PLACEHOLDER: the dynamics work replaces this."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DynamicsConfig:
    model_dim: int = 256
