"""The one training loop for all three models (Genie §3; nanoGPT-style): setup and checkpointing
(``genie_core.training.run``), step and evaluation are separate functions, and each model plugs in as a ``Stage``.

Run folder: ``RUN/config.yaml`` (resolved config) and per stage ``RUN/<stage>/``: ``last.safetensors``
(the model; EMA weights when EMA is on), ``step_NNNNNNN.safetensors`` (periodic), ``state.safetensors``
(raw weights, optimiser moments; step and timing as JSON metadata), ``metrics.jsonl``,
``samples/step_NNNNNNN.png``; ``RUN/heldout.txt`` lists the held-out videos. Randomness is a pure function
of (seed, step, rank): the batch and the
torch RNG are re-derived every step, so resuming at step N continues exactly as an unbroken run.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn

from genie_core.config import GenieConfig, to_dict
from genie_core.errors import GenieError
from genie_core.io.atomic import atomic_path
from genie_core.runtime import (
    autocast,
    check_memory,
    compile_blocker,
    native_bf16,
    resolve_device,
    resolve_precision,
    set_threads,
)
from genie_core.training.data import Dataset, load_dataset
from genie_core.training.distributed import Dist, StopFlag, agree, agree_min, init_dist
from genie_core.training.optim import learning_rate
from genie_core.training.resume import check_resumable, check_same_data
from genie_core.training.run import LAST_FILE, Event, Run, resume_run, save_run, setup_run  # noqa: F401
from genie_core.training.stages import available_stages, get_stage

HELDOUT_FILE = "heldout.txt"  # the held-out videos, one absolute path per line


# ---- one optimiser step -----------------------------------------------------------------------

def _to_device(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device, non_blocking=True) for k, v in batch.items()}


def _add(acc: dict[str, Any], metrics: dict[str, Any], scale: float) -> None:
    for k, v in metrics.items():
        v = v.detach().float() if torch.is_tensor(v) else float(v)
        acc[k] = acc.get(k, 0.0) + v * scale


def _backward(run: Run, forward: nn.Module, micro: list[dict[str, torch.Tensor]], step: int,
              metrics: dict[str, Any], with_loss: bool) -> None:
    """Gradients of one loss pass over the micro-batches (averaged; DDP syncs on the last only),
    its terms added to ``metrics`` (and the loss itself when ``with_loss``)."""
    stage, grad_accum = run.stage, run.ocfg.grad_accum
    for m, batch in enumerate(micro):
        last = m == len(micro) - 1
        with (forward.no_sync() if run.dist.world > 1 and not last else nullcontext()):
            with autocast(stage.device, stage.precision):
                loss, out = forward(batch, step)
            (loss / grad_accum).backward()
        _add(metrics, {"loss": loss, **out} if with_loss else out, 1.0 / grad_accum)


def train_step(run: Run, step: int) -> dict[str, Any]:
    """One optimiser step (``grad_accum`` micro-batches), then the aux step and EMA. Metrics out."""
    ocfg, stage, d = run.ocfg, run.stage, run.dist
    torch.manual_seed(int(np.random.SeedSequence([run.cfg.train.seed, step, d.rank]).generate_state(1)[0]))
    micro = [_to_device(run.train_clips.sample(np.random.default_rng([run.cfg.train.seed, step, m, d.rank]),
                                              ocfg.batch_size), stage.device)
             for m in range(ocfg.grad_accum)]
    lr = learning_rate(step, ocfg, run.horizon.end)
    for group in run.opt.param_groups:
        group["lr"] = lr
    run.model.train()
    metrics: dict[str, Any] = {}
    _backward(run, run.forward, micro, step, metrics, with_loss=True)
    params = [p for g in run.opt.param_groups for p in g["params"]]
    if ocfg.grad_clip > 0:
        metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, ocfg.grad_clip).detach()
    run.opt.step()
    run.model.zero_grad(set_to_none=True)  # also drops the discriminator's grads from the GAN term
    if run.aux_opt is not None and stage.aux_active(step):
        for group in run.aux_opt.param_groups:
            group["lr"] = lr * (ocfg.disc_lr or ocfg.lr) / ocfg.lr
        _backward(run, run.aux_forward, micro, step, metrics, with_loss=False)
        aux_params = [p for g in run.aux_opt.param_groups for p in g["params"]]
        if ocfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(aux_params, ocfg.grad_clip)
        run.aux_opt.step()
        run.model.zero_grad(set_to_none=True)
    if run.ema is not None:
        _update_ema(run.ema, run.model, min(ocfg.ema_decay, (1 + step) / (10 + step)))
    metrics["lr"] = lr
    return metrics


@torch.no_grad()
def _update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


# ---- evaluation -------------------------------------------------------------------------------

def evaluate(run: Run) -> dict[str, float]:
    """Validation metrics on the fixed held-out clips and the sample picture (rank 0 only)."""
    from genie_core.io.pictures import write_png

    stage, model = run.stage, run.ema if run.ema is not None else run.model
    was_training = model.training
    model.eval()
    with torch.no_grad(), autocast(stage.device, stage.precision):
        batches = [_to_device(b, stage.device) for b in run.val_batches]
        metrics = {k: float(v) for k, v in stage.evaluate(model, batches).items()}
        first = {k: v[: run.cfg.data.sample_clips] for k, v in batches[0].items()}
        picture = stage.sample_picture(model, first)
    model.train(was_training)
    write_png(run.dir / "samples" / f"step_{run.step:07d}.png", picture)
    return metrics


def _log(run: Run, record: dict[str, Any]) -> None:
    record = {"stage": run.stage.name, "step": run.step, "time": round(run.elapsed, 3),
              "wall": round(run.wall, 3), **record}
    with open(run.dir / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")


# ---- the loop ---------------------------------------------------------------------------------

def run_loop(run: Run, stop_at: int | None = None) -> dict[str, float]:
    """Train from ``run.step`` to the schedule's end (``train.<stage>.steps``, or as many steps as
    its time budget holds) or to ``stop_at``, evaluating, logging and checkpointing on the way.
    Returns the last validation metrics."""
    ocfg, rank0, horizon = run.ocfg, run.dist.rank == 0, run.horizon
    val: dict[str, float] = {}
    window: dict[str, Any] = {}
    window_steps, window_time = 0, 0.0
    run.emit({"event": "start", "stage": run.stage.name, "step": run.step, "total": horizon.end,
              "minutes": ocfg.minutes, "wall": run.wall, "dir": str(run.dir), **run.stage.describe(run.model)})
    with StopFlag() as stop:
        while not horizon.done(run.step) and (stop_at is None or run.step < stop_at):
            t0 = time.perf_counter()
            metrics = train_step(run, run.step)
            loss = float(metrics["loss"])
            if not math.isfinite(loss):
                raise GenieError(f"{run.stage.name}: loss became {loss} at step {run.step} "
                                 f"(try a lower train.{run.stage.name}.lr)")
            dt = time.perf_counter() - t0
            run.step += 1
            run.elapsed += dt
            run.wall += dt
            if horizon.timed:  # every rank stops at the same step: the earliest estimate
                horizon.end = agree_min(horizon.update(run.step, run.elapsed, run.wall), run.dist,
                                        run.stage.device)
            last = horizon.done(run.step)
            _add(window, metrics, 1.0)
            window_steps, window_time = window_steps + 1, window_time + dt
            run.emit({"event": "step", "stage": run.stage.name, "step": run.step, "total": horizon.end,
                      "loss": loss, "lr": float(metrics["lr"]), "wall": run.wall})
            if rank0 and (run.step % ocfg.log_every == 0 or last or run.step == stop_at):
                record = {k: round(float(v) / window_steps, 6) for k, v in window.items()}
                clips = ocfg.batch_size * ocfg.grad_accum * run.dist.world * window_steps
                _log(run, {"split": "train", **record, "clips_per_s": round(clips / window_time, 3)})
                window, window_steps, window_time = {}, 0, 0.0
            if rank0 and (run.step % ocfg.eval_every == 0 or last):
                t1 = time.perf_counter()
                val = evaluate(run)
                horizon.eval_s = time.perf_counter() - t1
                run.wall += horizon.eval_s
                _log(run, {"split": "val", **val})
                run.emit({"event": "eval", "stage": run.stage.name, "step": run.step, "metrics": val})
            if run.step % ocfg.save_every == 0 and not last:
                _timed_save(run, periodic=True)
            if agree(stop.requested, run.dist, run.stage.device):
                break
        if horizon.done(run.step) or run.step == stop_at or stop.requested:
            _timed_save(run, periodic=run.step % ocfg.save_every == 0)
    if stop.requested:
        run.emit({"event": "interrupted", "stage": run.stage.name, "step": run.step})
    return val


def _timed_save(run: Run, periodic: bool) -> None:
    """A checkpoint, its time counted in the stage's wall clock (and in a time budget's estimate;
    the state records the wall time up to the write it is part of)."""
    t1 = time.perf_counter()
    save_run(run, periodic=periodic)
    run.horizon.save_s = time.perf_counter() - t1
    run.wall += run.horizon.save_s


# ---- entry point ------------------------------------------------------------------------------

def resolve_stages(stage: str) -> list[str]:
    """``all`` means every registered stage in training order."""
    if stage == "all":
        names = available_stages()
        if not names:
            raise GenieError("no training stage is available")
        return names
    get_stage(stage)
    return [stage]


def _rank_device(name: str) -> torch.device:
    """The device this process trains on (init_dist's choice: under torchrun a CUDA rank takes
    cuda:LOCAL_RANK), without starting the process group."""
    device = resolve_device(name)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def train(cfg: GenieConfig, data_dir: str | os.PathLike, run_dir: str | os.PathLike, *,
          stage: str = "tokenizer", resume: bool = False, device: str = "auto",
          stop_at: int | None = None, on_event: Event | None = None,
          inputs: dict[str, str | os.PathLike] | None = None,
          compile: bool = False) -> dict[str, dict[str, float]]:
    """Train ``stage`` (or ``all`` stages in order) on the videos under ``data_dir``.

    Everything that can be wrong with the input is checked before ``run_dir`` is created.
    ``stop_at`` stops (and checkpoints) at that step while the schedule still spans the
    configured steps. ``inputs`` names checkpoints from the command line by stage
    (``{"tokenizer": path, "lam": path}``) for stages that build on earlier models. ``compile``
    runs the loss passes through ``torch.compile`` (checkpoints are the same files). Returns
    the last validation metrics per stage.
    """
    names = resolve_stages(stage)
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    # The run records (and --resume compares) the precision that runs, auto resolved here: a run
    # trained where auto meant bf16 is not continued in fp32 on another machine.
    asked = cfg.train.precision
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, precision=resolve_precision(asked, _rank_device(device))))  # before check_resumable
    H, W = cfg.data.resolution
    for name in names:  # one step's clips, as float32, must fit before anything else is done
        oc = getattr(cfg.train, name)
        check_memory(oc.batch_size * oc.grad_accum * (oc.num_frames or cfg.data.num_frames) * H * W * 3 * 4,
                     f"train.{name}: batches of {oc.batch_size} x {oc.grad_accum} clips at {H}x{W}")
    if resume and not run_dir.is_dir():
        raise GenieError(f"--resume: no run folder at {run_dir}")
    plan = []  # (stage, resume it?)
    for name in names:
        has_state = check_resumable(cfg, run_dir / name, name) if run_dir.is_dir() else False
        if has_state and not resume:
            raise GenieError(f"{run_dir / name} already holds a training run "
                             f"(pass --resume to continue it, or choose another --out)")
        plan.append((name, has_state))
    if resume and not any(r for _, r in plan):
        raise GenieError(f"--resume: {run_dir} holds no {stage} run to resume")

    set_threads(cfg.train.num_threads)
    d, dev = init_dist(device)
    emit = on_event if (on_event is not None and d.rank == 0) else (lambda e: None)
    warn = lambda msg: emit({"event": "warning", "message": msg})  # noqa: E731
    try:
        precision = cfg.train.precision
        if asked == "auto":
            why = "bf16 matmuls in hardware" if precision == "bf16" else "no bf16 matmuls in hardware"
            emit({"event": "info", "message": f"precision auto: {precision} ({dev.type}: {why})"})
        elif precision == "bf16" and not native_bf16(dev):
            warn(f"train.precision is bf16 but this {dev.type} has no bf16 matmuls in hardware: they are "
                 f"emulated, several times slower than fp32 (use --precision auto or fp32)")
        compiled = _compiled_stages(cfg, names, compile, dev, warn)
        data = _load_data(cfg, data_dir, d, warn, dev)
        if data.cache.has_actions:
            key = data.cache.videos[0].action_key
            emit({"event": "info", "message": f"ground-truth actions from sidecars ('{key}')"})
        for name, has_state in plan:
            if has_state:
                check_same_data(run_dir / name, data, d.world)
        if data.val_is_train:
            warn("no held-out videos: validating on training clips")
        results = {}
        for name, has_state in plan:
            stage_obj = get_stage(name)(cfg, run_dir, dev, precision, inputs)
            stage_obj.warn = warn
            stage_obj.prepare(data)
            run = setup_run(stage_obj, cfg, data, run_dir, d, emit, compile=name in compiled)
            if name in compiled:
                emit({"event": "info", "message": f"{name}: torch.compile (the first steps wait for the compiler)"})
            if has_state:
                resume_run(run)
                if run.horizon.done(run.step):
                    emit({"event": "info", "message": f"{name}: already trained to step {run.step}"})
                    if d.rank == 0:
                        stage_obj.finish()
                    continue
            if d.rank == 0:  # only now, with every input checked, does the run folder appear
                run.dir.mkdir(parents=True, exist_ok=True)
                with atomic_path(run_dir / "config.yaml") as tmp:
                    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
                _write_heldout(run_dir, data_dir, data)
            results[name] = run_loop(run, stop_at)
            if not run.horizon.done(run.step):  # interrupted or stop_at: later stages must wait
                break
            emit({"event": "info", "message": f"{name}: {run.step} steps, {run.wall / 60:.1f} min of training "
                                              f"and evaluation" + (f" (budget {run.ocfg.minutes:g} min)"
                                                                   if run.ocfg.minutes else "")})
            if run.horizon.finished_by(run.step) == "budget" and run.step <= run.ocfg.warmup_steps:
                warn(f"{name}: its {run.ocfg.minutes:g}-minute budget held only {run.step} steps, no more than "
                     f"train.{name}.warmup_steps={run.ocfg.warmup_steps}: the learning rate never left its "
                     f"warm-up (give it more minutes or fewer warm-up steps)")
            if d.rank == 0:
                stage_obj.finish()
        return results
    finally:
        if d.owns_group:
            # The DDP wrappers' reducers hold the process group too. Freed after it is destroyed
            # (with this frame's locals, under the GIL), the last reference runs the gloo group's
            # destructor there, which joins worker threads that may be waiting for the GIL to
            # release a finished collective's tensors: a hang at exit, seen once in a test run. Freeing
            # them first leaves destroy_process_group the last reference.
            run = stage_obj = None  # noqa: F841
            gc.collect()
            dist.destroy_process_group()


def _compiled_stages(cfg: GenieConfig, names: list[str], compile: bool, dev: torch.device,
                     warn: Callable[[str], None]) -> set[str]:
    """The stages whose loss passes run through ``torch.compile``: every stage with ``--compile``
    (``compile``), else those whose ``train.<stage>.compile`` is set. Without a compiler,
    ``--compile`` is an error and a preset's setting a warning (the stage trains eagerly)."""
    wanted = [n for n in names if compile or getattr(cfg.train, n).compile]
    blocker = compile_blocker(dev) if wanted else None
    if blocker is None:
        return set(wanted)
    if compile:
        raise GenieError(f"--compile: {blocker}")
    warn(f"train.{'/'.join(wanted)}.compile: {blocker}; training eagerly instead")
    return set()


