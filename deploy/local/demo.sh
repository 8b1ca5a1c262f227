#!/usr/bin/env bash
# The README's first quick-start command: one monthly training cycle on the
# bundled demo organizations (data/demo), end to end on this machine.
#
#   local PostgreSQL + Redis up -> release build -> migrate -> seed the demo
#   organizations -> two worker processes -> an ad-hoc cycle for every
#   organization, waited for -> cycle summary and per-model table -> workers
#   stopped (also when a step fails or the script is interrupted).
#
# Worker logs: .trainyard/logs/worker-N.log.
set -euo pipefail

# ---- demo settings (each can be overridden from the environment) -----------
# Worker processes to start; worker N serves /health on FIRST_PORT + N - 1.
DEMO_WORKERS=${TRAINYARD_DEMO_WORKERS:-2}
DEMO_FIRST_PORT=${TRAINYARD_DEMO_FIRST_PORT:-8081}
# Give up on the cycle after this many seconds.
DEMO_TIMEOUT_SECS=${TRAINYARD_DEMO_TIMEOUT_SECS:-1800}
# How long a worker may take to come up (/health 200), and to stop on SIGTERM
# (it finishes or hands back its current job) before it is killed.
DEMO_START_SECS=${TRAINYARD_DEMO_START_SECS:-60}
DEMO_STOP_SECS=${TRAINYARD_DEMO_STOP_SECS:-90}
# Use binaries already built here instead of building them (e.g. a release
# download); empty means build with cargo into $CARGO_TARGET_DIR.
DEMO_BIN_DIR=${TRAINYARD_DEMO_BIN_DIR:-}
# Demo-speed training: fewer LSTM epochs than the production default (50).
export TRAINYARD_LSTM_EPOCHS=${TRAINYARD_LSTM_EPOCHS:-20}
# Worker and scheduler log level.
export RUST_LOG=${RUST_LOG:-info}
# -----------------------------------------------------------------------------

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
# shellcheck source=deploy/local/cargo-env.sh
source deploy/local/cargo-env.sh
LOGS=$ROOT/.trainyard/logs
BIN_DIR=${DEMO_BIN_DIR:-$CARGO_TARGET_DIR/release}
SCHEDULER=$BIN_DIR/trainyard-scheduler
WORKER=$BIN_DIR/trainyard-worker

log() { printf 'demo: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

WORKER_PIDS=()

# SIGTERM every worker we started, give it DEMO_STOP_SECS to finish, then kill.
stop_workers() {
    local status=$? pid i n
    trap - EXIT
    if [[ ${#WORKER_PIDS[@]} -gt 0 ]]; then
        log "stopping ${#WORKER_PIDS[@]} worker(s) (SIGTERM)"
        for pid in "${WORKER_PIDS[@]}"; do
            kill -TERM "$pid" 2>/dev/null || true
        done
        for ((i = 0; i < DEMO_STOP_SECS * 5; i++)); do
            n=0
            for pid in "${WORKER_PIDS[@]}"; do
                kill -0 "$pid" 2>/dev/null && n=$((n + 1))
            done
            [[ $n -eq 0 ]] && break
            sleep 0.2
        done
        for pid in "${WORKER_PIDS[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then
                log "worker $pid still running after ${DEMO_STOP_SECS}s; killing it"
                kill -KILL "$pid" 2>/dev/null || true
            fi
            if wait "$pid"; then
                log "worker $pid exited cleanly"
            else
                log "worker $pid exited with status $?"
            fi
        done
    fi
    if [[ $status -ne 0 ]]; then
        log "failed (status $status); last lines of the worker logs:"
        for ((n = 1; n <= DEMO_WORKERS; n++)); do
            [[ -f $LOGS/worker-$n.log ]] && tail -n 20 "$LOGS/worker-$n.log" | sed "s/^/  worker-$n | /" >&2
        done
    fi
    exit "$status"
}
trap stop_workers EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# GET /health on a loopback port; true on HTTP 200. Plain bash, no curl needed.
healthy() {
    local status
    # The single quotes are intended: $1 expands in the inner shell.
    # shellcheck disable=SC2016
    status=$(timeout 3 bash -c '
        exec 5<>"/dev/tcp/127.0.0.1/$1"
        printf "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&5
        head -n 1 <&5' _ "$1" 2>/dev/null) || return 1
    [[ $status == *" 200"* ]]
}

log "local PostgreSQL and Redis"
eval "$(deploy/local/services.sh)"
log "DATABASE_URL=$DATABASE_URL REDIS_URL=$REDIS_URL"

if [[ -z $DEMO_BIN_DIR ]]; then
    log "building release binaries into $CARGO_TARGET_DIR (the first build takes several minutes)"
    # The same feature set as the test build, so the two share one compiled tree.
    cargo build --release --workspace --bins
fi
[[ -x $SCHEDULER && -x $WORKER ]] || die "trainyard-scheduler and trainyard-worker not found in $BIN_DIR"

log "migrating the database"
"$SCHEDULER" migrate
log "seeding the demo organizations (data/demo)"
"$SCHEDULER" seed-demo

mkdir -p "$LOGS"
for ((n = 1; n <= DEMO_WORKERS; n++)); do
    port=$((DEMO_FIRST_PORT + n - 1))
    PORT=$port "$WORKER" run >"$LOGS/worker-$n.log" 2>&1 &
    WORKER_PIDS+=("$!")
    log "worker $n: pid $!, /health on 127.0.0.1:$port, log $LOGS/worker-$n.log"
done
for ((n = 1; n <= DEMO_WORKERS; n++)); do
    port=$((DEMO_FIRST_PORT + n - 1))
    pid=${WORKER_PIDS[n - 1]}
    for ((i = 0; ; i++)); do
        kill -0 "$pid" 2>/dev/null || die "worker $n (pid $pid) exited during start"
        healthy "$port" && break
        ((i < DEMO_START_SECS * 5)) || die "worker $n did not report healthy on port $port within ${DEMO_START_SECS}s"
        sleep 0.2
    done
done
log "$DEMO_WORKERS worker(s) healthy"

log "running a cycle for every organization and waiting for it (at most ${DEMO_TIMEOUT_SECS}s)"
enqueue_out=$LOGS/enqueue.out
timeout --foreground "$DEMO_TIMEOUT_SECS" "$SCHEDULER" enqueue --all --wait | tee "$enqueue_out"
cycle_id=$(grep -m 1 -oE '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' "$enqueue_out") ||
    die "no cycle id in the output of 'enqueue --all --wait' (saved in $enqueue_out)"
cycle_id=${cycle_id%%$'\n'*}

echo
"$SCHEDULER" cycle "$cycle_id"

# The dashboard and the ops API on the demo's data: left to the reader to
# start (it serves until Ctrl-C), with the same environment as above.
echo
log "dashboard: run the line below, then open http://127.0.0.1:8080/ (loopback, no token needed; Ctrl-C stops it)"
printf '  DATABASE_URL=%q REDIS_URL=%q %q serve\n' "$DATABASE_URL" "$REDIS_URL" "$SCHEDULER"
