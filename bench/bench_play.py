"""`genie play` frame rate (Genie §2.2): time per generated frame at 64x64 on
CPU, MaskGIT sampling AND tokenizer decoding included, at session frame 2 and frame 16 (the KV
cache should keep their ratio <= 1.3), fps, bf16 vs fp32 and 1 vs 2 threads, all in one run, each
beside the fraction of the matmul peak measured in the same process (bench/_peak.py).

    nice -n 5 python bench/bench_play.py       # play (5 sessions), coinrun-paper (1 session, 1 thread)
    python bench/bench_play.py --presets play:2 --threads 1 --precisions bf16 --frames 16 --json

Untrained weights (World.from_preset): the compute is the same as a trained world's. Each step's
time is the wall clock of ``World.step`` (dynamics sampling + decoding the new frame); a warm-up
session per configuration is discarded. ``decode`` is the tokenizer's share, measured alone;
``render`` is drawing the frame as half-block text for an 80x24 terminal (interactive mode only).
``cpu`` figures are process CPU time: at 1 thread on a busy machine they estimate an idle core's
frame time (at 2 threads they add both threads' time, spin-waiting included). ``--no-cache`` also
times sessions that recompute each frame from the session's ids (``genie play --no-cache``): their
frame time grows with the session until it spans the model's receptive frames.

FLOPs are counted by ``torch.utils.flop_counter`` on one uncompiled session of the same length
(every frame's own count: with the cache, a frame's temporal attention grows until the window is
full); a configuration's fraction of peak is its frames' counted GFLOP over their wall time, over
the best square matmul of its precision at its thread count, measured before and after its sessions
(the higher of the two).
``--compile`` plays with ``World.use_compile`` (its compilation happens in the warm-up session).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peak import count_gflop, fraction_of_peak, matmul_peak_gflops  # noqa: E402

from genie_cli.terminal import half_block_lines  # noqa: E402
from genie_core.models.world import World  # noqa: E402
from genie_core.runtime import inference, set_threads  # noqa: E402

RATIO_LIMIT = 1.3  # frame 16 vs frame 2: the cache keeps a frame's cost flat


def prompt_frame(resolution: tuple[int, int]) -> np.ndarray:
    """A smooth gradient with a bright square: any image works, this one is deterministic."""
    H, W = resolution
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([40 + 150 * x / W, 40 + 150 * y / H, 120 + 0 * x], -1)
    img[H // 3:H // 3 + H // 4, W // 3:W // 3 + W // 4] = 245
    return img.astype(np.uint8)


def session_times(world: World, prompt: np.ndarray, frames: int, seed: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds per ``World.step``; index n-1 is the step that makes session frame n
    (prompt = 0). On a shared machine, with one thread, a step's process CPU time is close to
    what it would take on an idle core, and far less noisy than its wall time."""
    world.encode_prompt(prompt, seed=seed)
    rng = np.random.default_rng(seed)
    wall, cpu = [], []
    for _ in range(frames):
        action = int(rng.integers(0, world.num_actions))
        start, start_cpu = time.perf_counter(), time.process_time()
        world.step(action)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def session_gflop(world: World, prompt: np.ndarray, frames: int, seed: int = 0) -> list[float]:
    """GFLOP of each ``World.step`` of one uncompiled session (index n-1 makes frame n)."""
    compiled, world.use_compile = world.use_compile, False
    world.encode_prompt(prompt, seed=seed)
    rng = np.random.default_rng(seed)
    out = [count_gflop(lambda: world.step(int(rng.integers(0, world.num_actions))))[0] for _ in range(frames)]
    world.use_compile = compiled
    return out


def decode_ms(world: World, reps: int = 5) -> float:
    """Median ms to decode one frame from ``decode_context`` frames of ids (what step does)."""
    ids = world.session_ids()[:, -world.decode_context:]
    # The session's tokenizer (a bf16 copy under bf16), as World.step uses it; private attribute,
    # so fall back to the bundle's tokenizer if the World changes.
    models = getattr(world, "_models", None)
    tokenizer = models[1] if models else world.tokenizer
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        with inference(world.device, world.precision):
            tokenizer.decode_ids(ids, last=True)
        out.append(time.perf_counter() - start)
    return 1000 * statistics.median(out)


