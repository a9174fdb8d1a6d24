#!/usr/bin/env bash
# GPU check (under 5 minutes): images/s of the demo model and a larger one, each with and
# without XLA and mixed precision, and the speed-ups. See benchmarks/gpu_check.py.
#
#   benchmarks/gpu_check.sh            # on a machine with a GPU
#   benchmarks/gpu_check.sh --quick    # tiny model, a few steps: checks the script on a CPU
#
# PYTHON selects the interpreter (default: the repository's .venv, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
if [ ! -x "$PYTHON" ]; then
  PYTHON=python3
fi
if command -v nvidia-smi > /dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
else
  echo "nvidia-smi not found: no NVIDIA GPU visible"
fi
# the Python side skips settings past its budget (240 s); this is the hard stop
exec timeout --signal=KILL 290 "$PYTHON" benchmarks/gpu_check.py "$@"
