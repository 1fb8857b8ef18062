#!/usr/bin/env bash
# Performance comparison: pgbench select-only against PostgreSQL directly,
# through pgstrata, PgBouncer and Pgpool-II, alternating targets round by
# round, then a markdown table of median TPS, ratio to direct and CPU per
# transaction: the proxy's, PostgreSQL's (all its processes, a replica's too)
# and pgbench's, with the machine's idle share and context switches per
# transaction (on a small machine they all share the same cores), and
# pgstrata's TPS and CPU per transaction over PgBouncer's round by round
# (robust to a machine whose speed drifts during the run).
# With REPLICA=1 the script also runs a streaming replica and reports which
# share of the statements each target sent to the primary.
#
# Presets:
#   quick check       BENCH_SECONDS=3 ROUNDS=1 CLIENTS=16 benches/pgbench.sh
#   read scaling      REPLICA=1 TARGETS="direct pgstrata pgpool" MODES=prepared CLIENTS=64 \
#                     POOL_MODE=transaction benches/pgbench.sh
#
# Knobs (environment):
#   ROUNDS=3                rounds per (mode, clients); target order rotates
#   BENCH_SECONDS=10        length of each pgbench run
#   CLIENTS="1 16 64"       client counts
#   MODES="simple prepared" pgbench -M protocols (simple|extended|prepared)
#   TARGETS="direct pgstrata pgbouncer"   any of: direct pgstrata pgbouncer pgpool
#   POOL_MODE=session       session|transaction, for pgstrata and PgBouncer
#                           (Pgpool-II always pools per session)
#   POOL_SIZE=64            server connections per pool, for pgstrata and PgBouncer
#   REPLICA=0               1: also start a streaming replica (pg_basebackup -R);
#                           pgstrata and Pgpool-II get it as a read replica, `direct`
#                           and PgBouncer stay on the primary. Both servers then load
#                           pg_stat_statements, and the table's "primary share %"
#                           column counts where each run's statements ran
#   THREADS=2               pgbench -j (capped at the client count)
#   SCALE=10                pgbench -i scale
#   WARMUP_SECONDS=2        one warm-up run per target before measuring (0: none)
#   PGSTRATA_BIN            use this binary instead of building one
#   PGO=1                   1: build pgstrata with scripts/pgo-build.sh (profile-guided,
#                           as we recommend for production); 0: plain `cargo build --release`
#   PGSTRATA_THREADS        pgstrata --threads (default: half the cores, at least 1)
#   PG_BIN                  PostgreSQL bin dir (default: newest /usr/lib/postgresql/*/bin)
#   SERVER_AUTH=scram-sha-256  pg_hba method for TCP connections (scram-sha-256|md5|trust)
#   RESULTS_CSV             also write one CSV row per run to this file
#   IDLE_CLIENTS=0          after the timed runs, open this many clients (at most 900)
#                           to pgstrata and PgBouncer, each running `SELECT 1` once
#                           and then idle, and print each proxy's memory per idle
#                           client (its RSS growth; benches/idle_clients.py)
#   KEEP_TMP=1              keep the temp dir (logs, configs) after exit
#
# Sessions: PostgreSQL (pg_ctl), PgBouncer (-d) and, through setsid, pgstrata and
# Pgpool-II each run in a session of their own, as under a service manager, and
# pgbench runs in the script's. Where the kernel groups tasks by session for
# scheduling (autogroup, /proc/sys/kernel/sched_autogroup_enabled), a proxy left
# in the script's session shares one CPU share with pgbench and is preempted by
# it: pgstrata, transaction pooling, -M simple -c 16 ran 2.25 context switches
# per transaction that way against PgBouncer's 1.84, and 1.84 against 1.89 in a
# session of its own.
#
# Runs as root (servers then run as the `postgres` OS user) or as a normal user.
# As root it installs PgBouncer and Pgpool-II from Debian when they are missing
# (and stops the system service the pgpool2 package may start); every server
# runs from the temp dir with its own ports, sockets and pid files.
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
REPLICA="${REPLICA:-0}"
IDLE_CLIENTS="${IDLE_CLIENTS:-0}"
PGO="${PGO:-1}"

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
        [[ "$t" =~ ^(direct|pgstrata|pgbouncer|pgpool)$ ]] || die "unknown target '$t' in TARGETS"
    done
    [[ "$REPLICA" == 0 || "$REPLICA" == 1 ]] || die "REPLICA must be 0 or 1, not '$REPLICA'"
    [[ "$PGO" == 0 || "$PGO" == 1 ]] || die "PGO must be 0 or 1, not '$PGO'"
    [[ "$IDLE_CLIENTS" =~ ^[0-9]+$ && "$IDLE_CLIENTS" -le 900 ]] ||
        die "IDLE_CLIENTS must be a number from 0 to 900, not '$IDLE_CLIENTS'"
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

