"""Tokenizer speed and memory: encode and decode throughput (clips/s), one
training step (generator + discriminator, AdamW) and peak memory, in fp32 and bf16 autocast, for
the seed README's tokenizer (batch 4, 16 frames of 64x64, 2**18 and 2**10 codes) and `small`.

    nice -n 5 python bench/bench_tokenizer.py                   # all configs, fp32 and bf16
    python bench/bench_tokenizer.py --configs small --precisions bf16 --reps 2
    python bench/bench_tokenizer.py --against-seed ~/open-genie --configs seed-2^10,seed-2^18

With ``--against-seed PATH`` (a checkout of the earlier port that the user names; nothing is
downloaded), the seed README's configurations run through the port's own ``genie.VideoTokenizer``
and through genie_core in alternating subprocesses (``--rounds`` of each, medians), with the
perceptual and GAN losses off in both (the port imports torchvision for the first, a stand-in
package is put on its path when torchvision is missing; genie builds no discriminator, the port's
GAN weight is 0) and the training step as the seed README writes it:
``loss, aux = tokenizer(video); loss.backward()`` and an AdamW step over every parameter. Where
the port's constructor requires ``dec_desc``, it gets the encoder's mirror in its own blocks
(``_seed_dec_desc``), the same stages as genie's mirrored decoder. The ratios printed are port
time over genie time, both measured in this run.

Each (config, precision) runs in its own subprocess so that peak memory (ru_maxrss) is its own;
the bf16/fp32 ratios are between subprocesses of this one run. Each worker first measures how
much machine it is getting (fp32 conv3d GFLOP/s, column "probe"): absolute figures from a busy
shared machine are only comparable at similar probe values. The perceptual loss uses a random
VGG16 file (same compute as the real weights). The seed's figures quoted for comparison were
measured by the issue's author with the seed's code on this machine class (not re-run here).
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

# Seed (myscience/open-genie) on the same machine class (measured earlier, not re-run here): seconds per clip.
SEED = {"encode_s_per_clip": 0.5, "decode_s_per_clip": 0.26, "step_s_2p10_b4": 15.0,
        "step_2p18_b4": "OOM > 16 GB"}

SEED_ENC_DESC = [  # the README's encoder; proj_out emits d_codebook channels
    ["causal", {"in_channels": 3, "out_channels": 64, "kernel_size": 3}],
    ["residual", {"in_channels": 64, "kernel_size": 3, "downsample": [1, 2], "use_causal": True,
                  "use_blur": True}],
    ["residual", {"in_channels": 64, "out_channels": 128}],
    ["residual", {"n_rep": 2, "in_channels": 128}],
    ["residual", {"in_channels": 128, "out_channels": 256, "kernel_size": 3, "downsample": 2,
                  "use_causal": True}],
    ["proj_out", {"in_channels": 256, "out_channels": None, "num_groups": 8, "kernel_size": 3}],
]
SEED_DISC = dict(inp_size=(64, 64), model_dim=64, dim_mults=(1, 2, 4), down_step=(None, 2, 2),
                 inp_channels=3, kernel_size=3, num_groups=8, act_fn="leaky", use_blur=True,
                 use_attn=True, num_heads=4, dim_head=32)
CONFIGS = {  # name -> (description, batch, frames)
    "seed-2^18": ("seed README tokenizer, d_codebook=18", 4, 16),
    "seed-2^10": ("seed README tokenizer, d_codebook=10", 4, 16),
    "small": ("preset small (time /1, space /4, 2^10)", 8, 8),
}


def _random_vgg16(home: Path) -> None:
    import torch

    cfg = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
    state, idx, c = {}, 0, 3
    for v in cfg:
        if v == "M":
            idx += 1
            continue
        state[f"features.{idx}.weight"] = torch.randn(v, c, 3, 3) * (2 / (9 * c)) ** 0.5
        state[f"features.{idx}.bias"] = torch.zeros(v)
        idx, c = idx + 2, v
    (home / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(state, home / "hub" / "checkpoints" / "vgg16-397923af.pth")


# The encoder's mirror in the port's own block vocabulary, for versions of the port whose
# constructor requires dec_desc (its MAGVIT2_DEC_DESC does not build there, and where it builds
# it upsamples time 4x after this encoder's 2x). Same stages as genie's mirrored decoder below.
def _seed_dec_desc(bits: int) -> tuple:
    return (
        ("causal", {"in_channels": bits, "out_channels": 256, "kernel_size": 3}),
        ("residual", {"in_channels": 256, "out_channels": 128, "use_causal": True}),
        ("spacetime_upsample", {"in_channels": 128, "time_factor": 2, "space_factor": 2, "kernel_size": 3}),
        ("adaptive_group_norm", {"dim_cond": bits, "num_groups": 1, "num_channels": 128, "has_ext": True}),
        ("residual", {"n_rep": 2, "in_channels": 128, "use_causal": True}),
        ("residual", {"in_channels": 128, "out_channels": 64, "use_causal": True}),
        ("residual", {"in_channels": 64, "use_causal": True}),
        ("space_upsample", {"in_channels": 64, "factor": 2}),
        ("proj_out", {"in_channels": 64, "out_channels": 3, "num_groups": 8, "kernel_size": 3}),
    )


def build(name: str, seed_path: str | None = None, perceptual: bool = True, gan: bool = True):
    """The config's tokenizer from genie_core, or with ``seed_path`` from the port's ``genie``
    package (the same README arguments); ``perceptual`` False turns the VGG16 loss off, ``gan``
    False builds no discriminator (genie) or sets the port's GAN weight to 0."""
    if seed_path is None:
        from genie_core.models.tokenizer import VideoTokenizer
    else:
        VideoTokenizer = _seed_tokenizer_class(seed_path)
    if name == "small":
        return VideoTokenizer.from_preset("small")
    bits = 18 if name == "seed-2^18" else 10
    enc = [list(b) for b in SEED_ENC_DESC]
    enc[-1] = ["proj_out", {**enc[-1][1], "out_channels": bits}]
    kw = dict(d_codebook=bits, n_codebook=1, lfq_bias=True, lfq_frac_sample=1.0, lfq_commit_weight=0.25,
              lfq_entropy_weight=0.1, lfq_diversity_weight=1.0, gan_discriminate="frames",
              gan_frames_per_batch=4)
    if seed_path is None:
        # The decoder mirrors the encoder on both sides: the README's MAGVIT2_DEC_DESC upsamples
        # time 4x after this encoder's 2x, so it cannot reconstruct the input's shape.
        return VideoTokenizer(enc_desc=enc, disc_kwargs=SEED_DISC if gan else None,
                              perceptual_model="vgg16" if perceptual else None, **kw)
    import inspect

    import torch.nn as nn

    enc = tuple((kind, dict(kwargs)) for kind, kwargs in enc)  # the README passes tuples
    params = inspect.signature(VideoTokenizer.__init__).parameters
    if "dec_desc" in params and params["dec_desc"].default is inspect.Parameter.empty:
        kw["dec_desc"] = _seed_dec_desc(bits)
    if not perceptual and "perc_loss_weight" in params:
        kw["perc_loss_weight"] = 0.0
    if not gan and "gan_loss_weight" in params:
        kw["gan_loss_weight"] = 0.0
    model = VideoTokenizer(enc_desc=enc, disc_kwargs=SEED_DISC, **kw)

    class _Zero(nn.Module):  # the port calls its switched-off criteria (nn.Identity) with keywords
        def forward(self, *args, **kwargs):
            return next(model.parameters()).new_zeros(())

    for attr in ("gan_crit", "perc_crit"):
        if isinstance(getattr(model, attr, None), nn.Identity):
            setattr(model, attr, _Zero())
    return model


