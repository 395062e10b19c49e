"""Training throughput of one stage (default: the tokenizer on `small`), in clips/s, through the
real training step (genie_core.training.train.train_step): fp32 against bf16 autocast in one process
(rounds interleaved, medians), then 1 process against 2 under torchrun (DDP, gloo on CPU); each
beside the fraction of the matmul peak measured in the same process (bench/_peak.py).

    python bench/bench_train.py --preset small --data clips/ --threads 2 --json
    python bench/bench_train.py --preset small --stage dynamics --set train.dynamics.batch_size=4
    python bench/bench_train.py --preset tiny --steps 3          # synthetic clips, quick check

Without --data, synthetic moving-square clips at the preset's resolution are written to a
temporary folder. Per-process batch is the preset's (or --batch-size); 2 processes therefore
train twice the clips per step. Figures are only comparable within one run (shared machine).
A step's FLOPs (forward, backward, the GAN discriminator's step when it is on) are counted by
``torch.utils.flop_counter`` on one uncompiled step; its fraction of peak is those GFLOP over the
median step time, over the best square matmul of its precision at its thread count (measured
before and after the steps, the higher of the two), and `fraction_of_best_peak` over the faster
precision's (fp32's where bf16 is emulated). The dynamics
stage's batches need a trained tokenizer only for their meaning: an untrained one is built.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peak import count_gflop, fraction_of_peak, matmul_peak_gflops  # noqa: E402


def synthetic_clips(folder: Path, resolution: tuple[int, int], frames: int, count: int = 8) -> Path:
    from genie_core.io.video_write import write_video

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


def untrained_inputs(cfg, run_dir: Path) -> None:
    """Untrained tokenizer and LAM of the preset where the dynamics stage looks for its inputs
    (the same compute as trained ones)."""
    import torch

    from genie_core.models.lam import LatentActionModel
    from genie_core.models.tokenizer import VideoTokenizer

    torch.manual_seed(0)
    for part, model in (("tokenizer", VideoTokenizer.from_config(cfg.tokenizer)),
                        ("lam", LatentActionModel.from_config(cfg.lam))):
        (run_dir / part).mkdir(parents=True, exist_ok=True)
        model.save(run_dir / part / "last.safetensors")


def build(args: argparse.Namespace, precision: str):
    """A Run for the stage, as `genie train` would set it up (rank and world from torchrun)."""

    from genie_core.config import load_preset
    from genie_core.runtime import set_threads
    from genie_core.training import train as T
    from genie_core.training.distributed import init_dist
    from genie_core.training.stages import get_stage

    sets = list(args.set)
    if args.batch_size:
        sets.append(f"train.{args.stage}.batch_size={args.batch_size}")
    cfg = load_preset(args.preset, sets)
    d, device = init_dist(args.device)
    set_threads(args.threads)  # as `genie train` does (threads and allocator)
    data = T._load_data(cfg, Path(args.data), d, lambda m: None, device)
    run_dir = Path(tempfile.mkdtemp())
    if args.stage == "dynamics":
        untrained_inputs(cfg, run_dir)
    stage = get_stage(args.stage)(cfg, run_dir, device, precision)
    stage.prepare(data)
    return T.setup_run(stage, cfg, data, Path(tempfile.mkdtemp()), d, lambda e: None), d


def step_gflop(run, step: int) -> float:
    """GFLOP of one training step (run before any compilation)."""
    from genie_core.training.train import train_step

    return count_gflop(lambda: train_step(run, step))[0]


def maybe_compile(run, on: bool) -> None:
    if on:
        from genie_core.runtime import compile_in_place
        for module in (run.forward, run.aux_forward):
            if module is not None:
                compile_in_place(module)


def timed_steps(run, first_step: int, steps: int) -> float:
    """Seconds per optimiser step (all ranks in lock-step under DDP)."""
    from genie_core.training.train import train_step

    t0 = time.perf_counter()
    for s in range(first_step, first_step + steps):
        train_step(run, s)
    return (time.perf_counter() - t0) / steps


def worker(args: argparse.Namespace) -> None:
    """Run under torchrun: warm up, time, rank 0 writes {clips_per_s, step_s} to --result."""
    run, d = build(args, args.precision)
    run.stage.precision = args.precision
    gflop = step_gflop(run, 0)
    maybe_compile(run, args.compile)
    timed_steps(run, 1, args.warmup)
    step_s = timed_steps(run, 1 + args.warmup, args.steps)
    peak = matmul_peak_gflops(args.precision, args.threads, args.peak_size)  # every rank at once
    clips = run.ocfg.batch_size * run.ocfg.grad_accum * d.world
    if d.rank == 0:
        Path(args.result).write_text(json.dumps({
            "clips_per_s": clips / step_s, "step_s": step_s, "world": d.world, "threads": args.threads,
            "gflop": gflop, "peak_gflops": peak, "fraction_of_peak": fraction_of_peak(gflop, step_s, peak)}))
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()


def precision_comparison(args: argparse.Namespace) -> dict[str, float]:
    run, _ = build(args, "fp32")
    clips = run.ocfg.batch_size * run.ocfg.grad_accum
    gflop = step_gflop(run, 0)  # the same matmuls under bf16
    maybe_compile(run, args.compile)
    timed_steps(run, 1, args.warmup)
    if args.compile:  # each precision compiles its own graphs: warm both up
        run.stage.precision = "bf16"
        timed_steps(run, 1 + args.warmup, args.warmup)
    before = {p: matmul_peak_gflops(p, args.threads, args.peak_size) for p in ("bf16", "fp32")}
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    step = 1 + 2 * args.warmup
    for _ in range(args.rounds):  # interleaved so that machine load hits both alike
        for precision in ("fp32", "bf16"):
            run.stage.precision = precision
            times[precision].append(timed_steps(run, step, args.steps))
            step += args.steps
    out = {p: clips / statistics.median(t) for p, t in times.items()}
    # the peak before and after the steps, the higher one: on a machine with noisy neighbours one
    # probe can come out 30% low (222 against 333 GFLOP/s in two runs), which inflates fractions
    peak = {p: max(before[p], matmul_peak_gflops(p, args.threads, args.peak_size)) for p in ("bf16", "fp32")}
    params = sum(p.numel() for p in run.model.parameters()) / 1e6
    frames = run.ocfg.num_frames or run.cfg.data.num_frames
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print  # noqa: E731
    say(f"{args.stage} on {args.preset}: {params:.2f}M parameters, batch {clips} clips of "
        f"{frames}x{run.cfg.data.resolution[0]}x{run.cfg.data.resolution[1]}, "
        f"{args.threads} thread(s), {args.rounds} rounds x {args.steps} steps, {gflop:.1f} GFLOP a step")
    for p in ("fp32", "bf16"):
        step_s = statistics.median(times[p])
        row = {"preset": args.preset, "stage": args.stage, "precision": p, "threads": args.threads,
               "processes": 1, "compile": args.compile, "batch": clips, "step_s": step_s,
               "clips_per_s": out[p], "gflop": gflop, "peak_gflops": peak[p],
               "fraction_of_peak": fraction_of_peak(gflop, step_s, peak[p]),
               # against the faster precision's peak: on a CPU that emulates bf16 the bf16 peak is
               # low, so a bf16 step can sit near it while running slower than fp32
               "best_peak_gflops": max(peak.values()),
               "fraction_of_best_peak": fraction_of_peak(gflop, step_s, max(peak.values()))}
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(f"  {p}: {out[p]:7.2f} clips/s  ({step_s:.3f} s/step), {gflop / step_s:.0f} GFLOP/s "
                  f"of a {peak[p]:.0f} GFLOP/s peak = {100 * row['fraction_of_peak']:.1f}% of peak "
                  f"({100 * row['fraction_of_best_peak']:.1f}% of the faster precision's)")
    say(f"  bf16 / fp32: {out['bf16'] / out['fp32']:.2f}x")
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
        if args.json:
            print(json.dumps({"preset": args.preset, "stage": args.stage, "precision": "bf16",
                              "threads": threads, "processes": nproc, "compile": args.compile, **r}), flush=True)
            continue
        print(f"  torchrun {nproc} proc x {threads} thread(s), bf16: {r['clips_per_s']:7.2f} clips/s "
              f"({r['step_s']:.3f} s/step, {nproc} x batch), {100 * r['fraction_of_peak']:.1f}% of "
              f"each process's {r['peak_gflops']:.0f} GFLOP/s peak")
    half = max(1, args.threads // 2)
    base, two = results.get((1, args.threads)), results.get((2, half))
    if base and two and not args.json:
        print(f"  2 processes x {half} thread(s) / 1 process x {args.threads} thread(s): "
              f"{two['clips_per_s'] / base['clips_per_s']:.2f}x")


def _common(args: argparse.Namespace) -> list[str]:
    out = ["--preset", args.preset, "--stage", args.stage, "--data", args.data, "--steps",
           str(args.steps), "--warmup", str(args.warmup), "--device", args.device,
           "--peak-size", str(args.peak_size)] + (["--compile"] if args.compile else [])
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
    parser.add_argument("--compile", action="store_true", help="time the step under torch.compile")
    parser.add_argument("--peak-size", type=int, default=2048, help="side of the square matmul of the peak")
    parser.add_argument("--json", action="store_true", help="one JSON line per configuration")
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
          f"{os.getloadavg()[0]:.1f}; data {args.data}", file=sys.stderr if args.json else sys.stdout)
    torch.set_num_threads(args.threads)
    precision_comparison(args)
    if not args.skip_torchrun:
        process_comparison(args)


if __name__ == "__main__":
    main()