# apt-get install, with an `apt-get update` first only when the lists are stale.
apt_install() {
    [[ $EUID -eq 0 ]] || die "$1 not installed (apt-get install $1)"
    log "installing $1 from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "$1" >/dev/null 2>&1 || {
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "$1" >/dev/null
    }
}

ensure_pgbouncer() {
    command -v pgbouncer >/dev/null && return
    [[ -x /usr/sbin/pgbouncer ]] && { PATH="$PATH:/usr/sbin"; return; }
    apt_install pgbouncer
    command -v pgbouncer >/dev/null || PATH="$PATH:/usr/sbin"
}

# The pgpool2 package enables a system service on /etc/pgpool2; we run our own
# instance from the temp dir, so a service the install started is stopped again.
ensure_pgpool() {
    command -v pgpool >/dev/null && return
    [[ -x /usr/sbin/pgpool ]] && { PATH="$PATH:/usr/sbin"; return; }
    apt_install pgpool2
    command -v pgpool >/dev/null || PATH="$PATH:/usr/sbin"
    if [[ -d /run/systemd/system ]]; then
        systemctl disable --now pgpool2 >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/pgpool2 ]] && /etc/init.d/pgpool2 status >/dev/null 2>&1; then
        log "stopping the pgpool2 system service the package started"
        /etc/init.d/pgpool2 stop >/dev/null 2>&1 || true
    fi
}

ensure_pgstrata() {
    if [[ -n "${PGSTRATA_BIN:-}" ]]; then
        [[ -x "$PGSTRATA_BIN" ]] || die "PGSTRATA_BIN=$PGSTRATA_BIN is not executable"
        return
    fi
    if [[ "$PGO" == 1 ]]; then
        log "building pgstrata with profile-guided optimisation (scripts/pgo-build.sh)"
        PGSTRATA_BIN="$(bash "$repo/scripts/pgo-build.sh")" ||
            die "scripts/pgo-build.sh failed (PGO=0 makes a plain release build)"
    else
        log "building pgstrata (cargo build --release)"
        (cd "$repo" && cargo build --release) >&2
        PGSTRATA_BIN="$repo/target/release/pgstrata"
    fi
}

# ---------------------------------------------------------------- helpers

# The checkout a pgstrata binary comes from (.../target/release/pgstrata lives
# in its work tree): its commit, and whether src/ had uncommitted changes.
pgstrata_revision() {
    local tree rev dirty=""
    tree="$(cd "$(dirname "$PGSTRATA_BIN")/../.." 2>/dev/null && pwd)" || tree="$repo"
    rev="$(git -C "$tree" rev-parse --short HEAD 2>/dev/null)" || { echo "checkout unknown"; return; }
    git -C "$tree" diff --quiet HEAD -- src 2>/dev/null || dirty=" + uncommitted changes in src/"
    echo "checkout at $rev$dirty"
}

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

# One line "pid ticks" for a process and each of its descendants, ticks being
# utime + stime + cutime + cstime: children that exited and were waited for
# still count. The command name in field 2 may hold spaces, so fields are
# counted after its closing parenthesis.
process_tree_ticks() {
    # cat skips (and reports) processes that exit while the glob is read.
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '
        {
            pid = $1; rest = $0; sub(/^.*\) /, "", rest); split(rest, f, " ")
            parent[pid] = f[2]; ticks[pid] = f[12] + f[13] + f[14] + f[15]
        }
        END {
            if (!(root in parent)) exit
            inside[root] = 1
            do {
                grew = 0
                for (p in parent) if (!(p in inside) && (parent[p] in inside)) { inside[p] = 1; grew = 1 }
            } while (grew)
            for (p in inside) print p, ticks[p]
        }'
}

process_tree() { process_tree_ticks "$1" | awk '{ print $1 }'; }

# CPU time of a proxy in clock ticks, all its processes together: Pgpool-II
# forks one process per client; pgstrata and PgBouncer are one process.
cpu_ticks() { process_tree_ticks "$1" | awk '{ sum += $2 } END { print sum + 0 }'; }

# CPU time of this shell's waited-for children (pgbench among them) in clock
# ticks: cutime + cstime of the shell itself.
children_ticks() {
    local stat
    stat="$(cat "/proc/$$/stat")"
    awk '{ print $14 + $15 }' <<<"${stat##*) }"
}

# CPU time of every PostgreSQL server process (primary and replica), in clock ticks.
server_ticks() {
    local total=0 pid
    for pid in $pg_pid $replica_pid; do
        total=$((total + $(cpu_ticks "$pid")))
    done
    echo "$total"
}

