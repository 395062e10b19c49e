"""``bench/gpu_check.sh``: without a GPU it refuses in one line (exit 2); its CPU dry run
(``GENIE_CHECK_DEVICE=cpu``) walks every path the GPU run takes, so the script itself is checked on
machines that have no GPU (slow: it trains three stages and plays)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"


def _run(tmp_path: Path, device: str, timeout: int = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "GENIE_CHECK_DEVICE": device}
    return subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_an_unknown_device_is_refused_in_one_line(tmp_path: Path) -> None:
    result = _run(tmp_path, "tpu")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: GENIE_CHECK_DEVICE must be cuda or cpu, not 'tpu'"]
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the script would run")
def test_without_a_gpu_it_says_so_and_exits_2(tmp_path: Path) -> None:
    result = _run(tmp_path, "cuda")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no CUDA device") and "dry run" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_cpu_dry_run_takes_every_path(tmp_path: Path) -> None:
    result = _run(tmp_path, "cpu", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    for name in ("run/world.safetensors", "tokens.npz", "rec.mp4", "compare.png", "play.gif",
                 "play_nc.gif", "run_torchrun/tokenizer/last.safetensors", "run_compile/tokenizer/last.safetensors"):
        assert (out / name).is_file(), name
    assert "gloo: DDP backward and all_reduce over 1 process(es) ok" in result.stdout
    for stage in ("tokenizer", "lam", "dynamics"):
        assert f"train {stage} (quickstart, bf16):" in result.stdout
    assert "play play:" in result.stdout
    assert "all paths ran on cpu" in result.stderr
