#!/usr/bin/env bash
# Quick start, the main job end to end on a built-in example (no download), Genie §2-3: write
# synthetic clips of a sprite moved by known actions, train a world (tokenizer, latent action
# model, dynamics) with `genie train --stage all`, then tokenize / reconstruct a clip, infer the
# latent actions and compare them with the truth, play a scripted rollout and measure ΔtPSNR. Last,
# the same dynamics model trained on the sidecars' true actions (the oracle: a world driven by the
# game's own actions, which separates a LAM failure from a dynamics failure).
# Usage: bash examples/quickstart.sh [OUT]   (default OUT: out/quickstart)
# GENIE_PRESET (default quickstart), GENIE_STEPS (steps per stage, default: the preset's) and
# GENIE_THREADS (default: torch's) change the model, the training length and the CPU threads.
# GENIE_ORACLE=1 adds step 8 (about 4 more minutes on 2 cores).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-out/quickstart}"
preset="${GENIE_PRESET:-quickstart}"
steps=(${GENIE_STEPS:+--steps "$GENIE_STEPS"})
threads=(${GENIE_THREADS:+--threads "$GENIE_THREADS"})
mkdir -p "$out"
start=$SECONDS

echo "== 1/8 example clips: $out/clips/ (training), $out/heldout/ (never trained on)" >&2
# A sprite on a torus moved LEFT/RIGHT/UP/DOWN/NOOP at random; each clip.gif has a clip.json
# sidecar {"actions": [...]} (actions[t] takes frame t to t+1): the truth the LAM never sees.
python "$here/sprite_clips.py" "$out/clips" --clips 48 --seed 0 --prompt "$out/prompt.png"
python "$here/sprite_clips.py" "$out/heldout" --clips 8 --seed 1

echo "== 2/8 genie train --stage all: tokenizer, LAM, dynamics -> $out/run/world.safetensors" >&2
genie train --preset "$preset" --data "$out/clips" --out "$out/run" --stage all \
    "${steps[@]}" "${threads[@]}"
world="$out/run/world.safetensors"

echo "== 3/8 genie tokenize -> $out/tokens.npz; genie reconstruct -> $out/rec.mp4, $out/compare.png" >&2
genie tokenize "$out/heldout/sprite_000.gif" -o "$out/tokens.npz" --checkpoint "$world"
genie reconstruct "$out/heldout/sprite_000.gif" -o "$out/rec.mp4" --compare "$out/compare.png" \
    --checkpoint "$world"

echo "== 4/8 genie infer-actions on held-out clips, against the sidecars' true actions" >&2
genie infer-actions "$out/heldout" --world "$world" -o "$out/actions" --against-truth

echo "== 5/8 genie play (scripted): each latent action 3 times -> $out/rollout.gif" >&2
n=$(python -c "import json, sys; from genie_core.models.load import read_metadata as r
print(json.loads(r(sys.argv[1])['config'])['lam']['num_actions'])" "$world")
actions=$(python -c "print(','.join(str(a) for a in range($n) for _ in range(3)))")
genie play --world "$world" --prompt "$out/prompt.png" --actions "$actions" -o "$out/rollout.gif" --fps 4

echo "== 6/8 rollouts under each latent action side by side -> $out/rollouts.png" >&2
python "$here/rollout_grid.py" --world "$world" --prompt "$out/heldout/sprite_001.gif" \
    -o "$out/rollouts.png" --steps-ahead 6 --scale 2

echo "== 7/8 genie evaluate: ΔtPSNR at t=4 on held-out clips, beside the copy-prompt baseline" >&2
genie evaluate "$out/heldout" --world "$world" --clips 32 "${threads[@]}"

if [ "${GENIE_ORACLE:-0}" = 1 ]; then
echo "== 8/8 the oracle: dynamics on the true actions -> $out/run_truth/world.safetensors" >&2
genie train --preset "$preset" --stage dynamics --data "$out/clips" --out "$out/run_truth" \
    --tokenizer "$out/run/tokenizer/last.safetensors" --lam "$out/run/lam/last.safetensors" \
    --set dynamics.action_source=truth "${steps[@]}" "${threads[@]}"
python "$here/rollout_grid.py" --world "$out/run_truth/world.safetensors" \
    --prompt "$out/heldout/sprite_001.gif" -o "$out/rollouts_truth.png" --steps-ahead 6 --scale 2
genie evaluate "$out/heldout" --world "$out/run_truth/world.safetensors" --clips 32 "${threads[@]}"
fi

echo "done in $((SECONDS - start)) s; play it yourself in a terminal:" >&2
echo "  genie play --world $world --prompt $out/prompt.png" >&2
