#!/usr/bin/env bash
# One-GPU check in at most 8 minutes: dit_s and dit_l bf16 training-step throughput (achieved TFLOP/s, MFU), eager
# and with compiled blocks; sampling an 8 s clip (25 Euler steps, CFG) at batch 1 and 16, eager and as one
# compiled graph per step (CUDA graphs); one clip end to end (7B-shaped MLLM conditioner, Synchformer, DiT, VAE,
# vocoder); peak memory; then the 7B-shaped conditioner's training step with and without the stored prefix.
# Writes the sections "## GPU check" and "## MLLM conditioner: prefix caching (GPU)" of docs/benchmarks.md.
# Arguments go to benchmarks/gpu_check.py (--help lists them; --dry-run checks that script on a CPU and skips
# the conditioner). Exit status 2 at once when no CUDA device is usable.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [[ ! -x "$PY" ]]; then
    echo "gpu_check: $PY not found; run 'make setup' first (or set PY=/path/to/python)" >&2
    exit 2
fi
if [[ " $* " == *" --dry-run "* ]]; then
    exec "$PY" benchmarks/gpu_check.py "$@"
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device is usable (torch.cuda.is_available() is False); check nvidia-smi and" \
         "CUDA_VISIBLE_DEVICES, or run '$0 --dry-run' to check the script on the CPU" >&2
    exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
status=0
# SIGINT at the limit: gpu_check.py then writes what it finished; SIGKILL 10 s later if it hangs on exit.
# The two limits (330 + 120 s, + 2 × 10 s) keep the whole check within the 8 minutes it is meant to take.
timeout --signal=INT --kill-after=10 330 "$PY" benchmarks/gpu_check.py "$@" || status=$?
# Qwen2.5-VL-7B's decoder shape (random bf16 weights): full pass vs live prefix cache vs stored prefix. It runs
# even when the check above failed (its own section), and the worse exit status is the script's. It can only
# write docs/benchmarks.md, so --no-write or another --doc above keeps it from writing at all.
conditioner_args=()
if [[ " $* " == *" --no-write "* || " $* " == *" --doc"* ]]; then
    conditioner_args+=(--no-write)
fi
timeout --signal=INT --kill-after=10 120 "$PY" benchmarks/conditioner.py --device cuda --dtype bfloat16 \
    --layers 28 --hidden 3584 --heads 28 --kv-heads 4 --intermediate 18944 --warmup 2 --repeats 5 \
    --mixed-batch 16 --mixed-draws 2 --mixed-repeats 3 "${conditioner_args[@]}" \
    || status=$(( status > $? ? status : $? ))
exit "$status"
