#!/usr/bin/env bash
# Builds pgstrata with profile-guided optimisation (PGO) and prints the binary's
# path: target/pgo/release/pgstrata.
#
#   1. an instrumented release build (target/pgo-gen);
#   2. training: benches/pgbench.sh drives that binary alone, in transaction and
#      session pooling, with -M simple, extended and prepared at 16 and 64
#      clients, and once more in transaction pooling with a streaming replica
#      (read routing); every run writes its counters when pgstrata exits;
#   3. llvm-profdata merges the counters, and the release build is done again
#      with them (target/pgo).
#
# Why: one transaction runs more code than the L1 instruction cache holds, and
# the kernel's TCP stack evicts it between each read and write. With the profile,
# LLVM keeps the blocks that run together and moves the rest away: under
# callgrind (pgbench -S -M simple -c 64, transaction pooling) 6,728 -> 5,259
# instructions and 489 -> 324 distinct 64-byte code lines run per transaction.
# Code the training does not run (TLS, tenants, the result cache, errors) is
# laid out as cold: it still works, it may run a little slower than in a plain
# release build.
#
# Needs what benches/pgbench.sh needs (PostgreSQL binaries; root or a normal
# user) and llvm-profdata, from rustup's llvm-tools component (added when
# missing). Takes two release builds plus about a minute of training.
#
# Knobs (environment):
#   PGO_SECONDS=3        length of each training run
#   PGO_PROFILE          use this merged .profdata instead of training (step 3 only)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGO_SECONDS="${PGO_SECONDS:-3}"

log() { printf '[pgo-build.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ "$PGO_SECONDS" =~ ^[1-9][0-9]*$ ]] || die "PGO_SECONDS must be a positive number"

# llvm-profdata from the toolchain's own LLVM (its profile format matches rustc's).
find_profdata() {
    local sysroot
    sysroot="$(rustc --print sysroot)"
    compgen -G "$sysroot/lib/rustlib/*/bin/llvm-profdata" | head -n 1
}

profdata="$(find_profdata || true)"
if [[ -z "$profdata" ]]; then
    log "adding rustup component llvm-tools (for llvm-profdata)"
    rustup component add llvm-tools >&2 || die "could not add llvm-tools (rustup component add llvm-tools)"
    profdata="$(find_profdata || true)"
    [[ -n "$profdata" ]] || die "llvm-profdata not found after adding llvm-tools"
fi

work="$repo/target/pgo-profile"
profile="${PGO_PROFILE:-}"
if [[ -z "$profile" ]]; then
    rm -rf "$work"
    mkdir -p "$work/raw"
    # Build scripts run by the instrumented build write counters too: they go to
    # build-raw, and the training's to raw.
    log "instrumented release build (target/pgo-gen)"
    (cd "$repo" && RUSTFLAGS="-Cprofile-generate=$work/build-raw" \
        CARGO_TARGET_DIR="$repo/target/pgo-gen" cargo build --release --bin pgstrata) >&2
    trained="$repo/target/pgo-gen/release/pgstrata"

    train() {
        log "training: $*"
        env "$@" PGSTRATA_BIN="$trained" TARGETS=pgstrata MODES="simple extended prepared" \
            CLIENTS="16 64" ROUNDS=1 BENCH_SECONDS="$PGO_SECONDS" WARMUP_SECONDS=0 \
            LLVM_PROFILE_FILE="$work/raw/pgstrata-%p.profraw" \
            bash "$repo/benches/pgbench.sh" >/dev/null
    }
    train POOL_MODE=transaction
    train POOL_MODE=session
    train POOL_MODE=transaction REPLICA=1
    compgen -G "$work/raw/*.profraw" >/dev/null || die "training wrote no profile"
    profile="$work/pgstrata.profdata"
    "$profdata" merge -o "$profile" "$work"/raw/*.profraw
fi
[[ -f "$profile" ]] || die "no profile at $profile"
profile="$(cd "$(dirname "$profile")" && pwd)/$(basename "$profile")"

log "release build with the profile (target/pgo)"
(cd "$repo" && RUSTFLAGS="-Cprofile-use=$profile" CARGO_TARGET_DIR="$repo/target/pgo" \
    cargo build --release --bin pgstrata) >&2
echo "$repo/target/pgo/release/pgstrata"
