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
# Ember's access package (imported by every Ember app, keys off or on) needs SQLAlchemy
# and Alembic, which the GPU machine's Python 3.12 lacks: wheels for it, installed with
# `pip install --no-index --no-deps --target /tmp/site .gpu/extra/*.whl` (bench_serve.py).
mkdir -p "$root/.gpu/extra"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$root/.gpu/extra" "sqlalchemy>=2.0" "alembic>=1.13" mako greenlet
du -sh "$root/.gpu"
