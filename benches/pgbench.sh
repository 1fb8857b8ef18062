#!/usr/bin/env bash
# Performance comparison: pgbench select-only against PostgreSQL directly,
# through pgstrata and through PgBouncer, alternating targets round by round,
# then a markdown table of median TPS, ratio to direct and proxy CPU per
# transaction.
#
# Knobs (environment):
#   ROUNDS=3                rounds per (mode, clients); target order rotates
#   BENCH_SECONDS=10        length of each pgbench run
#   CLIENTS="1 16 64"       client counts
#   MODES="simple prepared" pgbench -M protocols (simple|extended|prepared)
#   TARGETS="direct pgstrata pgbouncer"
#   POOL_MODE=session       session|transaction, for both proxies
#   POOL_SIZE=64            server connections per pool, for both proxies
#   THREADS=2               pgbench -j (capped at the client count)
#   SCALE=10                pgbench -i scale
#   WARMUP_SECONDS=2        one warm-up run per target before measuring (0: none)
#   PGSTRATA_BIN            use this binary instead of `cargo build --release`
#   PG_BIN                  PostgreSQL bin dir (default: newest /usr/lib/postgresql/*/bin)
#   SERVER_AUTH=scram-sha-256  pg_hba method for TCP connections (scram-sha-256|md5|trust)
#   RESULTS_CSV             also write one CSV row per run to this file
#   KEEP_TMP=1              keep the temp dir (logs, configs) after exit
#
# Runs as root (servers then run as the `postgres` OS user) or as a normal user.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

ROUNDS="${ROUNDS:-3}"
BENCH_SECONDS="${BENCH_SECONDS:-10}"
CLIENTS="${CLIENTS:-1 16 64}"
MODES="${MODES:-simple prepared}"
TARGETS="${TARGETS:-direct pgstrata pgbouncer}"
POOL_MODE="${POOL_MODE:-session}"
POOL_SIZE="${POOL_SIZE:-64}"
THREADS="${THREADS:-2}"
SCALE="${SCALE:-10}"
WARMUP_SECONDS="${WARMUP_SECONDS:-2}"
SERVER_AUTH="${SERVER_AUTH:-scram-sha-256}"
RESULTS_CSV="${RESULTS_CSV:-}"
KEEP_TMP="${KEEP_TMP:-0}"

BENCH_USER=bench
BENCH_PASSWORD=bench-secret
BENCH_DB=bench

