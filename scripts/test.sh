#!/usr/bin/env bash
# The project's test command: formatting, lints, then all unit and
# integration tests (the integration tests start real PostgreSQL servers).
# Stops at the first failing step and exits non-zero.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() {
    local name="$1"
    shift
    printf '\n==== %s: %s\n' "$name" "$*"
    local started=$SECONDS
    if ! "$@"; then
        printf '\n==== FAILED: %s (%s)\n' "$name" "$*" >&2
        exit 1
    fi
    printf '==== ok: %s (%ds)\n' "$name" "$((SECONDS - started))"
}

step "format" cargo fmt --all -- --check
step "clippy" cargo clippy --all-targets -- -D warnings
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
step "tests" bash -o pipefail -c 'cargo test --all-targets 2>&1 | tee "$1"' _ "$log"

printf '\n==== all steps passed (%ds)\n' "$SECONDS"
# One closing line over every test binary (the criterion bench, run last, prints none).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
