"""Process plumbing of the training loop: torchrun/DDP set-up (gloo on CPU, nccl on CUDA), stop
requests (Ctrl-C, SIGTERM) that every rank agrees on, so that a run stops at a step boundary."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from genie_core.runtime import resolve_device


@dataclass
class Dist:
    """This process's place in the job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    owns_group: bool = False  # we called init_process_group, so we tear it down


class StopFlag:
    """SIGINT/SIGTERM ask the loop to save and stop after the current step; a second Ctrl-C
    interrupts at once (the last checkpoint stays intact, every write being atomic)."""

    def __init__(self) -> None:
        self.requested, self._old = False, {}

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def agree(flag: bool, d: Dist, device: torch.device) -> bool:
    """Every rank stops at the same step when any rank was asked to."""
    if d.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def agree_min(value: int, d: Dist, device: torch.device) -> int:
    """The smallest of the ranks' ``value`` (a time-boxed stage's horizon: rank 0 alone times the
    evaluations, so its estimate is the earliest)."""
    if d.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def init_dist(device_name: str) -> tuple[Dist, torch.device]:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; then gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world <= 1:
        return Dist(), device
    owns = False
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
    return Dist(dist.get_rank(), dist.get_world_size(), owns), device