log() { printf '[pgbench.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

has_target() { [[ " $TARGETS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- checks

check_knobs() {
    [[ "$POOL_MODE" == session || "$POOL_MODE" == transaction ]] ||
        die "POOL_MODE must be session or transaction, not '$POOL_MODE'"
    local m t n
    for m in $MODES; do
        [[ "$m" =~ ^(simple|extended|prepared)$ ]] || die "unknown mode '$m' in MODES"
    done
    for t in $TARGETS; do
        [[ "$t" =~ ^(direct|pgstrata|pgbouncer)$ ]] || die "unknown target '$t' in TARGETS"
    done
    for n in "$ROUNDS" "$BENCH_SECONDS" "$POOL_SIZE" "$THREADS" "$SCALE" "$WARMUP_SECONDS" $CLIENTS; do
        [[ "$n" =~ ^[0-9]+$ ]] || die "expected a number, got '$n'"
    done
    [[ -n "$TARGETS" && -n "$MODES" && -n "$CLIENTS" && "$ROUNDS" -gt 0 ]] ||
        die "TARGETS, MODES, CLIENTS and ROUNDS must not be empty"
}

find_pg_bin() {
    if [[ -n "${PG_BIN:-}" ]]; then
        [[ -x "$PG_BIN/initdb" ]] || die "PG_BIN=$PG_BIN has no initdb"
        return
    fi
    local dir
    for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V); do
        [[ -x "$dir/initdb" ]] && PG_BIN="$dir"
    done
    if [[ -z "${PG_BIN:-}" ]]; then
        command -v initdb >/dev/null || die "initdb not found (install postgresql)"
        PG_BIN="$(dirname "$(command -v initdb)")"
    fi
}

ensure_pgbouncer() {
    command -v pgbouncer >/dev/null && return
    [[ -x /usr/sbin/pgbouncer ]] && { PATH="$PATH:/usr/sbin"; return; }
    [[ $EUID -eq 0 ]] || die "pgbouncer not installed (apt-get install pgbouncer)"
    log "installing pgbouncer"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends pgbouncer >/dev/null
    command -v pgbouncer >/dev/null || PATH="$PATH:/usr/sbin"
}

ensure_pgstrata() {
    if [[ -n "${PGSTRATA_BIN:-}" ]]; then
        [[ -x "$PGSTRATA_BIN" ]] || die "PGSTRATA_BIN=$PGSTRATA_BIN is not executable"
        return
    fi
    log "building pgstrata (cargo build --release)"
    (cd "$repo" && cargo build --release) >&2
    PGSTRATA_BIN="$repo/target/release/pgstrata"
}

# ---------------------------------------------------------------- helpers

# Run a server-side command as the postgres OS user when we are root
# (PostgreSQL and PgBouncer both refuse to run as root).
as_server_user() {
    if [[ $EUID -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

used_ports=" "
free_port() {
    local port
    for _ in $(seq 1 50); do
        if command -v python3 >/dev/null; then
            port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
        else
            # Nothing answering on 127.0.0.1:port means it is free enough.
            port=$((20000 + RANDOM % 40000))
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
        fi
        if [[ "$used_ports" != *" $port "* ]]; then
            used_ports+="$port "
            echo "$port"
            return
        fi
    done
    die "could not find a free port"
}

# Wait until `SELECT 1` works as the bench user on a port; $2 names the target.
wait_ready() {
    local port="$1" name="$2"
    for _ in $(seq 1 300); do
        if "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U "$BENCH_USER" -d "$BENCH_DB" \
            -Atc 'SELECT 1' >/dev/null 2>&1; then
            return
        fi
        sleep 0.1
    done
    "$PG_BIN/psql" -X -h 127.0.0.1 -p "$port" -U "$BENCH_USER" -d "$BENCH_DB" -Atc 'SELECT 1' >&2 || true
    die "$name on port $port did not become ready"
}

# utime + stime of a process, in clock ticks. The command name in field 2 may
# hold spaces, so fields are counted after its closing parenthesis.
cpu_ticks() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo 0; return; }
    stat="${stat##*) }"
    awk '{ print $12 + $13 }' <<<"$stat"
}

# ---------------------------------------------------------------- servers

tmp=""
pg_started=0
pgbouncer_pid=""
pgstrata_pid=""
pgbench_pid=""

cleanup() {
    local rc=$?
    set +e
    if [[ -n "$pgbench_pid" ]]; then
        kill -TERM "$pgbench_pid" 2>/dev/null
        wait "$pgbench_pid" 2>/dev/null
    fi
    if [[ -n "$pgstrata_pid" ]] && kill -0 "$pgstrata_pid" 2>/dev/null; then
        kill -TERM "$pgstrata_pid"
        for _ in $(seq 1 100); do kill -0 "$pgstrata_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pgstrata_pid" 2>/dev/null
        wait "$pgstrata_pid" 2>/dev/null
    fi
    if [[ -n "$pgbouncer_pid" ]] && kill -0 "$pgbouncer_pid" 2>/dev/null; then
        kill -INT "$pgbouncer_pid"   # SIGINT: immediate shutdown
        for _ in $(seq 1 50); do kill -0 "$pgbouncer_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pgbouncer_pid" 2>/dev/null
    fi
    if [[ $pg_started -eq 1 ]]; then
        as_server_user "$PG_BIN/pg_ctl" -D "$tmp/pgdata" stop -m fast -w >/dev/null 2>&1
    fi
    if [[ -n "$tmp" && -d "$tmp" ]]; then
        if [[ "$KEEP_TMP" == 1 ]]; then
            log "kept $tmp"
        else
            rm -rf "$tmp"
        fi
    fi
    exit "$rc"
}

make_tmp() {
    tmp="$(mktemp -d -t pgstrata-bench.XXXXXX)"
    chmod 755 "$tmp"
    [[ $EUID -eq 0 ]] && chown postgres:postgres "$tmp"
    mkdir -p "$tmp/runs"
}

start_postgres() {
    pg_port="$(free_port)"
    log "initdb + start PostgreSQL on 127.0.0.1:$pg_port ($PG_BIN)"
    as_server_user "$PG_BIN/initdb" -D "$tmp/pgdata" -U postgres -E UTF8 --no-locale \
        --auth-local=trust --auth-host="$SERVER_AUTH" >"$tmp/initdb.log" 2>&1 ||
        { tail -n 20 "$tmp/initdb.log" >&2; die "initdb failed"; }
    cat >>"$tmp/pgdata/postgresql.conf" <<EOF

# pgstrata bench settings
port = $pg_port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$tmp'
max_connections = 300
shared_buffers = 128MB
fsync = off
synchronous_commit = off
EOF
    as_server_user "$PG_BIN/pg_ctl" -D "$tmp/pgdata" -l "$tmp/postgres.log" -w -t 60 start >/dev/null ||
        { tail -n 20 "$tmp/postgres.log" >&2; die "PostgreSQL did not start"; }
    pg_started=1
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$tmp" -p "$pg_port" -U postgres -d postgres <<EOF
CREATE ROLE $BENCH_USER LOGIN PASSWORD '$BENCH_PASSWORD';
CREATE DATABASE $BENCH_DB OWNER $BENCH_USER;
EOF
    log "pgbench -i -s $SCALE"
    "$PG_BIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$pg_port" -U "$BENCH_USER" "$BENCH_DB" \
        >"$tmp/pgbench-init.log" 2>&1 ||
        { tail -n 20 "$tmp/pgbench-init.log" >&2; die "pgbench -i failed"; }
}

start_pgbouncer() {
    pgbouncer_port="$(free_port)"
    log "starting PgBouncer $(pgbouncer --version | head -n 1 | awk '{print $2}') on 127.0.0.1:$pgbouncer_port ($POOL_MODE, pool $POOL_SIZE)"
    mkdir -p "$tmp/pgbouncer"
    # The password is used for the server login; clients are trusted.
    printf '"%s" "%s"\n' "$BENCH_USER" "$BENCH_PASSWORD" >"$tmp/pgbouncer/userlist.txt"
    cat >"$tmp/pgbouncer/pgbouncer.ini" <<EOF
[databases]
$BENCH_DB = host=127.0.0.1 port=$pg_port dbname=$BENCH_DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pgbouncer_port
unix_socket_dir =
auth_type = trust
auth_file = $tmp/pgbouncer/userlist.txt
pool_mode = $POOL_MODE
default_pool_size = $POOL_SIZE
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits
logfile = $tmp/pgbouncer/pgbouncer.log
pidfile = $tmp/pgbouncer/pgbouncer.pid
log_connections = 0
log_disconnections = 0
EOF
    [[ $EUID -eq 0 ]] && chown -R postgres:postgres "$tmp/pgbouncer"
    as_server_user pgbouncer -d -q "$tmp/pgbouncer/pgbouncer.ini" ||
        { tail -n 20 "$tmp/pgbouncer/pgbouncer.log" >&2 2>/dev/null; die "PgBouncer did not start"; }
    for _ in $(seq 1 100); do
        [[ -s "$tmp/pgbouncer/pgbouncer.pid" ]] && break
        sleep 0.1
    done
    pgbouncer_pid="$(cat "$tmp/pgbouncer/pgbouncer.pid" 2>/dev/null)" || die "PgBouncer wrote no pid file"
    wait_ready "$pgbouncer_port" pgbouncer
}

start_pgstrata() {
    pgstrata_port="$(free_port)"
    log "starting pgstrata ($PGSTRATA_BIN) on 127.0.0.1:$pgstrata_port ($POOL_MODE, pool $POOL_SIZE)"
    cat >"$tmp/pgstrata.yaml" <<EOF
listen: { address: "127.0.0.1:$pgstrata_port", max_client_connections: 1000, shutdown_timeout: 5s }
clusters:
  main:
    primary: { host: 127.0.0.1, port: $pg_port }
databases:
  $BENCH_DB:
    cluster: main
    server_database: $BENCH_DB
    pool_mode: $POOL_MODE
    pool_size: $POOL_SIZE
    checkout_timeout: 10s
users:
  $BENCH_USER:
    auth: trust
    server_user: $BENCH_USER
    server_password: $BENCH_PASSWORD
EOF
    "$PGSTRATA_BIN" check "$tmp/pgstrata.yaml" >&2 || die "pgstrata check rejected $tmp/pgstrata.yaml"
    RUST_LOG="${RUST_LOG:-warn}" "$PGSTRATA_BIN" --config "$tmp/pgstrata.yaml" \
        >"$tmp/pgstrata.log" 2>&1 &
    pgstrata_pid=$!
    for _ in $(seq 1 300); do
        kill -0 "$pgstrata_pid" 2>/dev/null ||
            { tail -n 20 "$tmp/pgstrata.log" >&2; die "pgstrata exited at startup"; }
        (exec 3<>"/dev/tcp/127.0.0.1/$pgstrata_port") 2>/dev/null && break
        sleep 0.1
    done
    wait_ready "$pgstrata_port" pgstrata
}

# ---------------------------------------------------------------- runs

target_port() {
    case "$1" in
        direct) echo "$pg_port" ;;
        pgstrata) echo "$pgstrata_port" ;;
        pgbouncer) echo "$pgbouncer_port" ;;
    esac
}

target_pid() {
    case "$1" in
        pgstrata) echo "$pgstrata_pid" ;;
        pgbouncer) echo "$pgbouncer_pid" ;;
        *) echo "" ;;
    esac
}

