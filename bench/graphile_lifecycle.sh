#!/usr/bin/env bash
# Peer benchmark: graphile-worker (0.16, PostgreSQL-only Node.js job queue)
# running no-op jobs through its whole lifecycle. JOBS jobs of one task are
# added in a single transaction (graphile_worker.add_jobs), then RUNNERS worker
# processes with CONCURRENCY each are started; the wall time runs from their
# start until graphile-worker's job table is empty, and every job's execution
# is counted. Prints one line:
#
#   graphile jobs=N runners=R concurrency=C wall_s=... jobs_per_s=...
#
#   bench/graphile_lifecycle.sh JOBS [RUNNERS] [CONCURRENCY]   # defaults 3000 2 4
#
# Uses the local PostgreSQL from deploy/local/services.sh; each run gets a fresh
# database graphile_bench_<random> on it, dropped again at the end (also on
# failure). The npm package is installed once, with `npm ci` from
# bench/graphile/package-lock.json, into $GRAPHILE_BENCH_DIR
# (default $HOME/.cache/trainyard-graphile) and reused while the lock file is
# unchanged. Needs node and npm (Node 20 was used).
#
# Environment:
#   GRAPHILE_BENCH_DIR  where the npm package lives  ($HOME/.cache/trainyard-graphile)
#   TIMEOUT_S           give up draining after this many seconds (1800)
set -euo pipefail

jobs="${1:-3000}"
runners="${2:-2}"
concurrency="${3:-4}"
for value in "$jobs" "$runners" "$concurrency"; do
    if [[ ! "$value" =~ ^[1-9][0-9]*$ ]]; then
        echo "usage: $0 JOBS [RUNNERS] [CONCURRENCY]  (positive integers)" >&2
        exit 2
    fi
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$repo/bench/graphile"
dir="${GRAPHILE_BENCH_DIR:-$HOME/.cache/trainyard-graphile}"

for tool in node npm psql; do
    command -v "$tool" >/dev/null || {
        echo "$tool is needed but not on PATH" >&2
        exit 1
    }
done

# The package, installed once per lock file.
mkdir -p "$dir"
if ! cmp -s "$src/package-lock.json" "$dir/package-lock.json" ||
    ! cmp -s "$src/package.json" "$dir/package.json" ||
    [[ ! -d "$dir/node_modules/graphile-worker" ]]; then
    echo "installing graphile-worker into $dir" >&2
    cp "$src/package.json" "$src/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
# ES modules resolve packages next to the importing file, so the script runs
# from the install directory.
cp "$src/lifecycle.mjs" "$dir/lifecycle.mjs"

# The local PostgreSQL; a fresh database on it for this run.
eval "$(cd "$repo" && deploy/local/services.sh)"
admin_url="$DATABASE_URL"
db="graphile_bench_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
base="${admin_url%%\?*}"
query=""
[[ "$admin_url" == *\?* ]] && query="?${admin_url#*\?}"
bench_url="${base%/*}/$db$query"

cleanup() {
    psql "$admin_url" -qAtX -v ON_ERROR_STOP=1 \
        -c "drop database if exists $db with (force)" >/dev/null ||
        echo "could not drop database $db; drop it by hand" >&2
}
trap cleanup EXIT
psql "$admin_url" -qAtX -v ON_ERROR_STOP=1 -c "create database $db" >/dev/null

cd "$dir"
DATABASE_URL="$bench_url" JOBS="$jobs" RUNNERS="$runners" CONCURRENCY="$concurrency" \
    node lifecycle.mjs
