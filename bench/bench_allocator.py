"""The training step with freed memory kept in the process (opt-in: ``GENIE_ALLOCATOR=kept``,
``genie_core.runtime.keep_freed_memory``) against glibc's allocator as it comes
(``GENIE_ALLOCATOR=system``), each in its own process, alternated, on the same data.

Prints, per configuration, the seconds per step, the page faults and the kernel (system) CPU
time per step, and the ratio against the system allocator measured in the same run:

    python bench/bench_allocator.py --preset coinrun --stage dynamics --data CLIPS --steps 5
    python bench/bench_allocator.py --preset coinrun --stage tokenizer --data CLIPS --steps 10

The allocator is set when a process starts, so each measurement is a fresh process; ``--rounds``
alternates them to spread the machine's drift over both.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def child(args: argparse.Namespace) -> None:
    """One process: build the stage as `genie train` does, warm up, time ``--steps`` steps."""
    from bench_train import build, timed_steps

    from genie_core.runtime import keep_freed_memory

    run, _ = build(args, "bf16")
    run.stage.precision = "bf16"
    timed_steps(run, 0, args.warmup)
    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    step_s = timed_steps(run, args.warmup, args.steps)
    after = resource.getrusage(resource.RUSAGE_SELF)
    n = args.steps
    print(json.dumps({"allocator": keep_freed_memory(), "step_s": step_s,
                      "wall_check_s": (time.perf_counter() - t0) / n,
                      "minor_faults_per_step": (after.ru_minflt - before.ru_minflt) / n,
                      "sys_s_per_step": (after.ru_stime - before.ru_stime) / n,
                      "user_s_per_step": (after.ru_utime - before.ru_utime) / n,
                      "max_rss_mib": after.ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="coinrun")
    parser.add_argument("--stage", default="dynamics")
    parser.add_argument("--data", help="video folder (default: synthetic clips)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two allocators")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=0)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--json", action="store_true", help="one JSON line per measurement")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.device = "cpu"
    if args.child:
        child(args)
        return
    if args.data is None:
        from bench_train import synthetic_clips

        from genie_core.config import load_preset
        cfg = load_preset(args.preset, args.set)
        tmp = Path(tempfile.mkdtemp(prefix="bench-alloc-"))
        args.data = str(synthetic_clips(tmp, tuple(cfg.data.resolution), cfg.data.num_frames + 4))
    argv = [sys.executable, __file__, "--child", "--preset", args.preset, "--stage", args.stage,
            "--data", args.data, "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--threads", str(args.threads), "--batch-size", str(args.batch_size)]
    for s in args.set:
        argv += ["--set", s]
    results: dict[str, list[dict]] = {"kept": [], "system": []}
    for r in range(args.rounds):
        for mode in ("system", "kept"):
            env = dict(os.environ, GENIE_ALLOCATOR=mode)
            out = subprocess.run(argv, env=env, capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"child failed ({mode}):\n{out.stderr[-2000:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row.update(preset=args.preset, stage=args.stage, threads=args.threads, round=r)
            results["kept" if row["allocator"] == "kept" else "system"].append(row)
            if args.json:
                print(json.dumps(row))
            else:
                print(f"round {r} {row['allocator']:>11}: {row['step_s']:.3f} s/step, "
                      f"{row['minor_faults_per_step']:,.0f} page faults/step, "
                      f"{row['sys_s_per_step']:.2f} s kernel/step, {row['max_rss_mib']:,.0f} MiB peak",
                      flush=True)
    if not results["kept"]:
        print("keep_freed_memory is unavailable here (not glibc): nothing to compare")
        return
    med = {k: statistics.median(r["step_s"] for r in v) for k, v in results.items() if v}
    print(f"{args.preset} {args.stage}, {args.threads} thread(s): median {med['system']:.3f} s/step "
          f"with the system allocator, {med['kept']:.3f} s kept: {med['system'] / med['kept']:.2f}x")


if __name__ == "__main__":
    main()