# "busy idle" clock ticks of the whole machine, from /proc/stat.
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6; exit }' /proc/stat; }
# Context switches of the whole machine so far, from /proc/stat: a proxy that wakes a
# client or server process more often, or is preempted more often, costs every
# process on the machine a switch each time.
machine_switches() { awk '$1 == "ctxt" { print $2; exit }' /proc/stat; }

# ---------------------------------------------------------------- servers

tmp=""
pg_started=0
pg_pid=""
replica_pid=""
replica_started=0
pgbouncer_pid=""
pgstrata_pid=""
pgpool_pid=""
pgpool_launcher_pid=""
pgbench_pid=""

# Stop a process with signal $2; if it does not go within 10 s, kill it and
# everything it had forked.
stop_process() {
    local pid="$1" signal="$2" tree
    kill -0 "$pid" 2>/dev/null || return 0
    tree="$(process_tree "$pid")"
    kill "-$signal" "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    # shellcheck disable=SC2086 # one pid per word
    kill -KILL $tree 2>/dev/null
}

cleanup() {
    local rc=$?
    set +e
    if [[ -n "$pgbench_pid" ]]; then
        kill -TERM "$pgbench_pid" 2>/dev/null
        wait "$pgbench_pid" 2>/dev/null
    fi
    if [[ -n "$pgstrata_pid" ]]; then
        stop_process "$pgstrata_pid" TERM
        wait "$pgstrata_pid" 2>/dev/null
    fi
    [[ -n "$pgbouncer_pid" ]] && stop_process "$pgbouncer_pid" INT # SIGINT: immediate shutdown
    [[ -n "$pgpool_pid" ]] && stop_process "$pgpool_pid" INT       # SIGINT: fast shutdown
    if [[ -n "$pgpool_launcher_pid" ]]; then
        kill -TERM "$pgpool_launcher_pid" 2>/dev/null
        wait "$pgpool_launcher_pid" 2>/dev/null
    fi
    if [[ $replica_started -eq 1 ]]; then
        as_server_user "$PG_BIN/pg_ctl" -D "$tmp/replica" stop -m fast -w >/dev/null 2>&1
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

max_clients() {
    local max=1 c
    for c in $CLIENTS; do ((c > max)) && max=$c; done
    echo "$max"
}

# SQL as the postgres superuser over the Unix socket (trusted) on a port.
psql_admin() {
    local port="$1" db="$2"
    shift 2
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$tmp" -p "$port" -U postgres -d "$db" "$@"
}

start_postgres() {
    pg_port="$(free_port)"
    log "initdb + start PostgreSQL on 127.0.0.1:$pg_port ($PG_BIN)"
    as_server_user "$PG_BIN/initdb" -D "$tmp/pgdata" -U postgres -E UTF8 --no-locale \
        --auth-local=trust --auth-host="$SERVER_AUTH" >"$tmp/initdb.log" 2>&1 ||
        { tail -n 20 "$tmp/initdb.log" >&2; die "initdb failed"; }
    # Room for every target's connections at once: direct, one per Pgpool-II
    # child, and the two pools, with a margin for checks and psql.
    local connections=$((3 * $(max_clients) + 2 * POOL_SIZE + 20))
    ((connections > 300)) || connections=300
    cat >>"$tmp/pgdata/postgresql.conf" <<EOF

# pgstrata bench settings
port = $pg_port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$tmp'
max_connections = $connections
shared_buffers = 128MB
fsync = off
synchronous_commit = off
EOF
    # Statement counts per server show where reads went. pg_stat_database lags
    # behind: an idle pooled backend flushes its counters only up to 10 s
    # later, while pg_stat_statements counts at the end of each statement.
    if [[ "$REPLICA" == 1 ]]; then
        cat >>"$tmp/pgdata/postgresql.conf" <<EOF
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track_utility = off
EOF
    fi
    as_server_user "$PG_BIN/pg_ctl" -D "$tmp/pgdata" -l "$tmp/postgres.log" -w -t 60 start >/dev/null ||
        { tail -n 20 "$tmp/postgres.log" >&2; die "PostgreSQL did not start"; }
    pg_started=1
    pg_pid="$(head -n 1 "$tmp/pgdata/postmaster.pid")"
    psql_admin "$pg_port" postgres <<EOF
CREATE ROLE $BENCH_USER LOGIN PASSWORD '$BENCH_PASSWORD';
CREATE DATABASE $BENCH_DB OWNER $BENCH_USER;
EOF
    if [[ "$REPLICA" == 1 ]]; then
        psql_admin "$pg_port" "$BENCH_DB" -c 'CREATE EXTENSION pg_stat_statements'
    fi
}

init_bench_data() {
    log "pgbench -i -s $SCALE"
    "$PG_BIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$pg_port" -U "$BENCH_USER" "$BENCH_DB" \
        >"$tmp/pgbench-init.log" 2>&1 ||
        { tail -n 20 "$tmp/pgbench-init.log" >&2; die "pgbench -i failed"; }
}

# A hot standby of the primary, taken before pgbench -i so that the data
# reaches it by streaming replication.
start_replica() {
    replica_port="$(free_port)"
    log "pg_basebackup -R + start the streaming replica on 127.0.0.1:$replica_port"
    as_server_user "$PG_BIN/pg_basebackup" -h "$tmp" -p "$pg_port" -U postgres \
        -D "$tmp/replica" -R -X stream -c fast >"$tmp/basebackup.log" 2>&1 ||
        { tail -n 20 "$tmp/basebackup.log" >&2; die "pg_basebackup failed"; }
    # The copied postgresql.conf names the primary's port; the last setting wins.
    printf '\n# replica\nport = %s\nhot_standby = on\n' "$replica_port" |
        as_server_user tee -a "$tmp/replica/postgresql.conf" >/dev/null
    as_server_user "$PG_BIN/pg_ctl" -D "$tmp/replica" -l "$tmp/replica.log" -w -t 60 start >/dev/null ||
        { tail -n 20 "$tmp/replica.log" >&2; die "the replica did not start"; }
    replica_started=1
    replica_pid="$(head -n 1 "$tmp/replica/postmaster.pid")"
    [[ "$(psql_admin "$replica_port" postgres -Atc 'SELECT pg_is_in_recovery()')" == t ]] ||
        die "the replica on port $replica_port is not in recovery"
}

# Wait until the replica has replayed everything the primary wrote so far
# (pgbench -i included), then check that the bench user reads the data there.
wait_replica_caught_up() {
    local lsn caught_up="" branches
    lsn="$(psql_admin "$pg_port" postgres -Atc 'SELECT pg_current_wal_lsn()')"
    log "waiting for the replica to replay up to $lsn"
    for _ in $(seq 1 1200); do
        caught_up="$(psql_admin "$replica_port" postgres -Atc \
            "SELECT pg_is_in_recovery() AND pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn")"
        [[ "$caught_up" == t ]] && break
        sleep 0.1
    done
    [[ "$caught_up" == t ]] || die "the replica did not replay up to $lsn in 120 s (see $tmp/replica.log)"
    branches="$("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$replica_port" -U "$BENCH_USER" -d "$BENCH_DB" \
        -Atc 'SELECT count(*) FROM pgbench_branches')"
    [[ "$branches" == "$SCALE" ]] || die "the replica has '$branches' pgbench branches, expected $SCALE"
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
    local replicas=""
    [[ "$REPLICA" == 1 ]] && replicas="    replicas: [{ host: 127.0.0.1, port: $replica_port }]"$'\n'
    log "starting pgstrata ($PGSTRATA_BIN) on 127.0.0.1:$pgstrata_port ($POOL_MODE, pool $POOL_SIZE${replicas:+, one replica})"
    cat >"$tmp/pgstrata.yaml" <<EOF
listen: { address: "127.0.0.1:$pgstrata_port", max_client_connections: 1000, shutdown_timeout: 5s }
clusters:
  main:
    primary: { host: 127.0.0.1, port: $pg_port }
${replicas}databases:
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
    # setsid: a session of its own (see "Sessions" at the top).
    RUST_LOG="${RUST_LOG:-warn}" setsid "$PGSTRATA_BIN" --config "$tmp/pgstrata.yaml" \
        ${PGSTRATA_THREADS:+--threads "$PGSTRATA_THREADS"} >"$tmp/pgstrata.log" 2>&1 &
    pgstrata_pid=$!
    for _ in $(seq 1 300); do
        kill -0 "$pgstrata_pid" 2>/dev/null ||
            { tail -n 20 "$tmp/pgstrata.log" >&2; die "pgstrata exited at startup"; }
        (exec 3<>"/dev/tcp/127.0.0.1/$pgstrata_port") 2>/dev/null && break
        sleep 0.1
    done
    wait_ready "$pgstrata_port" pgstrata
}

# Pgpool-II in streaming-replication mode, load-balancing reads across the
# primary and (with REPLICA=1) the replica by weight, one session at a time.
# Clients are trusted through pool_hba.conf, as with the other proxies; the
# server login uses the plain-text password from pool_passwd, which serves
# SCRAM, MD5 and trust alike (an md5 entry would not do SCRAM). Backends are
# DISALLOW_TO_FAILOVER and failover_on_backend_error is off so that a slow
# health check on a loaded machine cannot detach a node for the rest of the
# run; checks go to the postgres database, outside the statement counts.
start_pgpool() {
    pgpool_port="$(free_port)"
    local dir="$tmp/pgpool" children
    # One child per client: a client beyond that waits for a free child.
    children=$(($(max_clients) + 2))
    log "starting $(pgpool --version 2>&1 | head -n 1) on 127.0.0.1:$pgpool_port ($children children)"
    mkdir -p "$dir"
    printf '%s:TEXT%s\n' "$BENCH_USER" "$BENCH_PASSWORD" >"$dir/pool_passwd"
    printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' >"$dir/pool_hba.conf"
    : >"$dir/pcp.conf"
    cat >"$dir/pgpool.conf" <<EOF
backend_clustering_mode = 'streaming_replication'
listen_addresses = '127.0.0.1'
port = $pgpool_port
socket_dir = '$dir'
pcp_listen_addresses = ''
pcp_port = $(free_port)
pcp_socket_dir = '$dir'
wd_ipc_socket_dir = '$dir'
pid_file_name = '$dir/pgpool.pid'
logdir = '$dir'
use_watchdog = off

backend_hostname0 = '127.0.0.1'
backend_port0 = $pg_port
backend_weight0 = 1
backend_flag0 = 'DISALLOW_TO_FAILOVER'
EOF
    if [[ "$REPLICA" == 1 ]]; then
        cat >>"$dir/pgpool.conf" <<EOF
backend_hostname1 = '127.0.0.1'
backend_port1 = $replica_port
backend_weight1 = 1
backend_flag1 = 'DISALLOW_TO_FAILOVER'
EOF
    fi
    cat >>"$dir/pgpool.conf" <<EOF

enable_pool_hba = on
pool_passwd = '$dir/pool_passwd'
allow_clear_text_frontend_auth = off
ssl = off

num_init_children = $children
max_pool = 1
connection_cache = on
reserved_connections = 0
child_life_time = 0          # children and their connections live all run
load_balance_mode = on
statement_level_load_balance = off
delay_threshold = 0
memory_cache_enabled = off

sr_check_period = 10
sr_check_user = '$BENCH_USER'
sr_check_password = '$BENCH_PASSWORD'
sr_check_database = 'postgres'
health_check_period = 10
health_check_timeout = 20
health_check_user = '$BENCH_USER'
health_check_password = '$BENCH_PASSWORD'
health_check_database = 'postgres'
failover_on_backend_error = off
failover_command = ''

log_destination = 'stderr'
log_min_messages = warning
log_connections = off
log_statement = off
log_per_node_statement = off
EOF
    [[ $EUID -eq 0 ]] && chown -R postgres:postgres "$dir"
    # -n: stay in the foreground (logs to stderr); -D: no pgpool_status from a
    # previous run. The pid file names the main process either way.
    as_server_user setsid pgpool -n -D -f "$dir/pgpool.conf" -F "$dir/pcp.conf" -a "$dir/pool_hba.conf" \
        >"$dir/pgpool.log" 2>&1 &
    pgpool_launcher_pid=$!
    for _ in $(seq 1 100); do
        [[ -s "$dir/pgpool.pid" ]] && break
        kill -0 "$pgpool_launcher_pid" 2>/dev/null ||
            { tail -n 20 "$dir/pgpool.log" >&2; die "Pgpool-II exited at startup"; }
        sleep 0.1
    done
    # The pid file is NUL-padded.
    pgpool_pid="$(tr -dc '0-9\n' <"$dir/pgpool.pid" 2>/dev/null | head -n 1)"
    [[ -n "$pgpool_pid" ]] || die "Pgpool-II wrote no pid file"
    wait_ready "$pgpool_port" pgpool
    check_pgpool_nodes
}

# Every backend known to Pgpool-II must be up, the primary as its primary.
# Pgpool-II may accept clients before it has found the primary: poll a while.
check_pgpool_nodes() {
    local nodes="" expected=$((REPLICA + 1))
    for _ in $(seq 1 300); do
        nodes="$("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$pgpool_port" -U "$BENCH_USER" -d "$BENCH_DB" \
            -AtF ' ' -c 'SHOW pool_nodes' 2>&1)" || true
        # Fields: node_id hostname port status pg_status lb_weight role pg_role ...
        awk -v want="$expected" -v primary="$pg_port" '
            $4 ~ /^(up|waiting)$/ { up++ }
            $3 == primary && $7 == "primary" { found = 1 }
            END { exit !(up == want && found) }' <<<"$nodes" && {
            printf '%s\n' "$nodes" | sed 's/^/    pool_nodes: /' >&2
            return
        }
        sleep 0.1
    done
    printf '%s\n' "$nodes" | sed 's/^/    pool_nodes: /' >&2
    die "Pgpool-II does not see $expected backend(s) up with port $pg_port as primary"
}