# PgBouncer 1.18 cannot keep prepared statements in transaction mode.
is_skipped() {
    [[ "$1" == pgbouncer && "$2" == prepared && "$POOL_MODE" == transaction ]]
}

# TARGETS rotated left by $1 places, so each target takes each slot in turn.
rotated_targets() {
    local -a list
    read -ra list <<<"$TARGETS"
    local n=${#list[@]} i
    for ((i = 0; i < n; i++)); do
        printf '%s ' "${list[(i + $1) % n]}"
    done
}

declare -A tps_runs=() cpu_runs=()
failures=0

# One pgbench run; records TPS and proxy CPU µs per transaction.
# Args: target mode clients seconds label. Sets run_tps/run_cpu_us.
run_pgbench() {
    local target="$1" mode="$2" clients="$3" seconds="$4" label="$5"
    local port pid jobs out err rc=0 before after txns
    port="$(target_port "$target")"
    pid="$(target_pid "$target")"
    jobs=$((THREADS < clients ? THREADS : clients))
    ((jobs > 0)) || jobs=1
    out="$tmp/runs/$label.out"
    err="$tmp/runs/$label.err"
    run_tps="" run_cpu_us=""

    [[ -n "$pid" ]] && before="$(cpu_ticks "$pid")"
    # In the background so that a signal reaches our trap without waiting for the run.
    "$PG_BIN/pgbench" -n -S -M "$mode" -c "$clients" -j "$jobs" -T "$seconds" \
        -h 127.0.0.1 -p "$port" -U "$BENCH_USER" "$BENCH_DB" >"$out" 2>"$err" &
    pgbench_pid=$!
    wait "$pgbench_pid" || rc=$?
    pgbench_pid=""
    [[ -n "$pid" ]] && after="$(cpu_ticks "$pid")"

    run_tps="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$out")"
    txns="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")"
    if [[ $rc -ne 0 || -z "$run_tps" || -z "$txns" || "$txns" -eq 0 ]]; then
        log "FAILED: $label (pgbench exit $rc, target $target port $port)"
        tail -n 15 "$err" | sed 's/^/    stderr: /' >&2
        tail -n 5 "$out" | sed 's/^/    stdout: /' >&2
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            die "$target (pid $pid) is gone"
        fi
        run_tps=""
        return 1
    fi
    if [[ -n "$pid" ]]; then
        run_cpu_us="$(awk -v t="$((after - before))" -v hz="$CLK_TCK" -v n="$txns" \
            'BEGIN { printf "%.1f", t / hz * 1e6 / n }')"
    fi
}

