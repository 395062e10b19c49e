"""Device, precision and thread selection shared by every command and the training loop."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from genie_core.errors import GenieError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GenieError("--device cuda was asked for but no CUDA device is available (try --device cpu)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise GenieError(f"unknown device '{name}' (use auto, cpu or cuda)")
    return torch.device(name)


def autocast(device: torch.device, precision: str = "bf16") -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU and CUDA (the first performance lever on both); fp32 is a no-op."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise GenieError(f"unknown precision '{precision}' (use bf16 or fp32)")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def set_threads(num_threads: int) -> None:
    """0 keeps torch's default; on a busy 2-core machine 1 thread can beat 2 (DESIGN.md)."""
    if num_threads > 0:
        torch.set_num_threads(num_threads)


@contextlib.contextmanager
def inference(device: torch.device, precision: str = "bf16") -> Iterator[None]:
    with torch.inference_mode(), autocast(device, precision):
        yield