# ---------------------------------------------------------------- runs

target_port() {
    case "$1" in
        direct) echo "$pg_port" ;;
        pgstrata) echo "$pgstrata_port" ;;
        pgbouncer) echo "$pgbouncer_port" ;;
        pgpool) echo "$pgpool_port" ;;
    esac
}

target_pid() {
    case "$1" in
        pgstrata) echo "$pgstrata_pid" ;;
        pgbouncer) echo "$pgbouncer_pid" ;;
        pgpool) echo "$pgpool_pid" ;;
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

# Statements executed so far in the bench database on a server (pg_stat_statements).
server_statements() {
    psql_admin "$1" "$BENCH_DB" -Atc \
        'SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
          WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())'
}

# "primary replica" statement counts, with REPLICA=1.
statement_counts() {
    [[ "$REPLICA" == 1 ]] || return 0
    echo "$(server_statements "$pg_port") $(server_statements "$replica_port")"
}

declare -A tps_runs=() cpu_runs=() share_runs=() pg_runs=() bench_runs=() idle_runs=() switch_runs=()
# TPS and proxy CPU per transaction of each run by "mode|clients|target|round",
# for ratios within a round.
declare -A round_tps=() round_cpu=()
failures=0

# One pgbench run; records TPS, proxy CPU µs per transaction and, with
# REPLICA=1, the primary's share of the statements the servers ran meanwhile.
# Args: target mode clients seconds label. Sets run_tps/run_cpu_us/run_share.
run_pgbench() {
    local target="$1" mode="$2" clients="$3" seconds="$4" label="$5"
    local port pid jobs out err rc=0 before after txns counts_before counts_after
    local pg_before pg_after kids_before kids_after machine_before machine_after
    local switches_before switches_after
    port="$(target_port "$target")"
    pid="$(target_pid "$target")"
    jobs=$((THREADS < clients ? THREADS : clients))
    ((jobs > 0)) || jobs=1
    out="$tmp/runs/$label.out"
    err="$tmp/runs/$label.err"
    run_tps="" run_cpu_us="" run_share="" run_pg_us="" run_bench_us="" run_idle="" run_switches=""

    counts_before="$(statement_counts)"
    [[ -n "$pid" ]] && before="$(cpu_ticks "$pid")"
    pg_before="$(server_ticks)"
    kids_before="$(children_ticks)"
    machine_before="$(machine_ticks)"
    switches_before="$(machine_switches)"
    # In the background so that a signal reaches our trap without waiting for the run.
    "$PG_BIN/pgbench" -n -S -M "$mode" -c "$clients" -j "$jobs" -T "$seconds" \
        -h 127.0.0.1 -p "$port" -U "$BENCH_USER" "$BENCH_DB" >"$out" 2>"$err" &
    pgbench_pid=$!
    wait "$pgbench_pid" || rc=$?
    pgbench_pid=""
    machine_after="$(machine_ticks)"
    switches_after="$(machine_switches)"
    kids_after="$(children_ticks)"
    [[ -n "$pid" ]] && after="$(cpu_ticks "$pid")"
    pg_after="$(server_ticks)"
    counts_after="$(statement_counts)"

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
    run_pg_us="$(awk -v t="$((pg_after - pg_before))" -v hz="$CLK_TCK" -v n="$txns" \
        'BEGIN { printf "%.1f", t / hz * 1e6 / n }')"
    run_bench_us="$(awk -v t="$((kids_after - kids_before))" -v hz="$CLK_TCK" -v n="$txns" \
        'BEGIN { printf "%.1f", t / hz * 1e6 / n }')"
    run_switches="$(awk -v s="$((switches_after - switches_before))" -v n="$txns" \
        'BEGIN { printf "%.2f", s / n }')"
    run_idle="$(awk -v b="$machine_before" -v a="$machine_after" 'BEGIN {
        split(b, x, " "); split(a, y, " "); busy = y[1] - x[1]; idle = y[2] - x[2]
        if (busy + idle > 0) printf "%.1f", 100 * idle / (busy + idle) }')"
    if [[ -n "$counts_before" ]]; then
        run_share="$(awk -v b="$counts_before" -v a="$counts_after" 'BEGIN {
            split(b, x, " "); split(a, y, " ")
            primary = y[1] - x[1]; replica = y[2] - x[2]
            if (primary + replica > 0) printf "%.1f", 100 * primary / (primary + replica) }')"
    fi
}

