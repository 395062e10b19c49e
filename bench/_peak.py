"""What the machine allows, for the benchmarks: the matmul peak (GFLOP/s) measured in the calling
process, and the matmul FLOPs of one call counted by ``torch.utils.flop_counter``.

Fraction of peak = (counted GFLOP / measured seconds) / peak GFLOP/s at the same precision and
thread count. The counter sees matmuls, convolutions and attention (forward and, in a training
step, backward); element-wise work is not counted, so the fraction says how close the model's
matmuls run to the best square matmul of this core, not how busy the core is.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def matmul_peak_gflops(precision: str, threads: int, size: int = 2048, repeats: int = 5,
                       device: str | torch.device = "cpu") -> float:
    """Best of ``repeats`` (size x size) @ (size x size) matmuls in ``precision`` ("bf16" |
    "fp32") at ``threads`` torch threads, in GFLOP/s (2 size**3 FLOPs each). The thread count is
    restored afterwards."""
    device = torch.device(device)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator(device=device).manual_seed(0)
        a = torch.randn(size, size, generator=g, device=device).to(DTYPES[precision])
        b = torch.randn(size, size, generator=g, device=device).to(DTYPES[precision])
        out = torch.empty(size, size, device=device, dtype=a.dtype)
        torch.mm(a, b, out=out)  # warm-up: kernel selection, first-touch of the output
        best = float("inf")
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            _sync(device)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return 2 * size ** 3 / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_gflop(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(GFLOP of matmuls, convolutions and attention that ``fn()`` runs, its result)."""
    with FlopCounterMode(display=False) as counter:
        result = fn()
    return counter.get_total_flops() / 1e9, result


def fraction_of_peak(gflop: float, seconds: float, peak_gflops: float) -> float:
    """Achieved matmul rate over the measured peak."""
    return gflop / seconds / peak_gflops if seconds > 0 and peak_gflops > 0 else float("nan")


def peaks(precisions: list[str], threads: int, size: int = 2048) -> dict[str, float]:
    """The peak of each precision at ``threads`` threads, measured now (one after the other)."""
    return {p: matmul_peak_gflops(p, threads, size) for p in precisions}
