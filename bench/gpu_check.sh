#!/usr/bin/env bash
# Every CUDA path in a few minutes on one GPU: each training stage in bf16, tokenize, reconstruct,
# scripted play, evaluate, torchrun with nccl; then GPU figures (matmul peak, play fps, training
# clips/s, peak memory). Makes its own clips; stops at the first error.
#
#   bash bench/gpu_check.sh [OUT_DIR]        # default: a new temporary folder
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
trap 'echo "gpu_check: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: no CUDA device (torch.cuda.is_available() is False): gpu_check needs a GPU" >&2
    exit 2
fi
out="${1:-$(mktemp -d -t genie-gpu-XXXX)}"
mkdir -p "$out"
start=$SECONDS
step() { echo "== [$((SECONDS - start)) s] $*" >&2; }
python -c "import torch; print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))" >&2

step "clips: $out/clips (training), $out/heldout"
python "$root/examples/sprite_clips.py" "$out/clips" --clips 16 --frames 16 --seed 0 --prompt "$out/prompt.png"
python "$root/examples/sprite_clips.py" "$out/heldout" --clips 4 --frames 16 --seed 1

common=(--preset quickstart --data "$out/clips" --device cuda --precision bf16)
step "genie train --stage all (tokenizer, lam, dynamics; 20 steps each, bf16, cuda)"
genie train "${common[@]}" --steps 20 --out "$out/run" --stage all --set data.val_clips=4 --json
world="$out/run/world.safetensors"
test -f "$world"

step "genie train --compile (tokenizer, 5 steps, cuda)"
genie train "${common[@]}" --out "$out/run_compile" --stage tokenizer --steps 5 --compile --json

step "genie tokenize / reconstruct (cuda)"
genie tokenize "$out/heldout/sprite_000.gif" -o "$out/tokens.npz" -c "$world" --device cuda
genie reconstruct "$out/heldout/sprite_000.gif" -o "$out/rec.mp4" -c "$world" --device cuda \
    --compare "$out/compare.png"

step "genie play (scripted, cuda, with and without the cache)"
genie play -w "$world" --prompt "$out/prompt.png" --actions 0,1,0,1,0,1 -o "$out/play.gif" --device cuda --json
genie play -w "$world" --prompt "$out/prompt.png" --actions 0,1,0,1 -o "$out/play_nc.gif" --device cuda \
    --no-cache --json

step "genie evaluate (cuda)"
genie evaluate "$out/heldout" -w "$world" --clips 4 --device cuda --json

step "torchrun --nproc_per_node 1: genie train on cuda, then DDP + all_reduce over nccl"
torchrun --nproc_per_node 1 -m genie_cli train "${common[@]}" --out "$out/run_torchrun" \
    --stage tokenizer --steps 5 --json
cat > "$out/nccl_check.py" <<'EOF'
import os, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from genie_core.config import load_preset
from genie_core.models.dynamics import DynamicsModel
dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
torch.cuda.set_device(dev)
dist.init_process_group("nccl")
model = DDP(DynamicsModel(load_preset("tiny").dynamics).to(dev), device_ids=[dev.index])
ids = torch.randint(0, 256, (2, 4, 8, 8), device=dev)
with torch.autocast("cuda", dtype=torch.bfloat16):
    loss = sum(logits.float().mean() for logits in model(ids))
loss.backward()
t = torch.ones(1, device=dev)
dist.all_reduce(t)
assert t.item() == dist.get_world_size(), t
print(f"nccl: DDP backward and all_reduce over {dist.get_world_size()} process(es) ok")
dist.destroy_process_group()
EOF
torchrun --nproc_per_node 1 "$out/nccl_check.py"

step "GPU figures"
python - "$out" <<'EOF'
import json, sys, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, "bench")
from _peak import matmul_peak_gflops
from genie_core.config import load_preset
from genie_core.training.train import train
from genie_core.models.world import World

out = Path(sys.argv[1])
for p in ("bf16", "fp32"):
    print(f"matmul peak {p}: {matmul_peak_gflops(p, 1, 4096, device='cuda') / 1e3:.1f} TFLOP/s")
for name in ("play", "coinrun-paper"):
    torch.cuda.reset_peak_memory_stats()
    world = World.from_preset(name).to("cuda")
    prompt = np.full((*world.resolution, 3), 128, np.uint8)
    world.encode_prompt(prompt, seed=0)
    for a in range(4):
        world.step(a % world.num_actions)  # warm-up
    world.encode_prompt(prompt, seed=1)
    t0 = time.perf_counter()
    for a in range(16):
        world.step(a % world.num_actions)  # returns numpy: synchronised
    dt = (time.perf_counter() - t0) / 16
    print(f"play {name}: {1 / dt:.1f} fps ({1000 * dt:.1f} ms a frame, bf16, decoding included), "
          f"peak memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    del world
for stage in ("tokenizer", "lam", "dynamics"):
    torch.cuda.reset_peak_memory_stats()
    run = out / "run"
    sets = [f"train.{stage}.steps=30", f"train.{stage}.log_every=10", f"train.{stage}.eval_every=1000"]
    inputs = {"tokenizer": run / "tokenizer" / "last.safetensors", "lam": run / "lam" / "last.safetensors"}
    train(load_preset("quickstart", sets), out / "clips", out / f"fig_{stage}", stage=stage,
          device="cuda", inputs=inputs)
    rows = [json.loads(l) for l in open(out / f"fig_{stage}" / stage / "metrics.jsonl")]
    rate = [r["clips_per_s"] for r in rows if r.get("split") == "train"][-1]  # after warm-up
    print(f"train {stage} (quickstart, bf16): {rate:.1f} clips/s, peak memory "
          f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
EOF
step "gpu_check: all CUDA paths ran (outputs in $out)"