warm_up() {
    ((WARMUP_SECONDS > 0)) || return 0
    local max t
    max="$(max_clients)"
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
                        share_runs[$key]+="${run_share:+$run_share }"
                        pg_runs[$key]+="$run_pg_us "
                        bench_runs[$key]+="$run_bench_us "
                        idle_runs[$key]+="${run_idle:+$run_idle }"
                        switch_runs[$key]+="$run_switches "
                        round_tps[$key|$round]="$run_tps"
                        round_cpu[$key|$round]="${run_cpu_us:-}"
                        log "$mode c=$clients round $((round + 1))/$ROUNDS $target: $run_tps tps${run_cpu_us:+, $run_cpu_us µs CPU/txn}${run_share:+, $run_share% on the primary}"
                    else
                        failures=$((failures + 1))
                    fi
                    if [[ -n "$RESULTS_CSV" ]]; then
                        echo "$mode,$clients,$target,$((round + 1)),${run_tps:-failed},${run_cpu_us:-},${run_share:-},${run_pg_us:-},${run_bench_us:-},${run_idle:-},${run_switches:-}" >>"$RESULTS_CSV"
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

# "lowest–highest" of the input, each printed with FORMAT (default: no decimals).
spread() {
    words | sort -g | awk -v f="${1:-%.0f}" '
        NR == 1 { lo = $1 } { hi = $1 }
        END { if (NR) printf f "–" f, lo, hi }'
}

# A number with one decimal, or nothing for nothing.
one_decimal() {
    if [[ -n "$1" ]]; then awk -v v="$1" 'BEGIN { printf "%.1f", v }'; fi
}

report() {
    local cpu_model
    cpu_model="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo
    echo "pgbench -S, ${BENCH_SECONDS}s runs, $ROUNDS rounds, scale $SCALE, pool_mode $POOL_MODE, pool_size $POOL_SIZE"
    echo "machine: $(nproc) CPUs, ${cpu_model:-unknown CPU}, $(uname -sr); $("$PG_BIN/postgres" --version)"
    [[ "$REPLICA" == 1 ]] &&
        echo "replica: streaming hot standby of the primary; primary share = the primary's part of the statements both servers ran (pg_stat_statements)"
    has_target pgbouncer && echo "pgbouncer: $(pgbouncer --version | head -n 1) (primary only)"
    if has_target pgpool; then
        local balance="primary only"
        [[ "$REPLICA" == 1 ]] && balance="load_balance_mode on, per session, weights 1:1"
        echo "pgpool: $(pgpool --version 2>&1 | head -n 1), streaming_replication, $balance, session pooling, num_init_children $(($(max_clients) + 2)), max_pool 1"
    fi
    has_target pgstrata && echo "pgstrata: $PGSTRATA_BIN, $(pgstrata_revision)"
    echo
    local share_head="" share_rule=""
    if [[ "$REPLICA" == 1 ]]; then
        share_head=" primary share % |"
        share_rule="----------------:|"
    fi
    echo "| mode | clients | target | median TPS | min–max TPS | vs direct | proxy CPU µs/txn | postgres µs/txn | pgbench µs/txn | idle % | switches/txn |$share_head"
    echo "|------|--------:|--------|-----------:|------------:|----------:|-----------------:|----------------:|---------------:|-------:|-------------:|$share_rule"
    local mode clients target key tps direct ratio cpu share pg bench idle switches
    for mode in $MODES; do
        for clients in $CLIENTS; do
            direct="$(median <<<"${tps_runs["$mode|$clients|direct"]:-}")"
            for target in $TARGETS; do
                key="$mode|$clients|$target"
                if is_skipped "$target" "$mode"; then
                    echo "| $mode | $clients | $target | skipped | | | | | | | |${share_head:+ |}"
                    continue
                fi
                tps="$(median <<<"${tps_runs[$key]:-}")"
                ratio="-"
                [[ -n "$tps" && -n "$direct" ]] &&
                    ratio="$(awk -v a="$tps" -v b="$direct" 'BEGIN { printf "%.2f", a / b }')"
                cpu="$(one_decimal "$(median <<<"${cpu_runs[$key]:-}")")"
                share="$(one_decimal "$(median <<<"${share_runs[$key]:-}")")"
                pg="$(one_decimal "$(median <<<"${pg_runs[$key]:-}")")"
                bench="$(one_decimal "$(median <<<"${bench_runs[$key]:-}")")"
                idle="$(one_decimal "$(median <<<"${idle_runs[$key]:-}")")"
                switches="$(median <<<"${switch_runs[$key]:-}")"
                [[ -n "$switches" ]] && switches="$(awk -v v="$switches" 'BEGIN { printf "%.2f", v }')"
                if [[ -n "$tps" ]]; then
                    tps="$(awk -v t="$tps" 'BEGIN { printf "%.0f", t }')"
                else
                    tps="failed"
                fi
                echo "| $mode | $clients | $target | $tps | $(spread <<<"${tps_runs[$key]:-}") | $ratio | ${cpu:--} | ${pg:--} | ${bench:--} | ${idle:--} | ${switches:--} |${share_head:+ ${share:--} |}"
            done
        done
    done
    has_target pgstrata && has_target pgbouncer && report_paired pgbouncer
    has_target pgstrata && has_target pgpool && report_vs_pgpool
    if ((failures > 0)); then
        echo
        echo "$failures run(s) failed; see the messages above."
    fi
}

# pgstrata's TPS and CPU per transaction over another proxy's, round by round: the two
# runs of a round come one after the other, so a machine whose speed drifts through the
# run (a shared VM) moves both alike. Prints the median of those ratios and their range.
report_paired() {
    local other="$1" mode clients line
    echo
    for mode in $MODES; do
        for clients in $CLIENTS; do
            line="$(paired_ratios round_tps "$mode|$clients" "$other")"
            [[ -n "$line" ]] || continue
            echo "pgstrata / $other, $mode c=$clients, per round: TPS $line; CPU/txn $(paired_ratios round_cpu "$mode|$clients" "$other")"
        done
    done
}

# paired_ratios ARRAY PREFIX OTHER: "median M (range L–H)" of pgstrata's value over
# OTHER's, round by round, from the array named ARRAY at keys "PREFIX|target|round";
# nothing if no round has both.
paired_ratios() {
    local -n values="$1"
    local prefix="$2" other="$3" round ours theirs ratios=""
    for ((round = 0; round < ROUNDS; round++)); do
        ours="${values["$prefix|pgstrata|$round"]:-}"
        theirs="${values["$prefix|$other|$round"]:-}"
        [[ -n "$ours" && -n "$theirs" ]] || continue
        ratios+="$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.3f", a / b }') "
    done
    [[ -n "$ratios" ]] || return 0
    echo "median $(awk -v v="$(median <<<"$ratios")" 'BEGIN { printf "%.3f", v }') (range $(spread %.3f <<<"$ratios"))"
}