warm_up() {
    ((WARMUP_SECONDS > 0)) || return 0
    local max=1 c t
    for c in $CLIENTS; do ((c > max)) && max=$c; done
    for t in $TARGETS; do
        log "warm-up: $t, $max clients, ${WARMUP_SECONDS}s"
        run_pgbench "$t" simple "$max" "$WARMUP_SECONDS" "warmup-$t" || die "warm-up against $t failed"
    done
}

measure() {
    local mode clients round target key
    for mode in $MODES; do
        for clients in $CLIENTS; do
            for ((round = 0; round < ROUNDS; round++)); do
                for target in $(rotated_targets "$round"); do
                    is_skipped "$target" "$mode" && continue
                    key="$mode|$clients|$target"
                    if run_pgbench "$target" "$mode" "$clients" "$BENCH_SECONDS" \
                        "$mode-c$clients-$target-r$((round + 1))"; then
                        tps_runs[$key]+="$run_tps "
                        cpu_runs[$key]+="${run_cpu_us:+$run_cpu_us }"
                        log "$mode c=$clients round $((round + 1))/$ROUNDS $target: $run_tps tps${run_cpu_us:+, $run_cpu_us µs CPU/txn}"
                    else
                        failures=$((failures + 1))
                    fi
                    if [[ -n "$RESULTS_CSV" ]]; then
                        echo "$mode,$clients,$target,$((round + 1)),${run_tps:-failed},${run_cpu_us:-}" >>"$RESULTS_CSV"
                    fi
                done
            done
        done
    done
}