def _seed_tokenizer_class(seed_path: str):
    """``genie.VideoTokenizer`` from the checkout at seed_path (a stand-in torchvision on the
    path when the real one is missing: the port imports it for its perceptual loss only)."""
    root = Path(seed_path).expanduser().resolve()
    if not (root / "genie" / "__init__.py").is_file():
        raise SystemExit(f"{root}: no genie/__init__.py (pass the root of an open-genie checkout)")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        stub = Path(tempfile.mkdtemp(prefix="torchvision_stub_"))
        # Every name of every submodule the port (or lightning's torchmetrics, which the port
        # imports) asks for resolves to a callable that raises: nothing of torchvision runs.
        missing = ("def _missing(*a, **k):\n    raise ImportError('torchvision stand-in: perceptual loss is off')\n"
                   "def __getattr__(name):\n    if name.startswith('__'):\n        raise AttributeError(name)\n"
                   "    return _missing\n")
        subs = ("models", "transforms", "ops", "datasets", "io", "utils")
        (stub / "torchvision").mkdir()
        (stub / "torchvision" / "__init__.py").write_text(
            "".join(f"from . import {m}\n" for m in subs) + "__version__ = '0.0.0+stand-in'\n" + missing)
        for m in subs:
            if m != "transforms":  # a package, for transforms.functional
                (stub / "torchvision" / f"{m}.py").write_text(missing)
        (stub / "torchvision" / "transforms").mkdir()
        (stub / "torchvision" / "transforms" / "__init__.py").write_text("from . import functional\n" + missing)
        (stub / "torchvision" / "transforms" / "functional.py").write_text(missing)
        sys.path.insert(0, str(stub))
    sys.path.insert(0, str(root))
    import genie

    if Path(genie.__file__).resolve().parent != root / "genie":
        raise SystemExit(f"imported genie from {genie.__file__}, not from {root}")
    return genie.VideoTokenizer


