# shellcheck shell=bash
# Sourced by the scripts in deploy/local and by .ci/run: puts cargo on PATH
# when rustup installed it but the shell profile was not read (CI, cron), and
# builds into a target directory outside the clone, so a fresh clone on the
# same machine reuses the previous build instead of starting cold.
if ! command -v cargo >/dev/null 2>&1 && [[ -d $HOME/.cargo/bin ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/trainyard-target}"
