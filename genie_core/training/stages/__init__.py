"""Training stages (Genie §3: tokenizer, then latent action model, then dynamics): what each model
supplies to the one training loop in ``genie_core.training.train``, and the registry of stages.

How to add a stage (this is all it takes; ``--stage NAME`` and ``--stage all`` then find it):

    # genie_core/training/stages/lam.py
    from genie_core.training.stages import Stage, register

    @register
    class LamStage(Stage):
        name = "lam"          # registry key, run sub-folder RUN/lam/, optimiser cfg.train.lam
        kind = "lam"          # checkpoint kind written to RUN/lam/last.safetensors

        def build_model(self): ...            # -> nn.Module with .save(path, step, extra)
        def loss(self, model, batch, step): ...   # -> (scalar loss, {"name": float})
        def evaluate(self, model, batches): ...   # -> {"name": float}
        def sample_picture(self, model, batch): ...   # -> uint8 (H, W, 3)

The module must be listed in ``STAGE_MODULES`` below (it is imported lazily, so a stage whose
module does not exist yet is simply "not available").

The contract, in one place:
- ``self.cfg`` (GenieConfig, resolved preset), ``self.run_dir`` (the run folder; an earlier
  stage's weights are at ``self.checkpoint_path("tokenizer")``), ``self.device``,
  ``self.precision`` ("bf16" | "fp32") are set before ``build_model`` is called. Frozen helpers
  (a trained tokenizer for the dynamics stage, say) belong on ``self``, NOT inside the returned
  model: only the returned model is optimised, wrapped in DDP and checkpointed.
- A batch is a dict of tensors already on ``self.device``:
  ``frames`` uint8 (B, T, H, W, 3) and, only when every video has a sidecar with ground-truth
  actions, ``actions`` int64 (B, T-1) where ``actions[:, t]`` took frame t to frame t+1 (-1 where
  unknown). Use ``genie_core.io.frames.to_model`` to get float (B, 3, T, H, W) in [-1, 1].
- ``loss`` runs inside autocast (bf16 by default) and under DDP's forward; it returns the loss to
  minimise and metrics for the log (floats or 0-d tensors; averaged over the log window). It may
  store detached tensors in ``batch`` (keys
  starting with "_") for ``aux_loss`` to reuse (the tokenizer keeps its reconstruction there).
- Randomness: use the global torch RNG (or generators seeded from it). The loop reseeds it from
  (seed, step, rank) before every step, which is what makes resume exact.
- An optional second optimiser (the tokenizer's GAN discriminator): return its parameters from
  ``aux_parameters`` (they are then left out of the main optimiser), say from ``aux_active(step)``
  whether it steps at ``step`` (the tokenizer: after ``disc_start_step``) and give its loss from
  ``aux_loss``. The aux step runs after the main step on the same micro-batches, with its own
  AdamW (lr ``disc_lr``, same schedule shape).
- ``evaluate`` and ``sample_picture`` run on rank 0 under ``torch.no_grad`` and autocast with
  the model in eval mode (EMA weights when EMA is on); the loop adds nothing to their metrics.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from genie_core.errors import GenieError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from genie_core.config import GenieConfig, OptimConfig

__all__ = ["Stage", "register", "get_stage", "available_stages", "STAGE_MODULES"]

# Training order for ``--stage all``; each name maps to the module that registers it.
STAGE_MODULES: dict[str, str] = {
    "tokenizer": "genie_core.training.stages.tokenizer",
    "lam": "genie_core.training.stages.lam",
    "dynamics": "genie_core.training.stages.dynamics",
}

_REGISTRY: dict[str, type["Stage"]] = {}


class Stage:
    """One model's part in the training loop. Subclass, fill in the four methods, ``@register``."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""  # checkpoint kind (genie_core.models.load.KINDS)
    # Set True when some parameters can go unused in a loss pass (DDP must then search for them
    # every step). Not needed for aux_parameters: the loop syncs those separately.
    ddp_find_unused: ClassVar[bool] = False

    def __init__(self, cfg: "GenieConfig", run_dir: Path, device: "torch.device",
                 precision: str = "bf16", inputs: dict[str, Path] | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = device
        self.precision = precision
        # Checkpoints named on the command line (``--tokenizer``, ``--lam``), by stage name.
        self.inputs = {k: Path(v) for k, v in (inputs or {}).items() if v is not None}
        # Where a stage reports a non-fatal problem (the loop routes it to the progress display).
        self.warn: Callable[[str], None] = lambda message: None

    # ---- required -------------------------------------------------------------------------
    def build_model(self) -> "nn.Module":
        """A fresh model built from ``self.cfg`` (seeded by the loop before the call)."""
        raise NotImplementedError

    def loss(self, model: "nn.Module", batch: dict[str, "torch.Tensor"],
             step: int) -> tuple["torch.Tensor", dict[str, float]]:
        """(scalar loss, metrics) for one micro-batch at optimiser step ``step``."""
        raise NotImplementedError

    def evaluate(self, model: "nn.Module", batches: list[dict[str, "torch.Tensor"]]) -> dict[str, float]:
        """Validation metrics over the held-out batches."""
        raise NotImplementedError

    def sample_picture(self, model: "nn.Module", batch: dict[str, "torch.Tensor"]) -> "np.ndarray":
        """A uint8 (H, W, 3) picture for the run folder (e.g. originals above reconstructions)."""
        raise NotImplementedError

    # ---- optional -------------------------------------------------------------------------
    def prepare(self, data: Any) -> None:
        """Called once with the ``genie_core.training.data.Dataset`` before ``build_model`` (the dynamics
        stage tokenizes the frame cache here; batches carry ``frame_index`` (B, T) int64, the
        clips' frame numbers in ``data.cache.frames``)."""

    def finish(self) -> None:
        """Called on rank 0 after the stage trained to its last step (``last.safetensors`` written)."""

    def optim_config(self) -> "OptimConfig":
        """This stage's optimiser and schedule: ``cfg.train.<name>``."""
        return getattr(self.cfg.train, self.name)

    def aux_parameters(self, model: "nn.Module") -> list["nn.Parameter"]:
        """Parameters trained by the second optimiser (none by default)."""
        return []

    def aux_active(self, step: int) -> bool:
        """Whether the second optimiser steps at optimiser step ``step``."""
        return False

    def aux_loss(self, model: "nn.Module", batch: dict[str, "torch.Tensor"],
                 step: int) -> tuple["torch.Tensor", dict[str, float]]:
        """(loss, metrics) of the second optimiser for one micro-batch (after ``loss`` on it)."""
        raise NotImplementedError

    def checkpoint_path(self, stage: str) -> Path:
        """Where a stage's final weights live in this run: ``RUN/<stage>/last.safetensors``."""
        return self.run_dir / stage / "last.safetensors"

    def input_digests(self) -> dict[str, str]:
        """Digests of the frozen models the stage trains on (none by default): recorded in its
        state, and a resume on other inputs is refused."""
        return {}

    def describe(self, model: "nn.Module") -> dict[str, Any]:
        """A few facts for the log (parameter count by default)."""
        return {"parameters": sum(p.numel() for p in model.parameters())}


def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a Stage subclass available under ``cls.name``."""
    if not cls.name or cls.name not in STAGE_MODULES:
        raise ValueError(f"stage name {cls.name!r} must be one of {list(STAGE_MODULES)}")
    _REGISTRY[cls.name] = cls
    return cls


def get_stage(name: str) -> type[Stage]:
    """The registered stage class for ``name`` (importing its module on first use)."""
    if name not in STAGE_MODULES:
        raise GenieError(f"unknown stage '{name}' (choose from {', '.join(STAGE_MODULES)} or all)")
    if name not in _REGISTRY:
        try:
            importlib.import_module(STAGE_MODULES[name])
        except ModuleNotFoundError as err:
            if err.name != STAGE_MODULES[name]:
                raise
    if name not in _REGISTRY:
        raise GenieError(f"stage '{name}' is not available in this version of genie")
    return _REGISTRY[name]


def available_stages() -> list[str]:
    """Registered stages in training order (what ``--stage all`` runs)."""
    out = []
    for name in STAGE_MODULES:
        try:
            get_stage(name)
        except GenieError:
            continue
        out.append(name)
    return out
