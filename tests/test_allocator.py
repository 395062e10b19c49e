"""keep_freed_memory: freed large tensors are reused by the process, not faulted in anew."""

import json
import os
import platform
import subprocess
import sys

import pytest

PROBE = r"""
import json, resource, sys
import torch
from genie_core.runtime import keep_freed_memory
mode = keep_freed_memory()
n = 64 * 2 ** 20 // 4  # 64 MiB of fp32: above glibc's largest mmap threshold
for _ in range(12):  # the heap grows until freed blocks coalesce into ones an aligned ask fits
    torch.empty(n).fill_(1.0)  # allocated, touched, freed
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    torch.empty(n).fill_(1.0)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4
print(json.dumps({"mode": mode, "faults": faults, "again": keep_freed_memory()}))
"""


def probe(allocator: str | None) -> dict:
    env = dict(os.environ)
    env.pop("GENIE_ALLOCATOR", None)
    if allocator:
        env["GENIE_ALLOCATOR"] = allocator
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's")
def test_kept_memory_is_reused_without_page_faults():
    kept, system, default = probe("kept"), probe("system"), probe(None)
    assert kept["mode"] == kept["again"] == "kept"  # applied once, the answer stable
    assert system["mode"] == default["mode"] == "system"  # opt-in: a long run grew without bound
    pages = 64 * 2 ** 20 / os.sysconf("SC_PAGE_SIZE")
    assert kept["faults"] < 0.02 * pages  # reused: (almost) no new pages per allocation
    assert kept["faults"] < system["faults"]  # glibc as it comes maps and faults in every one
