#!/usr/bin/env bash
# Deterministic cost per transaction, under valgrind's callgrind: instructions, distinct
# 64-byte code lines, and simulated L1 cache misses, for pgstrata and PgBouncer running
# the same `pgbench -S` load. Unlike timed runs (benches/pgbench.sh), the counts do not
# move with the machine's noise, so a change to the hot path can be judged by itself.
#
#   benches/footprint.sh                       # pgstrata (target/release) and PgBouncer
#   PGSTRATA_BIN=target/pgo/release/pgstrata MODES="simple extended" benches/footprint.sh
#
# Knobs (environment):
#   TARGETS="pgstrata pgbouncer"   which proxies to measure
#   MODES=simple                   pgbench -M protocols (simple|extended|prepared)
#   POOL_MODE=transaction          session|transaction, for both proxies
#   CLIENTS=64                     pgbench clients (and pool size)
#   TXNS=500                       transactions per client in the measured window
#   PGSTRATA_BIN                   binary to measure (default: target/release/pgstrata,
#                                  built when missing)
#   PG_BIN                         PostgreSQL bin dir (default: newest /usr/lib/postgresql/*/bin)
#   KEEP_TMP=1                     keep the temp dir (callgrind files, logs)
#
# What is counted: everything the proxy process runs between the start and the end of
# the measured pgbench run, clients' connection set-up included (spread over TXNS
# transactions each). Code lines are the distinct 64-byte lines of code whose most-run
# instruction ran in at least 9 of 10 transactions: the code every transaction goes
# through. Cache misses are valgrind's simulation of this machine's L1 caches; it does
# not see the kernel, which in reality evicts much of them between each read and write.
# Needs valgrind, python3, pgbench and PostgreSQL; PgBouncer is installed from Debian
# when missing (as root).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

TARGETS="${TARGETS:-pgstrata pgbouncer}"
MODES="${MODES:-simple}"
POOL_MODE="${POOL_MODE:-transaction}"
CLIENTS="${CLIENTS:-64}"
TXNS="${TXNS:-500}"
KEEP_TMP="${KEEP_TMP:-0}"

log() { printf '[footprint.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ "$POOL_MODE" == session || "$POOL_MODE" == transaction ]] || die "POOL_MODE must be session or transaction"
for m in $MODES; do [[ "$m" =~ ^(simple|extended|prepared)$ ]] || die "unknown mode '$m'"; done
for t in $TARGETS; do [[ "$t" =~ ^(pgstrata|pgbouncer)$ ]] || die "unknown target '$t'"; done
[[ "$CLIENTS" =~ ^[0-9]+$ && "$TXNS" =~ ^[0-9]+$ ]] || die "CLIENTS and TXNS must be numbers"
command -v valgrind >/dev/null || die "valgrind not found (apt-get install valgrind)"
command -v python3 >/dev/null || die "python3 not found"

if [[ -z "${PG_BIN:-}" ]]; then
    for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V); do
        [[ -x "$dir/initdb" ]] && PG_BIN="$dir"
    done
fi
[[ -x "${PG_BIN:-}/initdb" ]] || die "PostgreSQL binaries not found (set PG_BIN)"

if [[ " $TARGETS " == *" pgbouncer "* ]] && ! command -v pgbouncer >/dev/null; then
    if [[ -x /usr/sbin/pgbouncer ]]; then
        PATH="$PATH:/usr/sbin"
    else
        [[ $EUID -eq 0 ]] || die "pgbouncer not installed"
        log "installing pgbouncer from Debian"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null
        PATH="$PATH:/usr/sbin"
    fi
fi
if [[ " $TARGETS " == *" pgstrata "* && -z "${PGSTRATA_BIN:-}" ]]; then
    PGSTRATA_BIN="$repo/target/release/pgstrata"
    [[ -x "$PGSTRATA_BIN" ]] || (cd "$repo" && cargo build --release --bin pgstrata >&2)
fi

