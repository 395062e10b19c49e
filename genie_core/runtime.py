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


PRECISIONS = ("auto", "bf16", "fp32")
_BF16_CPU_FEATURES = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")  # x86, then Arm names


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware. A CPU without AVX512-BF16 or AMX
    (or Arm's BF16) emulates them: on a 2-core Xeon that hides both, a 2048-wide bf16 matmul ran
    at a fifth of the fp32 one and the ``small`` tokenizer's training step 3.1x slower in bf16
    (``bench/bench_train.py``), so there ``auto`` means fp32."""
    if device.type == "cuda":
        if torch.version.hip:
            return bool(torch.cuda.is_bf16_supported())
        # this device's own capability (Ampere and later), not the current device's
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type != "cpu":
        return False
    try:
        caps = torch._C._cpu._get_cpu_capability()
    except (AttributeError, RuntimeError):  # a build without the probe: fp32 is always right
        return False
    return any(bool(caps.get(name)) for name in _BF16_CPU_FEATURES)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> "bf16" where :func:`native_bf16`, else "fp32"; "bf16" and "fp32" as given."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision not in PRECISIONS:
        raise ArgumentError(f"unknown precision '{precision}' (use auto, bf16 or fp32)")
    return precision


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU and CUDA (the first performance lever where the hardware has bf16
    matmuls); fp32 is a no-op; ``auto`` is :func:`resolve_precision`'s choice."""
    if resolve_precision(precision, device) == "fp32":
        return contextlib.nullcontext()
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
def inference(device: torch.device, precision: str = "auto") -> Iterator[None]:
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
