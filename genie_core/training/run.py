"""One stage's run: everything its loop touches (``Run``: model, loss wrappers, optimisers, EMA,
batches, folder), built by ``setup_run``; ``save_run`` / ``resume_run`` write and read its
checkpoint and training state (``RUN/<stage>/last.safetensors``, ``state.safetensors``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from genie_core.config import GenieConfig, OptimConfig, to_dict
from genie_core.errors import GenieError
from genie_core.io.checkpoint_format import read_checkpoint, save_checkpoint
from genie_core.runtime import compile_in_place
from genie_core.training.budget import Horizon
from genie_core.training.data import ClipSet, Dataset
from genie_core.training.distributed import Dist
from genie_core.training.optim import adamw, load_optimizer, optimizer_tensors
from genie_core.training.resume import STATE_FILE, train_state_info, trim_metrics
from genie_core.training.stages import Stage

Event = Callable[[dict[str, Any]], None]
LAST_FILE = "last.safetensors"


# ---- setup ------------------------------------------------------------------------------------

@dataclass
class Run:
    """Everything one stage's loop touches."""

    stage: Stage
    cfg: GenieConfig
    ocfg: OptimConfig
    model: nn.Module  # the plain model (checkpointed)
    forward: nn.Module  # loss-as-forward wrapper, DDP-wrapped when world > 1
    aux_forward: nn.Module | None  # the same for the second optimiser's loss
    opt: torch.optim.Optimizer
    aux_opt: torch.optim.Optimizer | None
    ema: nn.Module | None
    data: Dataset
    val_batches: list[dict[str, np.ndarray]]
    train_clips: ClipSet  # data.train, or its clips of train.<stage>.num_frames frames
    dir: Path
    dist: Dist
    emit: Event
    step: int = 0
    elapsed: float = 0.0  # time in training steps over all sessions (evaluation excluded)
    wall: float = 0.0  # training plus evaluation time over all sessions (the PSNR-vs-time clock)
    names: dict[str, list[str]] = field(default_factory=dict)  # optimiser -> parameter names
    horizon: Horizon | None = None  # where the schedule ends (train.<stage>.steps, or the time budget's)


class _LossForward(nn.Module):
    """Makes a stage's loss a module's forward, so DDP sees (and syncs) the computation.

    The main pass registers the whole model (DDP is told to ignore the aux parameters); the aux
    pass registers only the aux parameters and reaches the model through a plain list, so each
    DDP wrapper syncs exactly the gradients its optimiser steps and no pass has unused ones."""

    def __init__(self, stage: Stage, model: nn.Module, aux_params: list[nn.Parameter] | None = None) -> None:
        super().__init__()
        self.stage, self.aux = stage, aux_params is not None
        if self.aux:
            self.params = nn.ParameterList(aux_params)
            self._model = [model]  # not registered: the generator is not this wrapper's to sync
        else:
            self.model = model

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> Any:
        if self.aux:
            return self.stage.aux_loss(self._model[0], batch, step)
        return self.stage.loss(self.model, batch, step)


def setup_run(stage: Stage, cfg: GenieConfig, data: Dataset, run_dir: Path, d: Dist, emit: Event,
              compile: bool = False) -> Run:
    """The models, optimisers and batches of one stage. ``compile``: the loss passes (model
    forward and loss) run through ``torch.compile``, in place, so ``run.model`` and its
    checkpoints keep their plain key names (no ``_orig_mod.``)."""
    ocfg = stage.optim_config()
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    model = stage.build_model().to(stage.device)
    aux_ids = {id(p) for p in stage.aux_parameters(model)}
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    fused = stage.device.type == "cuda"
    opt, main_names = adamw([(n, p) for n, p in named if id(p) not in aux_ids], ocfg.lr, ocfg, fused)
    aux_opt, aux_names = None, []
    if aux_ids:
        aux_opt, aux_names = adamw([(n, p) for n, p in named if id(p) in aux_ids],
                                    ocfg.disc_lr or ocfg.lr, ocfg, fused)
    ema = None
    if ocfg.ema_decay > 0:
        ema = stage.build_model().to(stage.device).eval().requires_grad_(False)
        ema.load_state_dict(model.state_dict())
    forward: nn.Module = _LossForward(stage, model)
    aux_forward: nn.Module | None = None
    if aux_ids:
        aux_forward = _LossForward(stage, model, [p for n, p in named if id(p) in aux_ids])
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [stage.device.index] if stage.device.type == "cuda" else None
        DDP._set_params_and_buffers_to_ignore_for_model(forward, [f"model.{n}" for n in aux_names])
        forward = DDP(forward, device_ids=ids, find_unused_parameters=stage.ddp_find_unused)
        if aux_forward is not None:
            aux_forward = DDP(aux_forward, device_ids=ids)
    if compile:
        for module in (forward, aux_forward):
            if module is not None:
                compile_in_place(module)
    spread = data.val.spread(cfg.data.val_clips)
    B = ocfg.batch_size
    val_batches = [data.val.batch(spread[i:i + B]) for i in range(0, len(spread), B)]
    train_clips = data.train
    if ocfg.num_frames and ocfg.num_frames != cfg.data.num_frames:
        train_clips = data.train.with_frames(ocfg.num_frames)
        if len(train_clips) == 0:
            raise GenieError(f"no training video has the {ocfg.num_frames} frames "
                             f"train.{stage.name}.num_frames asks for")
    run = Run(stage, cfg, ocfg, model, forward, aux_forward, opt, aux_opt, ema, data, val_batches,
              train_clips, run_dir / stage.name, d, emit, names={"opt": main_names, "aux_opt": aux_names},
              horizon=Horizon.for_stage(ocfg.steps, ocfg.minutes, ocfg.eval_every, ocfg.save_every))
    return run