# PostgreSQL and PgBouncer refuse to run as root; callgrind_control must be the same user.
as_user() {
    if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

tmp="$(mktemp -d /tmp/footprint.XXXXXX)"
chmod 755 "$tmp"
[[ $EUID -eq 0 ]] && chown postgres "$tmp"
pg_started=0
cleanup() {
    pkill -f "$tmp/" 2>/dev/null || true
    [[ "$pg_started" == 1 ]] && as_user "$PG_BIN/pg_ctl" -D "$tmp/pgdata" -m immediate stop >/dev/null 2>&1
    if [[ "$KEEP_TMP" == 1 ]]; then log "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
    for _ in $(seq 1 240); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
        sleep 0.5
    done
    die "nothing listens on port $1 (see $tmp/*.log; KEEP_TMP=1 keeps them)"
}

pg_port="$(free_port)"
log "PostgreSQL on 127.0.0.1:$pg_port, pgbench -i -s 10"
as_user "$PG_BIN/initdb" -D "$tmp/pgdata" -A trust -U postgres >"$tmp/initdb.log" 2>&1 || die "initdb failed"
cat >>"$tmp/pgdata/postgresql.conf" <<EOF
port = $pg_port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$tmp'
max_connections = $((CLIENTS * 2 + 20))
fsync = off
synchronous_commit = off
EOF
as_user "$PG_BIN/pg_ctl" -D "$tmp/pgdata" -l "$tmp/postgres.log" -w start >/dev/null || die "PostgreSQL did not start"
pg_started=1
"$PG_BIN/psql" -q -h "$tmp" -p "$pg_port" -U postgres -c "CREATE ROLE bench LOGIN" -c "CREATE DATABASE bench OWNER bench"
"$PG_BIN/pgbench" -i -q -s 10 -h 127.0.0.1 -p "$pg_port" -U bench bench >"$tmp/pgbench-init.log" 2>&1 ||
    die "pgbench -i failed"

# The command line that runs a target in the foreground on a port.
target_command() {
    local target="$1" port="$2"
    case "$target" in
        pgstrata)
            cat >"$tmp/pgstrata.yaml" <<EOF
listen: { address: "127.0.0.1:$port", max_client_connections: 1000 }
clusters:
  main:
    primary: { host: 127.0.0.1, port: $pg_port }
databases:
  bench: { cluster: main, server_database: bench, pool_mode: $POOL_MODE, pool_size: $CLIENTS }
users:
  bench: { auth: trust, server_user: bench }
EOF
            cp "$PGSTRATA_BIN" "$tmp/pgstrata"
            echo "$tmp/pgstrata --config $tmp/pgstrata.yaml --threads 1"
            ;;
        pgbouncer)
            printf '"bench" ""\n' >"$tmp/userlist.txt"
            cat >"$tmp/pgbouncer.ini" <<EOF
[databases]
bench = host=127.0.0.1 port=$pg_port dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $tmp/userlist.txt
pool_mode = $POOL_MODE
default_pool_size = $CLIENTS
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits
logfile = $tmp/pgbouncer.log
EOF
            echo "$(command -v pgbouncer) -q $tmp/pgbouncer.ini"
            ;;
    esac
}

results="$tmp/results.txt"
: >"$results"
for mode in $MODES; do
    for target in $TARGETS; do
        [[ "$target" == pgbouncer && "$mode" == prepared && "$POOL_MODE" == transaction ]] &&
            { log "skipping PgBouncer -M prepared in transaction pooling"; continue; }
        port="$(free_port)"
        out="$tmp/$target-$mode.callgrind"
        command="$(target_command "$target" "$port")"
        [[ $EUID -eq 0 ]] && chown -R postgres "$tmp"
        log "$target, -M $mode: $CLIENTS clients x $TXNS transactions under callgrind"
        # shellcheck disable=SC2086
        RUST_LOG=warn as_user valgrind --tool=callgrind --instr-atstart=no --cache-sim=yes \
            --dump-instr=yes --callgrind-out-file="$out" $command >"$tmp/$target-$mode.log" 2>&1 &
        wait_port "$port"
        # valgrind runs under runuser when we are root: find its own process.
        vg="$(pgrep -n -f -- "--callgrind-out-file=$out")"
        [[ -n "$vg" ]] || die "valgrind for $target is not running"
        pgbench=("$PG_BIN/pgbench" -S -M "$mode" -c "$CLIENTS" -j 2 -n -h 127.0.0.1 -p "$port" -U bench bench)
        "${pgbench[@]}" -t 2 >/dev/null 2>&1 || die "warm-up run through $target failed"
        as_user callgrind_control -i on "$vg" >/dev/null 2>&1
        "${pgbench[@]}" -t "$TXNS" >"$tmp/$target-$mode.pgbench" 2>&1 ||
            die "pgbench through $target failed (see $tmp/$target-$mode.pgbench)"
        as_user callgrind_control -d "$vg" >/dev/null 2>&1
        kill "$vg" 2>/dev/null || true
        wait 2>/dev/null || true
        dump="$(ls "$out".* 2>/dev/null | head -n 1)"
        [[ -n "$dump" ]] || die "callgrind wrote no dump for $target"
        txns=$((CLIENTS * TXNS))
        printf '%s %s %s\n' "$target" "$mode" "$(python3 "$repo/benches/footprint.py" "$dump" "$txns")" >>"$results"
    done
done

echo
echo "Per transaction under callgrind: pgbench -S, $CLIENTS clients, $POOL_MODE pooling, $((CLIENTS * TXNS)) transactions"
echo
echo "| target | mode | instructions | code lines (KiB) | L1 data misses | L1 code misses |"
echo "|---|---|---:|---:|---:|---:|"
while read -r target mode ir lines kib d1 i1; do
    printf '| %s | %s | %s | %s (%s) | %s | %s |\n' "$target" "$mode" "$ir" "$lines" "$kib" "$d1" "$i1"
done <"$results"
