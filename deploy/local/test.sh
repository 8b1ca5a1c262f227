#!/usr/bin/env bash
# The whole test suite: unit tests and the integration tests against real
# PostgreSQL and Redis, and the dashboard in headless Chromium; in release
# (training is 10-50x slower unoptimized).
# It is the README's second quick-start command and what .ci/run calls.
#
#   deploy/local/test.sh                      # everything
#   deploy/local/test.sh -p trainyard-tests   # extra arguments go to cargo test
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/cargo-env.sh
source deploy/local/cargo-env.sh

eval "$(deploy/local/services.sh)"
deploy/local/browser.sh
echo "test.sh: DATABASE_URL=$DATABASE_URL REDIS_URL=$REDIS_URL CARGO_TARGET_DIR=$CARGO_TARGET_DIR" >&2
cargo build --release --workspace --bins
exec cargo test --release --workspace "$@"
