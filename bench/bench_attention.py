"""Attention and rotary positions in a training step's shapes: the fused CPU kernel
(scaled_dot_product_attention) against softmax(q k^T) v written out, forward + backward, and the
rotary pass with split, upcast, concatenated halves against whole fp32 tables; and, in play's
shapes (one new frame over 2, 4 and ``--window`` cached frames, forward only), the fused kernel on
bf16 keys/values against the KV cache's fp32 attention. Interleaved rounds, medians, ratios
within this run (the ST transformer's and the cache's choices rest on these figures).

    python bench/bench_attention.py                  # the coinrun preset's dynamics step shapes
    python bench/bench_attention.py --batch 8 --frames 8 --threads 1 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def timed(fn, reps: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def fwd_bwd(attend, shape: tuple[int, ...], dtype: torch.dtype):
    q, k, v = (torch.randn(shape, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(shape, dtype=dtype)
    return lambda: attend(q, k, v).backward(grad)


def cached_pair(attend_cached, shape: tuple[int, ...]):
    """Play's step: one query frame (N, H, 1, Dh) over L cached frames (N, H, L, Dh), no grad,
    under bf16 autocast; the fused kernel reads bf16 keys/values, the cache's path fp32 ones."""
    N, H, L, Dh = shape
    q = torch.randn(N, H, 1, Dh).bfloat16()
    k, v = torch.randn(shape).bfloat16(), torch.randn(shape).bfloat16()
    k32, v32 = k.float(), v.float()

    def run(fn):
        def go():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                fn()
        return go
    return (run(lambda: F.scaled_dot_product_attention(q, k, v)), run(lambda: attend_cached(q, k32, v32)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=256, help="tokens per frame (S)")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from genie_core.models.layers.kv_cache import _attend_cached
    from genie_core.models.layers.st_transformer import (
        _band_mask,
        _explicit_attention,
        _grid_table,
        _rotate,
        apply_grid_rotary,
        grid_angles,
    )

    B, T, S, H, Dh = args.batch, args.frames, args.tokens, args.heads, args.head_dim
    bf16 = torch.bfloat16
    band = _band_mask(T, T, args.window, torch.device("cpu"))
    side = int(S ** 0.5)
    x = torch.randn(B * T, S, H, Dh, dtype=bf16, requires_grad=True)
    gx = torch.randn(B * T, S, H, Dh, dtype=bf16)
    angles = grid_angles(side, side, Dh)
    whole = _grid_table(side, side, Dh, H, torch.float32, torch.device("cpu"))  # what training uses

    def old_rotary():  # head-major, broadcast fp32 angles, split-upcast-concatenate
        apply_grid_rotary(x.transpose(1, 2), angles).backward(gx.transpose(1, 2))

    cases = {
        "temporal": (fwd_bwd(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=band),
                             (B * S, H, T, Dh), bf16),
                     fwd_bwd(lambda q, k, v: _explicit_attention(q, k, v, band), (B * S, H, T, Dh), bf16)),
        "spatial": (fwd_bwd(F.scaled_dot_product_attention, (B * T, H, S, Dh), bf16),
                    fwd_bwd(lambda q, k, v: _explicit_attention(q, k, v, torch.ones(S, S, dtype=torch.bool)),
                            (B * T, H, S, Dh), bf16)),
        "rotary": (old_rotary, lambda: _rotate(x, whole).backward(gx)),
    }
    for L in sorted({2, 4, args.window}):
        cases[f"cached{L}"] = cached_pair(_attend_cached, (S, H, L, Dh))
    for name, (base, new) in cases.items():
        times: dict[str, list[float]] = {"base": [], "new": []}
        for _ in range(args.rounds):
            times["base"].append(timed(base, args.reps))
            times["new"].append(timed(new, args.reps))
        b, n = statistics.median(times["base"]), statistics.median(times["new"])
        labels = {"temporal": ("fused SDPA, band mask", "explicit softmax"),
                  "spatial": ("fused SDPA", "explicit softmax"),
                  "rotary": ("split fp32 (apply_grid_rotary)", "whole fp32 tables (_rotate)")}.get(
                      name, ("fused SDPA, bf16 cache", "fp32 cache (_attend_cached)"))
        passes = "fwd" if name.startswith("cached") else "fwd+bwd"
        if args.json:
            print(json.dumps({"case": name, "passes": passes, "threads": args.threads, "base": labels[0], "base_ms": b * 1e3,
                              "new": labels[1], "new_ms": n * 1e3, "speedup": b / n}))
        else:
            print(f"{name:9s} {passes:8s} {labels[0]:32s} {b * 1e3:8.1f} ms   {labels[1]:30s} {n * 1e3:8.1f} ms"
                  f"   x{b / n:.2f}")


if __name__ == "__main__":
    main()
