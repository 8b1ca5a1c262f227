#!/usr/bin/env bash
# Makes sure Debian's Chromium and ChromeDriver are installed, for the
# dashboard's browser test (tests/integration/dashboard_browser.rs). Called
# by deploy/local/test.sh; installs with apt-get (as root, or with sudo) only
# what is missing, and says so. Nothing is downloaded from elsewhere.
set -euo pipefail

log() { printf 'browser: %s\n' "$*" >&2; }

missing=()
[[ -x /usr/bin/chromium ]] || command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    log "missing ${missing[*]} and no apt-get: install Chromium and ChromeDriver yourself (the browser test fails without them)"
    exit 1
fi
run() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root (or sudo) to install ${missing[*]}"
        exit 1
    fi
}
log "installing ${missing[*]} from the OS packages"
run env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