# ---------------------------------------------------------------- report

# One value per line from whitespace-separated input (never fails on empty input).
words() { awk '{ for (i = 1; i <= NF; i++) print $i }'; }

median() {
    words | sort -g | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print ""; exit }
            if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}

spread() {
    words | sort -g | awk '
        NR == 1 { lo = $1 } { hi = $1 }
        END { if (NR) printf "%.0f–%.0f", lo, hi }'
}

report() {
    local cpu_model
    cpu_model="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo
    echo "pgbench -S, ${BENCH_SECONDS}s runs, $ROUNDS rounds, scale $SCALE, pool_mode $POOL_MODE, pool_size $POOL_SIZE"
    echo "machine: $(nproc) CPUs, ${cpu_model:-unknown CPU}, $(uname -sr); $("$PG_BIN/postgres" --version)"
    has_target pgbouncer && echo "pgbouncer: $(pgbouncer --version | head -n 1)"
    has_target pgstrata && echo "pgstrata: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo 'no commit')"
    echo
    echo "| mode | clients | target | median TPS | min–max TPS | vs direct | proxy CPU µs/txn |"
    echo "|------|--------:|--------|-----------:|------------:|----------:|-----------------:|"
    local mode clients target key tps direct ratio cpu
    for mode in $MODES; do
        for clients in $CLIENTS; do
            direct="$(median <<<"${tps_runs["$mode|$clients|direct"]:-}")"
            for target in $TARGETS; do
                key="$mode|$clients|$target"
                if is_skipped "$target" "$mode"; then
                    echo "| $mode | $clients | $target | skipped | | | |"
                    continue
                fi
                tps="$(median <<<"${tps_runs[$key]:-}")"
                ratio="-"
                [[ -n "$tps" && -n "$direct" ]] &&
                    ratio="$(awk -v a="$tps" -v b="$direct" 'BEGIN { printf "%.2f", a / b }')"
                cpu="$(median <<<"${cpu_runs[$key]:-}")"
                [[ -n "$cpu" ]] && cpu="$(awk -v c="$cpu" 'BEGIN { printf "%.1f", c }')"
                if [[ -n "$tps" ]]; then
                    tps="$(awk -v t="$tps" 'BEGIN { printf "%.0f", t }')"
                else
                    tps="failed"
                fi
                echo "| $mode | $clients | $target | $tps | $(spread <<<"${tps_runs[$key]:-}") | $ratio | ${cpu:--} |"
            done
        done
    done
    if ((failures > 0)); then
        echo
        echo "$failures run(s) failed; see the messages above."
    fi
}

# ---------------------------------------------------------------- main

main() {
    check_knobs
    find_pg_bin
    has_target pgbouncer && ensure_pgbouncer
    has_target pgstrata && ensure_pgstrata
    CLK_TCK="$(getconf CLK_TCK)"
    export PGPASSWORD="$BENCH_PASSWORD"

    trap cleanup EXIT
    trap 'exit 130' INT TERM
    make_tmp
    [[ -n "$RESULTS_CSV" ]] && echo "mode,clients,target,round,tps,cpu_us_per_txn" >"$RESULTS_CSV"

    start_postgres
    has_target pgbouncer && start_pgbouncer
    has_target pgstrata && start_pgstrata

    warm_up
    measure
    report
    ((failures == 0))
}

main "$@"
