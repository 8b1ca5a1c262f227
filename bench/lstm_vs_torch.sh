#!/usr/bin/env bash
# Our LSTM training against PyTorch's on the same workload, alternating the two
# so machine load hits both alike; prints each side's median CPU seconds per
# trained model and the ratio ours/PyTorch.
#
#   bench/lstm_vs_torch.sh [N]            # N alternations (default 5)
#
# Environment:
#   TRAINYARD_WORKER  the worker binary (default: target/release/trainyard-worker
#                     under CARGO_TARGET_DIR, else the repo's target/)
#   ENGINE            fused | burn (default fused)
#   TORCH_PYTHON      a python with torch (default: $HOME/.cache/trainyard-torch-venv/bin/python,
#                     else python3 if it imports torch)
#   TORCH_REFERENCE   the reference script (default: ../shared/bench/torch_reference.py
#                     relative to the repository root)
#
# Both sides run on one thread: every BLAS/OpenMP pool is pinned to 1. PyTorch
# trains two models per round and only the second counts, so its one-time
# start-up (lazy kernel selection, allocator warm-up) is not charged to it.
# A torch venv: python3 -m venv ~/.cache/trainyard-torch-venv &&
#               ~/.cache/trainyard-torch-venv/bin/pip install torch numpy
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

n="${1:-5}"
engine="${ENGINE:-fused}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
worker="${TRAINYARD_WORKER:-$target/release/trainyard-worker}"
reference="${TORCH_REFERENCE:-$repo/../shared/bench/torch_reference.py}"

if [[ ! -x "$worker" ]]; then
    echo "no worker binary at $worker; build it with: cargo build --release -p trainyard-worker" >&2
    exit 1
fi

python="${TORCH_PYTHON:-}"
if [[ -z "$python" ]]; then
    for candidate in "$HOME/.cache/trainyard-torch-venv/bin/python" python3; do
        if command -v "$candidate" >/dev/null && "$candidate" -c 'import torch' 2>/dev/null; then
            python="$candidate"
            break
        fi
    done
fi
if [[ -n "$python" && ! -f "$reference" ]]; then
    echo "torch reference not found at $reference (set TORCH_REFERENCE); running ours only" >&2
    python=""
fi
[[ -z "$python" ]] && echo "no python with torch found (set TORCH_PYTHON); running ours only" >&2

median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) exit; if (NR%2) print v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2}'; }

ours=()
theirs=()
theirs_wall=()
for ((i = 1; i <= n; i++)); do
    line="$("$worker" bench lstm --runs 1 --engine "$engine" | tail -n 1)"
    cpu="$(sed -n 's/.*cpu_s_per_model=\([0-9.]*\).*/\1/p' <<<"$line")"
    ours+=("$cpu")
    echo "round $i ours:  $line"
    if [[ -n "$python" ]]; then
        line="$("$python" "$reference" 1 2 lstm | tail -n 1)"
        cpu="$(sed -n 's/.*cpu_s=\([0-9.]*\).*/\1/p' <<<"$line")"
        theirs+=("$cpu")
        theirs_wall+=("$(sed -n 's/.* secs=\([0-9.]*\).*/\1/p' <<<"$line")")
        echo "round $i torch: $line"
    fi
done

ours_median="$(printf '%s\n' "${ours[@]}" | median)"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "ours ($engine) median cpu_s_per_model=$ours_median over $n runs"
if [[ ${#theirs[@]} -gt 0 ]]; then
    theirs_median="$(printf '%s\n' "${theirs[@]}" | median)"
    theirs_wall_median="$(printf '%s\n' "${theirs_wall[@]}" | median)"
    echo "pytorch $("$python" -c 'import torch; print(torch.__version__)') median cpu_s_per_model=$theirs_median wall_s_per_model=$theirs_wall_median over $n runs"
    awk -v a="$ours_median" -v b="$theirs_median" -v w="$theirs_wall_median" \
        'BEGIN {printf "ratio ours/pytorch=%.2f (cpu-s); against pytorch wall-s=%.2f\n", a / b, a / w}'
fi