def _write_heldout(run_dir: Path, data_dir: Path, data: Dataset) -> None:
    """``RUN/heldout.txt``: the held-out videos (absolute paths, one per line), for evaluation on
    clips no model saw: ``genie evaluate - -w RUN/world.safetensors < RUN/heldout.txt``."""
    if data.val_is_train:
        return
    root = data_dir.resolve()
    lines = [str(root / data.cache.videos[i].path) for i in data.val.video_ids]
    with atomic_path(run_dir / HELDOUT_FILE) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines))


def _load_data(cfg: GenieConfig, data_dir: Path, d: Dist, warn: Callable[[str], None],
               device: torch.device) -> Dataset:
    """Rank 0 decodes the videos into the cache; the other ranks wait, then memory-map it."""
    dc = cfg.data
    kwargs = dict(num_frames=dc.num_frames, resolution=tuple(dc.resolution), frame_stride=dc.frame_stride,
                  val_fraction=dc.val_fraction, rank=d.rank, world_size=d.world)
    if d.world == 1:
        return load_dataset(data_dir, warn=warn, **kwargs)
    ok = torch.zeros(1, device=device)
    error: GenieError | None = None
    if d.rank == 0:
        try:
            data = load_dataset(data_dir, warn=warn, **kwargs)
            ok += 1
        except GenieError as err:
            error = err
    dist.broadcast(ok, src=0)
    if error is not None:
        raise error
    if not ok.item():
        raise GenieError(f"rank 0 could not read the data in {data_dir}")
    if d.rank != 0:
        data = load_dataset(data_dir, warn=lambda m: None, build=False, **kwargs)
    return data
