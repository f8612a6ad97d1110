#!/usr/bin/env bash
# CPU step times of the four SFT methods on the embedded SmolLM2-135M, one after another
# on the local machine, with the shipped CPU job configs and only their lengths cut:
#
#   bash scripts/bench_train_cpu.sh [STEPS]        # default 8 optimizer steps each
#
# Prints each method's median step time (the first two steps skipped) and its last
# tokens/s line. No checkpoints, no MLflow, no evaluation beyond the base model's.
set -euo pipefail
cd "$(dirname "$0")/.."
source .venv/bin/activate
export HF_HUB_OFFLINE=1 RAY_AUTH_MODE=token
steps=${1:-8}
for method in lora qlora full-fsdp2 deepspeed; do
  log=$(mktemp)
  python -m train_jobs.sft --config "cluster/jobs/sft-$method-cpu.yaml" \
    --set "train.max_steps=$steps" --set train.eval_every=0 --set train.checkpoint_every=0 \
    --set train.checkpoint_at_end=false --set train.log_every=1 --set data.val_fraction=0 \
    --set tracking.enabled=false --set tracking.register_as=null --set eval.sample_prompts=0 \
    --set "name=bench-$method" --set "output.storage_path=$(mktemp -d)" >"$log" 2>&1 \
    || { echo "$method failed:"; tail -20 "$log"; continue; }
  echo "$method: $(grep -o 'trainable [0-9,]* of [0-9,]* parameters' "$log" | head -1);" \
    "$(grep -o 'median step [0-9.]* s' "$log" | tail -1);" \
    "last window $(grep -o '[0-9]* tok/s' "$log" | tail -1)"
done