def render_ms(world: World, reps: int = 5) -> float:
    frame = world.session_frames()[0, -1]
    start = time.perf_counter()
    for _ in range(reps):
        half_block_lines(frame, 80, 21)
    return 1000 * (time.perf_counter() - start) / reps


def run_config(world: World, prompt: np.ndarray, frames: int, repeats: int, precision: str,
               threads: int, cache: bool = True, gflop: list[float] | None = None,
               peak_size: int = 2048) -> dict:
    world.precision = precision
    world.use_cache = cache
    peaks = {p: matmul_peak_gflops(p, threads, peak_size) for p in ("bf16", "fp32")}
    set_threads(threads)  # as `genie play` does (threads and allocator)
    session_times(world, prompt, min(frames, 3), seed=99)  # warm-up (allocator, autocast caches)
    runs = [session_times(world, prompt, frames, seed=r) for r in range(repeats)]
    # and after the sessions, keeping the higher: one probe on a machine with noisy neighbours
    # can come out 30% low, which would inflate the fraction
    peaks = {p: max(g, matmul_peak_gflops(p, threads, peak_size)) for p, g in peaks.items()}
    peak, best = peaks[precision], max(peaks.values())  # best: where bf16 is emulated, fp32's
    wall, cpu = [w for w, _ in runs], [c for _, c in runs]
    at = lambda sessions, n: statistics.median(s[n - 1] for s in sessions)  # noqa: E731
    steady = lambda sessions: statistics.mean(t for s in sessions for t in s[1:])  # noqa: E731 frames 2..N
    g = gflop or [float("nan")] * frames
    g_mean = statistics.mean(g[1:])
    flops = {"gflop": g_mean, "gflop_frame2": g[1], f"gflop_frame{frames}": g[frames - 1], "peak_gflops": peak,
             "fraction_of_peak": fraction_of_peak(g_mean, steady(wall), peak),
             "best_peak_gflops": best, "fraction_of_best_peak": fraction_of_peak(g_mean, steady(wall), best),
             "fraction_frame2": fraction_of_peak(g[1], at(wall, 2), peak),
             f"fraction_frame{frames}": fraction_of_peak(g[frames - 1], at(wall, frames), peak)}
    return {"precision": precision, "threads": threads, "cache": cache, "compile": world.use_compile,
            "repeats": repeats, "frames": frames, **flops,
            "ms_frame2": 1000 * at(wall, 2), f"ms_frame{frames}": 1000 * at(wall, frames),
            "ratio": at(wall, frames) / at(wall, 2), "fps": 1 / steady(wall), "ms_mean": 1000 * steady(wall),
            "cpu_ms_frame2": 1000 * at(cpu, 2), f"cpu_ms_frame{frames}": 1000 * at(cpu, frames),
            "cpu_ratio": at(cpu, frames) / at(cpu, 2), "cpu_ms_mean": 1000 * steady(cpu),
            "cpu_fps": 1 / steady(cpu), "ms_decode": decode_ms(world), "ms_render": render_ms(world)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="play:5,coinrun-paper:1:1",
                        help="preset:sessions[:threads], comma separated; coinrun-paper (seconds a "
                             "frame) runs one session at 1 thread by default")
    parser.add_argument("--frames", type=int, default=16, help="generated frames per session")
    parser.add_argument("--precisions", default="bf16,fp32")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--steps", type=int, default=None, help="override MaskGIT steps (default: preset's)")
    parser.add_argument("--no-cache", action="store_true",
                        help="also time sessions without the KV cache (each frame recomputed)")
    parser.add_argument("--compile", action="store_true", help="play with torch.compile (World.use_compile)")
    parser.add_argument("--peak-size", type=int, default=2048, help="side of the square matmul of the peak")
    parser.add_argument("--json", action="store_true", help="one JSON line per configuration")
    args = parser.parse_args()
    if args.frames < 2:
        parser.error("--frames must be >= 2")

    precisions = args.precisions.split(",")
    if not set(precisions) <= {"bf16", "fp32"}:
        parser.error("--precisions takes bf16 and/or fp32 (the benchmark times each one as asked)")
    thread_counts = [int(t) for t in args.threads.split(",")]
    results = []
    for item in args.presets.split(","):
        name, reps, only_threads = (item.split(":") + ["", ""])[:3]
        torch.manual_seed(0)
        try:
            world = World.from_preset(name)
        except Exception as err:  # noqa: BLE001 - a preset another issue has not added yet
            print(f"# {name}: skipped ({str(err).splitlines()[0]})", file=sys.stderr)
            continue
        if args.steps:
            import dataclasses
            world.sampling = dataclasses.replace(world.sampling, steps=args.steps)
        desc = world.describe()
        dyn = world.dynamics.config
        print(f"# {name}: {desc['resolution'][0]}x{desc['resolution'][1]} frames, {desc['tokens']} tokens, "
              f"dynamics {dyn.depth}x{dyn.model_dim} ({desc['dynamics_parameters'] / 1e6:.1f}M), "
              f"{world.sampling.steps} MaskGIT steps, context {dyn.context_frames} frames, "
              f"tokenizer {desc['tokenizer_parameters'] / 1e6:.1f}M", flush=True,
              file=sys.stderr if args.json else sys.stdout)
        prompt = prompt_frame(world.resolution)
        world.precision = "fp32"  # the count is the same under bf16 (the same matmuls)
        gflop = session_gflop(world, prompt, args.frames)
        world.use_compile = args.compile
        for precision in precisions:
            for threads, cache in [(t, c) for t in ([int(only_threads)] if only_threads else thread_counts)
                                   for c in ((True, False) if args.no_cache else (True,))]:
                r = {"preset": name, "steps": world.sampling.steps,
                     **run_config(world, prompt, args.frames, int(reps or 1), precision, threads, cache,
                                  gflop, args.peak_size)}
                results.append(r)
                if args.json:
                    print(json.dumps(r), flush=True)
                else:
                    n = args.frames
                    # the limit is the cache's; without it the frame time grows by design
                    ok = lambda x: ("ok" if x <= RATIO_LIMIT else f"ABOVE {RATIO_LIMIT}") if cache else "grows"  # noqa: E731
                    print(f"{name:8s} {precision} t{threads}{'' if cache else ' no-cache'}: wall: frame 2 {r['ms_frame2']:7.1f} ms, frame {n} "
                          f"{r[f'ms_frame{n}']:7.1f} ms (ratio {r['ratio']:.2f} {ok(r['ratio'])}), mean "
                          f"{r['ms_mean']:7.1f} ms = {r['fps']:5.2f} fps | cpu: frame 2 {r['cpu_ms_frame2']:7.1f} "
                          f"ms, frame {n} {r[f'cpu_ms_frame{n}']:7.1f} ms (ratio {r['cpu_ratio']:.2f} "
                          f"{ok(r['cpu_ratio'])}), mean {r['cpu_ms_mean']:7.1f} ms = {r['cpu_fps']:5.2f} fps | "
                          f"decode {r['ms_decode']:5.1f} ms, render {r['ms_render']:4.1f} ms", flush=True)
                    print(f"{'':8s} {r['gflop']:.3f} GFLOP a frame, peak {r['peak_gflops']:.0f} GFLOP/s: "
                          f"{100 * r['fraction_of_peak']:.1f}% of peak, {100 * r['fraction_of_best_peak']:.1f}% of the "
                          f"faster precision's {r['best_peak_gflops']:.0f} (frame 2 {100 * r['fraction_frame2']:.1f}%, "
                          f"frame {n} {100 * r[f'fraction_frame{n}']:.1f}%)", flush=True)
    if args.json or not results:
        return
    print("\n# ratios in this run (same preset, same frame count)")
    for name in dict.fromkeys(r["preset"] for r in results):
        rows = {(r["precision"], r["threads"]): r for r in results if r["preset"] == name and r["cache"]}
        for threads in thread_counts:
            if ("bf16", threads) in rows and ("fp32", threads) in rows:
                f32, b16 = rows[("fp32", threads)], rows[("bf16", threads)]
                print(f"{name}: fp32 / bf16 mean frame time = {f32['ms_mean'] / b16['ms_mean']:.2f} wall, "
                      f"{f32['cpu_ms_mean'] / b16['cpu_ms_mean']:.2f} cpu, at {threads} thread(s)")
        for precision in precisions:
            if (precision, 1) in rows and (precision, 2) in rows:
                print(f"{name}: 1 thread / 2 threads mean frame time = "
                      f"{rows[(precision, 1)]['ms_mean'] / rows[(precision, 2)]['ms_mean']:.2f} ({precision})")


if __name__ == "__main__":
    main()
