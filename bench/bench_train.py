"""Training throughput of one stage (default: the tokenizer on `small`), in clips/s, through the
real training step (genie_core.train.train_step): fp32 against bf16 autocast in one process
(rounds interleaved, medians), then 1 process against 2 under torchrun (DDP, gloo on CPU).

    python bench/bench_train.py --preset small --data /work/data/coinrun/clips
    python bench/bench_train.py --preset tiny --steps 3          # synthetic clips, quick check

Without --data, synthetic moving-square clips at the preset's resolution are written to a
temporary folder. Per-process batch is the preset's (or --batch-size); 2 processes therefore
train twice the clips per step. Figures are only comparable within one run (shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_clips(folder: Path, resolution: tuple[int, int], frames: int, count: int = 8) -> Path:
    from genie_core.video_write import write_video

    rng = np.random.default_rng(0)
    H, W = resolution
    for i in range(count):
        clip = np.zeros((frames, H, W, 3), np.uint8)
        clip[...] = rng.integers(0, 80, size=3, dtype=np.uint8)
        y, x = rng.integers(0, H - H // 4), rng.integers(0, W - W // 4)
        for t in range(frames):
            clip[t, y:y + H // 4, (x + t) % (W - W // 4):(x + t) % (W - W // 4) + W // 4] = (240, 200, 30)
        write_video(folder / f"clip{i}.mp4", clip, fps=15)
    return folder


def build(args: argparse.Namespace, precision: str):
    """A Run for the stage, as `genie train` would set it up (rank and world from torchrun)."""
    import torch

    from genie_core import train as T
    from genie_core.distributed import init_dist
    from genie_core.config import load_preset
    from genie_core.stages import get_stage

    sets = list(args.set)
    if args.batch_size:
        sets.append(f"train.{args.stage}.batch_size={args.batch_size}")
    cfg = load_preset(args.preset, sets)
    d, device = init_dist(args.device)
    torch.set_num_threads(args.threads)
    data = T._load_data(cfg, Path(args.data), d, lambda m: None, device)
    stage = get_stage(args.stage)(cfg, Path(tempfile.mkdtemp()), device, precision)
    stage.prepare(data)
    return T.setup_run(stage, cfg, data, Path(tempfile.mkdtemp()), d, lambda e: None), d


def timed_steps(run, first_step: int, steps: int) -> float:
    """Seconds per optimiser step (all ranks in lock-step under DDP)."""
    from genie_core.train import train_step

    t0 = time.perf_counter()
    for s in range(first_step, first_step + steps):
        train_step(run, s)
    return (time.perf_counter() - t0) / steps


def worker(args: argparse.Namespace) -> None:
    """Run under torchrun: warm up, time, rank 0 writes {clips_per_s, step_s} to --result."""
    run, d = build(args, args.precision)
    timed_steps(run, 0, args.warmup)
    step_s = timed_steps(run, args.warmup, args.steps)
    clips = run.ocfg.batch_size * run.ocfg.grad_accum * d.world
    if d.rank == 0:
        Path(args.result).write_text(json.dumps({"clips_per_s": clips / step_s, "step_s": step_s,
                                                 "world": d.world, "threads": args.threads}))
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()


def precision_comparison(args: argparse.Namespace) -> dict[str, float]:
    run, _ = build(args, "fp32")
    clips = run.ocfg.batch_size * run.ocfg.grad_accum
    timed_steps(run, 0, args.warmup)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    step = args.warmup
    for _ in range(args.rounds):  # interleaved so that machine load hits both alike
        for precision in ("fp32", "bf16"):
            run.stage.precision = precision
            times[precision].append(timed_steps(run, step, args.steps))
            step += args.steps
    out = {p: clips / statistics.median(t) for p, t in times.items()}
    params = sum(p.numel() for p in run.model.parameters()) / 1e6
    print(f"{args.stage} on {args.preset}: {params:.2f}M parameters, batch {clips} clips of "
          f"{run.cfg.data.num_frames}x{run.cfg.data.resolution[0]}x{run.cfg.data.resolution[1]}, "
          f"{args.threads} thread(s), {args.rounds} rounds x {args.steps} steps")
    for p in ("fp32", "bf16"):
        print(f"  {p}: {out[p]:7.2f} clips/s  ({statistics.median(times[p]):.3f} s/step)")
    print(f"  bf16 / fp32: {out['bf16'] / out['fp32']:.2f}x")
    return out


def process_comparison(args: argparse.Namespace) -> None:
    """1 process x T threads vs 2 processes x T/2 threads (same cores), and 1 x T/2 as a base."""
    layouts = [(1, args.threads), (1, max(1, args.threads // 2)), (2, max(1, args.threads // 2))]
    results = {}
    for nproc, threads in dict.fromkeys(layouts):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
            result = fh.name
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               "--master_port", str(29500 + nproc * 7 + threads), __file__, "--worker",
               "--result", result, "--threads", str(threads), "--precision", "bf16",
               *_common(args)]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"  torchrun {nproc} process(es) failed:\n{proc.stderr[-1500:]}")
            continue
        results[(nproc, threads)] = json.loads(Path(result).read_text())
        r = results[(nproc, threads)]
        print(f"  torchrun {nproc} proc x {threads} thread(s), bf16: {r['clips_per_s']:7.2f} clips/s "
              f"({r['step_s']:.3f} s/step, {nproc} x batch)")
    half = max(1, args.threads // 2)
    base, two = results.get((1, args.threads)), results.get((2, half))
    if base and two:
        print(f"  2 processes x {half} thread(s) / 1 process x {args.threads} thread(s): "
              f"{two['clips_per_s'] / base['clips_per_s']:.2f}x")


def _common(args: argparse.Namespace) -> list[str]:
    out = ["--preset", args.preset, "--stage", args.stage, "--data", args.data, "--steps",
           str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
    if args.batch_size:
        out += ["--batch-size", str(args.batch_size)]
    for s in args.set:
        out += ["--set", s]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--stage", default="tokenizer")
    parser.add_argument("--data", default=None, help="video folder (default: synthetic clips)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="fp32/bf16 alternations")
    parser.add_argument("--batch-size", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--skip-torchrun", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="bf16", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import torch

    from genie_core.config import load_preset

    cfg = load_preset(args.preset, args.set)
    if args.data is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
        args.data = str(synthetic_clips(tmp, tuple(cfg.data.resolution), cfg.data.num_frames + 4))
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; data {args.data}")
    torch.set_num_threads(args.threads)
    precision_comparison(args)
    if not args.skip_torchrun:
        process_comparison(args)


if __name__ == "__main__":
    main()