# The read-scaling goal: pgstrata's median TPS over Pgpool-II's (target: 1.3).
report_vs_pgpool() {
    local mode clients ours theirs
    echo
    for mode in $MODES; do
        for clients in $CLIENTS; do
            ours="$(median <<<"${tps_runs["$mode|$clients|pgstrata"]:-}")"
            theirs="$(median <<<"${tps_runs["$mode|$clients|pgpool"]:-}")"
            [[ -n "$ours" && -n "$theirs" ]] || continue
            awk -v a="$ours" -v b="$theirs" -v m="$mode" -v c="$clients" \
                'BEGIN { printf "pgstrata / pgpool, %s c=%s: %.2fx (goal 1.30x)\n", m, c, a / b }'
        done
    done
}

# Memory per idle client of each proxy (pgpool's children are processes of their own).
report_idle_memory() {
    ((IDLE_CLIENTS > 0)) || return 0
    local target kib
    echo
    echo "| target | idle clients | KiB per idle client |"
    echo "|--------|-------------:|--------------------:|"
    for target in pgstrata pgbouncer; do
        has_target "$target" || continue
        kib="$(python3 "$(dirname "${BASH_SOURCE[0]}")/idle_clients.py" "$(target_port "$target")" \
            "$IDLE_CLIENTS" "$(target_pid "$target")" "$BENCH_USER" "$BENCH_DB")" ||
            die "idle clients through $target failed"
        echo "| $target | $IDLE_CLIENTS | $kib |"
    done
}

# ---------------------------------------------------------------- main

main() {
    check_knobs
    find_pg_bin
    has_target pgbouncer && ensure_pgbouncer
    has_target pgpool && ensure_pgpool
    has_target pgstrata && ensure_pgstrata
    CLK_TCK="$(getconf CLK_TCK)"
    export PGPASSWORD="$BENCH_PASSWORD"

    trap cleanup EXIT
    trap 'exit 130' INT TERM
    make_tmp
    [[ -n "$RESULTS_CSV" ]] && echo "mode,clients,target,round,tps,cpu_us_per_txn,primary_share_pct,postgres_us_per_txn,pgbench_us_per_txn,idle_pct,switches_per_txn" >"$RESULTS_CSV"

    start_postgres
    [[ "$REPLICA" == 1 ]] && start_replica
    init_bench_data
    [[ "$REPLICA" == 1 ]] && wait_replica_caught_up
    has_target pgbouncer && start_pgbouncer
    has_target pgstrata && start_pgstrata
    has_target pgpool && start_pgpool

    warm_up
    measure
    report
    report_idle_memory
    ((failures == 0))
}

main "$@"
