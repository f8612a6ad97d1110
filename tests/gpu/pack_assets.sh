#!/usr/bin/env bash
# Copies what the GPU tests need from this machine into .gpu/ (git-ignored, carried with
# `carry: [".gpu"]`): SmolLM2's tokenizer files (the GPU machine has no model weights; the
# models there are built from a config with random weights). Run after ../shared/gpu/pack.sh.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
source "$root/.venv/bin/activate"
model=$(python -c "from ember.models.catalogue import resolve_model; print(resolve_model('smollm2-135m-instruct'))" | tail -1)
mkdir -p "$root/.gpu/tokenizer"
cp "$model"/{tokenizer.json,tokenizer_config.json,chat_template.jinja} "$root/.gpu/tokenizer/"
du -sh "$root/.gpu"
