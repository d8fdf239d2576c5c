#!/usr/bin/env bash
# One-GPU check of the MM-DiT in under 10 minutes: dit_s and dit_l bf16 training-step throughput (achieved
# TFLOP/s, MFU), eager and with compiled blocks; sampling time of an 8 s clip (25 Euler steps, CFG) at batch 1
# and 16, eager and as one compiled graph per step (CUDA graphs); peak memory; writes the section
# "## GPU check" of docs/benchmarks.md. Arguments go to benchmarks/gpu_check.py (--help lists them;
# --dry-run checks the script on a CPU). Exit status 2 at once when no CUDA device is usable.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [[ ! -x "$PY" ]]; then
    echo "gpu_check: $PY not found; run 'make setup' first (or set PY=/path/to/python)" >&2
    exit 2
fi
if [[ " $* " != *" --dry-run "* ]]; then
    if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "gpu_check: no CUDA device is usable (torch.cuda.is_available() is False); check nvidia-smi and" \
             "CUDA_VISIBLE_DEVICES, or run '$0 --dry-run' to check the script on the CPU" >&2
        exit 2
    fi
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
exec timeout --signal=INT 600 "$PY" benchmarks/gpu_check.py "$@"
