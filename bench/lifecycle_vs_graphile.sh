#!/usr/bin/env bash
# trainyard's whole job lifecycle against graphile-worker's, same machine,
# same PostgreSQL server, same worker count and concurrency, no-op jobs,
# alternating the two at each size so machine load hits both alike. Prints
# each run's line and, per size, the ratio trainyard / graphile-worker in
# jobs per second.
#
#   bench/lifecycle_vs_graphile.sh [JOBS...]      # default: 3000 30000 90000
#
# Environment: WORKERS (2), CONCURRENCY (4), ROUNDS per size (1).
# trainyard: `cycle-bench lifecycle` (a fresh database and queue prefix; the
# worker binaries from the release build). graphile-worker:
# bench/graphile_lifecycle.sh (its own fresh database on the same server).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=deploy/local/cargo-env.sh
source deploy/local/cargo-env.sh
eval "$(deploy/local/services.sh)"
cargo build --release --workspace --bins >&2

workers="${WORKERS:-2}"
concurrency="${CONCURRENCY:-4}"
rounds="${ROUNDS:-1}"
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(3000 30000 90000)

rate() { sed -n 's/.*jobs_per_s=\([0-9.]*\).*/\1/p' <<<"$1"; }

for n in "${sizes[@]}"; do
    for ((r = 1; r <= rounds; r++)); do
        ours="$("$CARGO_TARGET_DIR/release/cycle-bench" lifecycle "$n" "$workers" "$concurrency" | tail -1)"
        echo "$ours"
        theirs="$(bench/graphile_lifecycle.sh "$n" "$workers" "$concurrency" | tail -1)"
        echo "$theirs"
        awk -v a="$(rate "$ours")" -v b="$(rate "$theirs")" -v n="$n" \
            'BEGIN { printf "ratio jobs=%d trainyard/graphile=%.2f\n", n, a / b }'
    done
done
