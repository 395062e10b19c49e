"""Device, precision and thread selection shared by every command and the training loop."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from typing import Iterator

import torch

from genie_core.errors import ArgumentError, GenieError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ArgumentError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GenieError("--device cuda was asked for but no CUDA device is available (try --device cpu)")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise GenieError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def autocast(device: torch.device, precision: str = "bf16") -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU and CUDA (the first performance lever on both); fp32 is a no-op."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ArgumentError(f"unknown precision '{precision}' (use bf16 or fp32)")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def set_threads(num_threads: int) -> None:
    """Every command's and the training loop's CPU set-up: the thread count (0 keeps torch's
    default; on a busy 2-core machine 1 thread can beat 2: README, Benchmarks) and
    :func:`keep_freed_memory` (off unless ``GENIE_ALLOCATOR=kept``)."""
    keep_freed_memory()
    if num_threads > 0:
        torch.set_num_threads(num_threads)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_allocator: str | None = None  # what keep_freed_memory did in this process


def keep_freed_memory() -> str:
    """Keep freed tensor memory in the process for the next allocation instead of handing it back
    to the OS. glibc serves every block above its mmap threshold (32 MiB at most) with a fresh
    mmap and unmaps it on free, so a training step whose activations are tens of MiB each faults
    in and zeroes new pages for all of them, every step: the coinrun dynamics step took 21 M page
    faults in 3 steps and a third of its time in the kernel (``bench/bench_allocator.py``). With no
    mmap for large blocks and no trimming, the heap is reused instead.

    **Opt-in** (``GENIE_ALLOCATOR=kept``): short runs measured 1.26-1.36x faster a step, but a
    ``coinrun --stage all`` run under it (6000 / 2000 steps) was killed for memory (24 GB resident) 60 steps after the
    dynamics stage's first evaluation (most likely the unmmapped heap fragmenting: torch's 64-byte
    aligned allocations cannot reuse a freed chunk of exactly their size), where
    glibc as it comes peaked at 12.4 GB. Applied once per process, on glibc only. Returns what
    was done: ``kept``, ``system`` (the default) or ``unavailable``."""
    global _allocator
    if _allocator is not None:
        return _allocator
    if os.environ.get("GENIE_ALLOCATOR", "system").strip().lower() != "kept":
        _allocator = "system"
        return _allocator
    _allocator = "unavailable"
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return _allocator
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return _allocator
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; trimming off first, so nothing mmapped is ever trimmed away
    if mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1) == 1 and mallopt(_M_MMAP_MAX, 0) == 1:
        _allocator = "kept"
    return _allocator


# torch.compile's backend: inductor generates C++ on CPU (gcc) and Triton on CUDA. Tests swap in
# "aot_eager" (the same graph capture and autograd split, no code generation: seconds, not minutes).
COMPILE_BACKEND = "inductor"


def compile_blocker(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot generate code for ``device`` here, or None when it can: on a
    CPU, inductor compiles C++ with ``$CXX`` (default g++), which must be on PATH."""
    if COMPILE_BACKEND != "inductor" or device.type != "cpu":
        return None
    cxx = os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None:
        return f"torch.compile needs a C++ compiler on a CPU and {cxx!r} is not on PATH (install g++ or set CXX)"
    return None


def compile_in_place(module: torch.nn.Module, dynamic: bool | None = None) -> torch.nn.Module:
    """``module`` with its ``__call__`` run through ``torch.compile`` (``nn.Module.compile``): the
    same object, so its state-dict keys stay plain (no ``_orig_mod.``) and DDP's ``no_sync`` and
    attributes still work. ``dynamic=False`` compiles one graph per input shape."""
    module.compile(backend=COMPILE_BACKEND, dynamic=dynamic)
    return module


@contextlib.contextmanager
def inference(device: torch.device, precision: str = "bf16") -> Iterator[None]:
    with torch.inference_mode(), autocast(device, precision):
        yield


def valid_seed(seed: int) -> int:
    """``seed`` when torch and numpy generators take it ([0, 2**63 - 1]), else a GenieError."""
    from genie_core.config.train import check_seed

    try:
        return check_seed(seed)
    except ValueError as err:
        raise ArgumentError(str(err)) from None


def physical_memory() -> int | None:
    """Bytes of RAM on this machine, or None when the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(nbytes: int, what: str) -> None:
    """Refuse, before any work, an ask whose memory (as the caller estimates it) exceeds this
    machine's RAM."""
    total = physical_memory()
    if total is not None and nbytes > total:
        raise GenieError(f"{what} need about {nbytes / 2 ** 30:.1f} GiB, more than this "
                         f"machine's {total / 2 ** 30:.1f} GiB of memory")