# ---- checkpoints ------------------------------------------------------------------------------

def save_run(run: Run, periodic: bool = False) -> None:
    """State first, then the model: each write is atomic, and a crash between them leaves a
    state that is at least as new as ``last.safetensors`` (resume reads only the state)."""
    if run.dist.rank != 0:
        return
    tensors = {f"model/{k}": v for k, v in run.model.state_dict().items()}
    if run.ema is not None:
        tensors.update({f"ema/{k}": v for k, v in run.ema.state_dict().items()})
    tensors.update(optimizer_tensors(run.opt, run.names["opt"], "opt"))
    if run.aux_opt is not None:
        tensors.update(optimizer_tensors(run.aux_opt, run.names["aux_opt"], "aux_opt"))
    info = {"stage": run.stage.name, "step": run.step, "elapsed": run.elapsed, "wall": run.wall,
            "world_size": run.dist.world, "seed": run.cfg.train.seed, "data": run.data.cache.fingerprint,
            "inputs": run.stage.input_digests(),
            **run.horizon.state(run.step)}
    save_checkpoint(run.dir / STATE_FILE, tensors, kind="train_state", config=to_dict(run.cfg),
                    step=run.step, extra={"train_state": json.dumps(info)})
    weights = run.ema if run.ema is not None else run.model
    extra = {"ema": str(run.ema is not None).lower(), "stage": run.stage.name}
    weights.save(run.dir / LAST_FILE, step=run.step, extra=extra)
    if periodic:
        weights.save(run.dir / f"step_{run.step:07d}.safetensors", step=run.step, extra=extra)
    run.emit({"event": "checkpoint", "stage": run.stage.name, "step": run.step,
              "path": str(run.dir / LAST_FILE)})


def resume_run(run: Run) -> None:
    """Weights, EMA, optimiser moments, step and elapsed time from ``RUN/<stage>/state.safetensors``."""
    tensors, meta = read_checkpoint(run.dir / STATE_FILE, expect_kind="train_state", device="cpu")
    info = train_state_info(run.dir / STATE_FILE, meta)
    saved_inputs, inputs = info.get("inputs") or {}, run.stage.input_digests()
    changed = [k for k in sorted(saved_inputs) if k in inputs and inputs[k] != saved_inputs[k]]
    if changed:  # its tokens or actions would change under it (a state from before this records none)
        which = " and ".join(changed)
        raise GenieError(f"{run.dir}: this {run.stage.name} run trained on another {which} than the one "
                         f"it would resume on (its weights changed since): train it again without --resume, "
                         f"or into another --out")

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + "/")}

    run.model.load_state_dict(part("model"))
    if run.ema is not None:
        ema = part("ema")
        run.ema.load_state_dict(ema if ema else run.model.state_dict())
    load_optimizer(run.opt, run.names["opt"], "opt", tensors)
    if run.aux_opt is not None:
        load_optimizer(run.aux_opt, run.names["aux_opt"], "aux_opt", tensors)
    run.step, run.elapsed, run.wall = info["step"], info["elapsed"], info["wall"]
    run.horizon.resumed(run.step, run.elapsed, run.wall, info)
    if run.dist.rank == 0:  # drop lines logged after the state we resume from
        trim_metrics(run.dir / "metrics.jsonl", run.step, run.emit)