def _timed(fn, reps: int) -> float:
    """Median seconds of ``reps`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def conv_probe(device) -> float:
    """fp32 conv3d GFLOP/s right now: how much machine this worker got (shared, noisy hosts).
    On the idle development machine: about 300 with 2 threads."""
    import torch
    import torch.nn.functional as F

    x = torch.randn(1, 64, 8, 32, 32, device=device)
    w = torch.randn(64, 64, 3, 3, 3, device=device)
    flops = 2 * 64 * 64 * 27 * 8 * 32 * 32
    return flops / _timed(lambda: F.conv3d(x, w, padding=1), 3) / 1e9


def worker(name: str, precision: str, reps: int, threads: int, device: str, impl: str = "genie",
           seed_path: str | None = None, batch: int = 0, frames: int = 0) -> dict:
    """One config in one precision through genie_core (impl "genie") or the port ("seed")."""
    import torch

    from genie_core.runtime import autocast, resolve_device

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    home = Path(tempfile.mkdtemp(prefix="bench_vgg_"))
    _random_vgg16(home)
    os.environ["TORCH_HOME"] = str(home)
    dev = resolve_device(device)
    probe = conv_probe(dev)
    _, default_batch, default_frames = CONFIGS[name]
    batch, frames = batch or default_batch, frames or default_frames
    against = seed_path is not None  # both sides timed the seed README's way, perceptual off
    model = build(name, seed_path if impl == "seed" else None, perceptual=not against, gan=not against).to(dev)
    disc = getattr(getattr(model, "config", None), "disc", None)
    size = disc.inp_size if disc else (64, 64)
    video = (torch.rand(batch, 3, frames, *size, device=dev) * 2 - 1)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def encode():
        with torch.no_grad(), autocast(dev, precision):
            out = model.tokenize(video)
        sync()
        return out

    model.eval()
    codes, _ = encode()
    enc_s = _timed(encode, reps)

    def decode():
        with torch.no_grad(), autocast(dev, precision):
            model.decode(codes)
        sync()

    dec_s = _timed(decode, reps)

    model.train()
    if against:  # the seed README's training step, the same code for both
        params = list(model.parameters())
        opt = torch.optim.AdamW(params, lr=1e-4)

        def step():
            with autocast(dev, precision):
                loss, _ = model(video)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()
    else:
        params = list(model.generator_parameters())
        gen_opt = torch.optim.AdamW(params, lr=1e-4)
        disc_opt = torch.optim.AdamW(model.discriminator.parameters(), lr=1e-4) if model.discriminator else None

        def step():
            with autocast(dev, precision):
                loss, _, rec = model.generator_loss(video)
            gen_opt.zero_grad(set_to_none=True)
            loss.backward()
            gen_opt.step()
            if disc_opt is not None:
                with autocast(dev, precision):
                    d_loss, _ = model.discriminator_loss(video, rec)
                disc_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                disc_opt.step()
            sync()

    step_s = _timed(step, max(1, reps - 1))
    peak = (torch.cuda.max_memory_allocated() / 2 ** 30 if dev.type == "cuda" else
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20)  # KiB -> GiB on Linux
    return {"config": name, "impl": impl, "precision": precision, "batch": batch, "frames": frames,
            "params_M": sum(p.numel() for p in params) / 1e6,
            "encode_clips_s": batch / enc_s, "decode_clips_s": batch / dec_s, "step_s": step_s,
            "peak_GiB": peak, "threads": threads, "device": str(dev), "fp32_conv_gflops": probe}


def against_seed(args: argparse.Namespace) -> None:
    """The port and genie alternately, ``--rounds`` times each, in subprocesses; medians; ratios."""
    rows: dict[tuple[str, str, str], list[dict]] = {}
    configs = [c for c in args.configs.split(",") if c.startswith("seed")] or ["seed-2^10", "seed-2^18"]
    for _ in range(args.rounds):
        for name in configs:
            for precision in args.precisions.split(","):
                for impl in ("seed", "genie"):
                    cmd = [sys.executable, __file__, "--worker", name, precision, "--reps", str(args.reps),
                           "--threads", str(args.threads), "--device", args.device, "--impl", impl,
                           "--against-seed", args.against_seed, "--batch", str(args.batch),
                           "--frames", str(args.frames), "--mem-limit-gb", str(args.mem_limit_gb)]
                    print(f"# running {impl} {name} {precision} ...", file=sys.stderr, flush=True)
                    proc = subprocess.run(cmd, capture_output=True, text=True)
                    if proc.returncode != 0:
                        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                        res = {"config": name, "impl": impl, "precision": precision, "failed": tail[-200:]}
                    else:
                        res = json.loads(proc.stdout.strip().splitlines()[-1])
                    rows.setdefault((name, precision, impl), []).append(res)
                    if args.json:
                        print(json.dumps(res), flush=True)
    keys = ("encode_clips_s", "decode_clips_s", "step_s", "peak_GiB")

    def med(name: str, precision: str, impl: str) -> dict | None:
        ok = [r for r in rows.get((name, precision, impl), []) if "failed" not in r]
        return {k: statistics.median(r[k] for r in ok) for k in keys} if ok else None

    print(f"\n{'config':<11} {'prec':<5} {'impl':<6} {'enc clips/s':>12} {'dec clips/s':>12} {'step s':>8} "
          f"{'peak GiB':>9}")
    for name in configs:
        for precision in args.precisions.split(","):
            for impl in ("seed", "genie"):
                m = med(name, precision, impl)
                if m is None:
                    fail = rows[(name, precision, impl)][-1].get("failed", "?")
                    print(f"{name:<11} {precision:<5} {impl:<6} FAILED ({fail})")
                    continue
                print(f"{name:<11} {precision:<5} {impl:<6} {m['encode_clips_s']:>12.2f} {m['decode_clips_s']:>12.2f}"
                      f" {m['step_s']:>8.2f} {m['peak_GiB']:>9.2f}")
    print("\ngenie over the port, same config and precision, this run (x = times faster):")
    for name in configs:
        for precision in args.precisions.split(","):
            a, b = med(name, precision, "seed"), med(name, precision, "genie")
            if a and b:
                line = {"config": name, "precision": precision,
                        "encode_speedup": b["encode_clips_s"] / a["encode_clips_s"],
                        "decode_speedup": b["decode_clips_s"] / a["decode_clips_s"],
                        "step_speedup": a["step_s"] / b["step_s"], "peak_ratio": b["peak_GiB"] / a["peak_GiB"]}
                print(f"  {name:<11} {precision:<5} encode x{line['encode_speedup']:.2f}  decode "
                      f"x{line['decode_speedup']:.2f}  step x{line['step_speedup']:.2f}  memory "
                      f"{line['peak_ratio']:.2f}x of the port's")
                if args.json:
                    print(json.dumps({"comparison": line}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions (median), after one warm-up")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true", help="print one JSON line per result too")
    ap.add_argument("--against-seed", metavar="PATH", help="a checkout of the earlier port (open-genie): "
                    "time it and genie side by side on the seed README's configurations")
    ap.add_argument("--rounds", type=int, default=2, help="with --against-seed: alternations of port and genie")
    ap.add_argument("--batch", type=int, default=0, help="clips per batch (default: the config's)")
    ap.add_argument("--frames", type=int, default=0, help="frames per clip (default: the config's)")
    ap.add_argument("--mem-limit-gb", type=float, default=16.0,
                    help="with --against-seed: address-space limit of each worker (an OOM is reported, not swapped)")
    ap.add_argument("--worker", nargs=2, metavar=("CONFIG", "PRECISION"), help=argparse.SUPPRESS)
    ap.add_argument("--impl", default="genie", choices=("genie", "seed"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        if args.against_seed and args.mem_limit_gb > 0:
            limit = int(args.mem_limit_gb * 2 ** 30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print(json.dumps(worker(*args.worker, args.reps, args.threads, args.device, args.impl,
                                args.against_seed, args.batch, args.frames)))
        return
    if args.against_seed:
        against_seed(args)
        return
    results = {}
    for name in args.configs.split(","):
        for precision in args.precisions.split(","):
            cmd = [sys.executable, __file__, "--worker", name, precision, "--reps", str(args.reps),
                   "--threads", str(args.threads), "--device", args.device]
            print(f"# running {name} {precision} ...", file=sys.stderr, flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{name} {precision}: FAILED ({tail})")
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            results[name, precision] = res
            if args.json:
                print(json.dumps(res))
    print(f"\n{'config':<11} {'prec':<5} {'batch':>5} {'params':>7} {'enc clips/s':>12} {'dec clips/s':>12} "
          f"{'step s':>8} {'peak GiB':>9} {'probe':>6}")
    for (name, precision), r in results.items():
        print(f"{name:<11} {precision:<5} {r['batch']:>3}x{r['frames']:<2}{r['params_M']:>6.1f}M "
              f"{r['encode_clips_s']:>12.2f} {r['decode_clips_s']:>12.2f} {r['step_s']:>8.2f} {r['peak_GiB']:>9.2f}"
              f" {r['fp32_conv_gflops']:>6.0f}")
    print("(probe: fp32 conv3d GFLOP/s measured in each worker before its timings; ~300 on the idle "
          "2-core development machine with 2 threads: lower means a busy machine)")
    print("\nbf16 / fp32 (same run):")
    for name in args.configs.split(","):
        a, b = results.get((name, "fp32")), results.get((name, "bf16"))
        if a and b:
            print(f"  {name:<11} encode x{b['encode_clips_s'] / a['encode_clips_s']:.2f}  "
                  f"decode x{b['decode_clips_s'] / a['decode_clips_s']:.2f}  "
                  f"step x{a['step_s'] / b['step_s']:.2f} faster  peak {b['peak_GiB'] / a['peak_GiB']:.2f}x")
    print(f"\nvs the seed's figures (measured earlier; not re-run here): {SEED}")
    for (name, precision), r in results.items():
        if not name.startswith("seed"):
            continue
        line = (f"  {name:<11} {precision:<5} encode x{SEED['encode_s_per_clip'] * r['encode_clips_s']:.1f}  "
                f"decode x{SEED['decode_s_per_clip'] * r['decode_clips_s']:.1f}")
        if name == "seed-2^10":
            line += f"  step x{SEED['step_s_2p10_b4'] / r['step_s']:.1f}"
        else:
            line += f"  step {r['step_s']:.2f} s at {r['peak_GiB']:.2f} GiB (seed: {SEED['step_2p18_b4']})"
        print(line)


if __name__ == "__main__":
    main()
