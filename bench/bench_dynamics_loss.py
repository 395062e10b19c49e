"""The dynamics model's training pass (loss forward and backward, no optimiser) three ways, in one
process, rounds interleaved, medians: eager; compiled as `genie train` compiles it (the rotary
tables looked up outside the graph and passed in); compiled with the tables traced into the graph
(their cos and sin recomputed in every forward and backward: the baseline). Each beside the
fraction of the fp32 matmul peak measured in the same process (bench/_peak.py).

    python bench/bench_dynamics_loss.py --preset coinrun --threads 2
    python bench/bench_dynamics_loss.py --preset tiny --rounds 2 --json      # a quick check

Batch and clip length are the preset's dynamics training settings (``train.dynamics.batch_size``,
``train.dynamics.num_frames``) unless given. Token ids and actions are random (the compute does
not depend on their values). Figures are only comparable within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peak import count_gflop, fraction_of_peak, matmul_peak_gflops  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="coinrun")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2, help="timed passes per variant and round")
    ap.add_argument("--json", action="store_true", help="one JSON line per variant")
    args = ap.parse_args()

    import torch

    import genie_core.models.layers.st_transformer as st
    from genie_core.config import dynamics_config_for_preset, load_preset
    from genie_core.models.dynamics import DynamicsModel
    from genie_core.runtime import compile_blocker, compile_in_place

    torch.set_num_threads(args.threads)
    cfg = load_preset(args.preset)
    tcfg = cfg.train.dynamics
    B = args.batch_size or tcfg.batch_size
    T = args.frames or tcfg.num_frames or cfg.data.num_frames
    torch.manual_seed(0)
    model = DynamicsModel(dynamics_config_for_preset(cfg)).train()
    h, w = model.token_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (B, T, h, w), generator=g)
    actions = torch.randint(0, model.num_actions, (B, T - 1), generator=g)

    class Loss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self) -> torch.Tensor:
            return self.model.loss(ids, actions, generator=torch.Generator().manual_seed(1))[0]

    looked_up = st._rotation_tables
    variants = {"eager": (Loss(), looked_up)}
    blocker = compile_blocker(torch.device("cpu"))
    if blocker:
        print(f"torch.compile unavailable ({blocker}): eager only", file=sys.stderr)
    else:
        variants["compiled"] = (compile_in_place(Loss()), looked_up)
        variants["compiled_traced_tables"] = (compile_in_place(Loss()), st._traced_rotation_tables)

    def one(name: str) -> float:
        module, tables = variants[name]
        st._rotation_tables = tables
        try:
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            module().backward()
            return time.perf_counter() - start
        finally:
            st._rotation_tables = looked_up

    gflop, _ = count_gflop(lambda: variants["eager"][0]().backward())
    warm: dict[str, float] = {}
    for name in variants:  # compile (or warm up) each: the first two passes
        warm[name] = one(name) + one(name)
    peak = matmul_peak_gflops("fp32", args.threads)
    times: dict[str, list[float]] = {n: [] for n in variants}
    for _ in range(args.rounds):
        for name in variants:
            times[name].extend(one(name) for _ in range(args.steps))
    peak = max(peak, matmul_peak_gflops("fp32", args.threads))
    base = statistics.median(times["eager"])
    print(f"dynamics loss pass on {args.preset}: batch {B} x {T} frames of {h}x{w} tokens, {args.threads} "
          f"thread(s), fp32, {args.rounds} rounds x {args.steps} passes, {gflop:.1f} GFLOP a pass",
          file=sys.stderr if args.json else sys.stdout)
    for name in variants:
        s = statistics.median(times[name])
        row = {"preset": args.preset, "variant": name, "precision": "fp32", "threads": args.threads,
               "batch": B, "frames": T, "step_s": round(s, 4), "speedup_vs_eager": round(base / s, 3),
               "first_two_s": round(warm[name], 2), "gflop": round(gflop, 2),
               "peak_gflops": round(peak, 1), "fraction_of_peak": round(fraction_of_peak(gflop, s, peak), 4)}
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{name:22s} {s:7.3f} s/pass  x{base / s:5.2f} vs eager  "
                  f"{100 * row['fraction_of_peak']:5.1f}% of the fp32 peak ({peak:.0f} GFLOP/s)  "
                  f"first two passes {warm[name]:.1f} s")


if __name__ == "__main__":
    main()
