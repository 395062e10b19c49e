"""bench/bench_tokenizer.py --against-seed: the earlier port and genie timed side by side. With a
stand-in checkout whose ``genie`` package is genie_core itself, both sides run the same code, so
the harness must report both, with finite ratios; a path without a port is one clear failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_tokenizer.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=600)


def test_against_seed_times_both_sides_and_prints_ratios(tmp_path):
    port = tmp_path / "open-genie" / "genie"
    port.mkdir(parents=True)
    (port / "__init__.py").write_text("from genie_core.models.tokenizer import VideoTokenizer  # noqa: F401\n")
    proc = run("--against-seed", str(port.parent), "--configs", "seed-2^10", "--precisions", "fp32",
               "--reps", "1", "--rounds", "1", "--batch", "1", "--frames", "2", "--threads", "1", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    timed = {r["impl"]: r for r in rows if "impl" in r}
    assert set(timed) == {"seed", "genie"}, rows
    assert all("failed" not in r and r["step_s"] > 0 and r["batch"] == 1 for r in timed.values()), timed
    (cmp,) = [r["comparison"] for r in rows if "comparison" in r]
    assert all(0 < cmp[k] < float("inf") for k in ("encode_speedup", "decode_speedup", "step_speedup"))


OLD_PORT = """
import torch.nn as nn
from genie_core.models.tokenizer import VideoTokenizer as _Genie


class VideoTokenizer(_Genie):
    # Like some versions of the port: dec_desc is required, the loss weights switch the GAN and
    # perceptual criteria off, and forward calls the switched-off one (nn.Identity) with keywords.
    def __init__(self, enc_desc, dec_desc, disc_kwargs={}, gan_loss_weight=1.0, perc_loss_weight=1.0, **kw):
        assert dec_desc[0][0] == "causal" and dec_desc[-1][1]["out_channels"] == 3, dec_desc
        assert gan_loss_weight == 0 and perc_loss_weight == 0, (gan_loss_weight, perc_loss_weight)
        super().__init__(enc_desc=enc_desc, disc_kwargs=None, **kw)
        self.gan_crit = nn.Identity()

    def forward(self, video):
        loss, terms = super().forward(video)
        return loss + self.gan_crit(video, video, train_gen=True), terms
"""


def test_against_seed_builds_a_port_that_requires_a_decoder(tmp_path):
    port = tmp_path / "open-genie" / "genie"
    port.mkdir(parents=True)
    (port / "__init__.py").write_text(OLD_PORT)
    proc = run("--against-seed", str(port.parent), "--configs", "seed-2^10", "--precisions", "fp32",
               "--reps", "1", "--rounds", "1", "--batch", "1", "--frames", "2", "--threads", "1", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    timed = {r["impl"]: r for r in rows if "impl" in r}
    assert all("failed" not in r and r["step_s"] > 0 for r in timed.values()), timed


def test_against_seed_without_a_port_says_so(tmp_path):
    proc = run("--against-seed", str(tmp_path), "--configs", "seed-2^10", "--precisions", "fp32",
               "--reps", "1", "--rounds", "1", "--batch", "1", "--frames", "2", "--threads", "1")
    assert proc.returncode == 0
    assert "FAILED" in proc.stdout and "no genie/__init__.py" in proc.stdout
