#!/usr/bin/env bash
# Every CUDA path in a few minutes on one GPU: each training stage in bf16, tokenize, reconstruct,
# scripted play, evaluate, torchrun with nccl; then GPU figures (matmul peak, play fps, training
# clips/s, peak memory). Makes its own clips; stops at the first error.
#
#   bash bench/gpu_check.sh [OUT_DIR]        # default: a new temporary folder
#   GENIE_CHECK_DEVICE=cpu bash bench/gpu_check.sh   # a dry run of the same paths on the CPU
#                                                    # (gloo for nccl, fewer play frames): checks the
#                                                    # script itself on a machine without a GPU
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
trap 'echo "gpu_check: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

device="${GENIE_CHECK_DEVICE:-cuda}"
if [[ $device != cuda && $device != cpu ]]; then
    echo "error: GENIE_CHECK_DEVICE must be cuda or cpu, not '$device'" >&2
    exit 2
fi
if [[ $device == cuda ]] && ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: no CUDA device (torch.cuda.is_available() is False): gpu_check needs a GPU (GENIE_CHECK_DEVICE=cpu for a dry run)" >&2
    exit 2
fi
export GENIE_CHECK_DEVICE=$device  # what the embedded Python scripts below read
out="${1:-$(mktemp -d -t genie-gpu-XXXX)}"
mkdir -p "$out"
start=$SECONDS
step() { echo "== [$((SECONDS - start)) s] $*" >&2; }
python -c "import os, torch; print('torch', torch.__version__, 'on',
      torch.cuda.get_device_name(0) if os.environ['GENIE_CHECK_DEVICE'] == 'cuda' else 'the CPU (dry run)')" >&2

step "clips: $out/clips (training), $out/heldout"
python "$root/examples/sprite_clips.py" "$out/clips" --clips 16 --frames 16 --seed 0 --prompt "$out/prompt.png"
python "$root/examples/sprite_clips.py" "$out/heldout" --clips 4 --frames 16 --seed 1

common=(--preset quickstart --data "$out/clips" --device "$device" --precision bf16)
step "genie train --stage all (tokenizer, lam, dynamics; 20 steps each, bf16, $device)"
genie train "${common[@]}" --steps 20 --out "$out/run" --stage all --set data.val_clips=4 --json
world="$out/run/world.safetensors"
test -f "$world"

step "genie train --compile (tokenizer, 5 steps, $device)"
genie train "${common[@]}" --out "$out/run_compile" --stage tokenizer --steps 5 --compile --json

step "genie tokenize / reconstruct ($device)"
genie tokenize "$out/heldout/sprite_000.gif" -o "$out/tokens.npz" -c "$world" --device "$device"
genie reconstruct "$out/heldout/sprite_000.gif" -o "$out/rec.mp4" -c "$world" --device "$device" \
    --compare "$out/compare.png"

step "genie play (scripted, $device, with and without the cache)"
genie play -w "$world" --prompt "$out/prompt.png" --actions 0,1,0,1,0,1 -o "$out/play.gif" --device "$device" --json
genie play -w "$world" --prompt "$out/prompt.png" --actions 0,1,0,1 -o "$out/play_nc.gif" --device "$device" \
    --no-cache --json

step "genie evaluate ($device)"
genie evaluate "$out/heldout" -w "$world" --clips 4 --device "$device" --json

step "torchrun --nproc_per_node 1: genie train on $device, then DDP + all_reduce (nccl on cuda, gloo on cpu)"
torchrun --nproc_per_node 1 -m genie_cli train "${common[@]}" --out "$out/run_torchrun" \
    --stage tokenizer --steps 5 --json
cat > "$out/nccl_check.py" <<'EOF'
import os, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from genie_core.models.dynamics import DynamicsModel
cuda = os.environ["GENIE_CHECK_DEVICE"] == "cuda"
dev = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
if cuda:
    torch.cuda.set_device(dev)
dist.init_process_group("nccl" if cuda else "gloo")
net = DynamicsModel.from_preset("tiny").to(dev)  # paired with tiny's tokenizer and LAM
model = DDP(net, device_ids=[dev.index]) if cuda else DDP(net)
h, w = net.config.token_size
ids = torch.randint(0, 2 ** net.config.code_bits, (2, 4, h, w), device=dev)
with torch.autocast(dev.type, dtype=torch.bfloat16):
    loss = sum(logits.float().mean() for logits in model(ids))
loss.backward()
t = torch.ones(1, device=dev)
dist.all_reduce(t)
assert t.item() == dist.get_world_size(), t
print(f"{dist.get_backend()}: DDP backward and all_reduce over {dist.get_world_size()} process(es) ok")
dist.destroy_process_group()
EOF
torchrun --nproc_per_node 1 "$out/nccl_check.py"

step "figures ($device)"
python - "$out" <<'EOF'
import json, os, sys, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, "bench")
from _peak import matmul_peak_gflops
from genie_core.config import load_preset
from genie_core.training.train import train
from genie_core.models.world import World

out, device = Path(sys.argv[1]), os.environ["GENIE_CHECK_DEVICE"]
cuda = device == "cuda"


def reset_peak() -> None:
    if cuda:
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> str:
    return f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if cuda else "n/a on the CPU"


for p in ("bf16", "fp32"):
    gflops = matmul_peak_gflops(p, 1, 4096 if cuda else 1024, device=device)
    print(f"matmul peak {p}: {gflops / 1e3:.1f} TFLOP/s")
warm, timed = (4, 16) if cuda else (1, 3)
for name in ("play", "coinrun-paper") if cuda else ("play",):
    reset_peak()
    world = World.from_preset(name).to(device)
    prompt = np.full((*world.resolution, 3), 128, np.uint8)
    world.encode_prompt(prompt, seed=0)
    for a in range(warm):
        world.step(a % world.num_actions)  # warm-up
    world.encode_prompt(prompt, seed=1)
    t0 = time.perf_counter()
    for a in range(timed):
        world.step(a % world.num_actions)  # returns numpy: synchronised
    dt = (time.perf_counter() - t0) / timed
    print(f"play {name}: {1 / dt:.1f} fps ({1000 * dt:.1f} ms a frame, bf16, decoding included), "
          f"peak memory {peak_memory()}")
    del world
for stage in ("tokenizer", "lam", "dynamics"):
    reset_peak()
    run = out / "run"
    sets = [f"train.{stage}.steps=30", f"train.{stage}.log_every=10", f"train.{stage}.eval_every=1000"]
    inputs = {"tokenizer": run / "tokenizer" / "last.safetensors", "lam": run / "lam" / "last.safetensors"}
    train(load_preset("quickstart", sets), out / "clips", out / f"fig_{stage}", stage=stage,
          device=device, inputs=inputs)
    rows = [json.loads(l) for l in open(out / f"fig_{stage}" / stage / "metrics.jsonl")]
    rate = [r["clips_per_s"] for r in rows if r.get("split") == "train"][-1]  # after warm-up
    print(f"train {stage} (quickstart, bf16): {rate:.1f} clips/s, peak memory {peak_memory()}")
EOF
step "gpu_check: all paths ran on $device (outputs in $out)"
