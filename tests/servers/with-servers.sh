#!/usr/bin/env bash
# with-servers.sh COMMAND [ARGS...]
#
# Runs COMMAND with throw-away backing servers started for its duration, then
# stops them and exits with COMMAND's exit code.
#
# Started now:
#   * PostgreSQL (Debian package `postgresql`, installed with apt-get if no
#     /usr/lib/postgresql/*/bin/postgres exists; the newest version found is
#     used).  A fresh cluster in a mktemp -d directory, listening ONLY on
#     127.0.0.1 at a free port, with the unix socket inside that directory and
#     durability switched off (fsync, synchronous_commit, full_page_writes) for
#     speed.  Role `gridcap` (password `gridcap`) owns database `gridcap_test`.
#     Exports:
#       GRIDCAP_TEST_POSTGRES_URL        postgresql+psycopg://gridcap:gridcap@127.0.0.1:PORT/gridcap_test
#       GRIDCAP_TEST_POSTGRES_ADMIN_URL  postgresql+psycopg://postgres@127.0.0.1:PORT/postgres
#
# Run as root (CI), the servers run as the `postgres` system user (initdb
# refuses root); run as anyone else, they run as that user.
#
# Later: InfluxDB (`influxd` from the Debian package `influxdb`) will be added
# the same way: write start_influx/stop_influx next to the postgres pair, call
# start_influx in main, and register stop_influx in STOPPERS.  Each start_*
# prints one line to stderr and exports its connection variables; each stop_*
# must be safe to call when its start_* never ran or failed half way.
set -euo pipefail

log() { printf 'with-servers: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ $# -eq 0 ]]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi

IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1

# Stop functions to run at exit, in reverse order of start.
STOPPERS=()

APT_UPDATED=0
apt_install() {
    [[ $IS_ROOT -eq 1 ]] || die "need root to apt-get install $*"
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        apt-get update -qq >&2
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# A free TCP port on 127.0.0.1 (the kernel picks it).  Another process may grab
# it before the server binds, so callers retry on "address in use".
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
    else
        echo $((55432 + RANDOM % 5000))
    fi
}

# ---------------------------------------------------------------- PostgreSQL
PG_BIN=""
PG_VERSION=""
PG_TMP=""
PG_DATA=""
PG_LOG=""
PG_PORT=""
PG_STARTED=0

# Run a command as the server's user.  cd into the temp dir first so the
# postgres user is never left in a directory it cannot read.
as_pg() {
    if [[ $IS_ROOT -eq 1 ]]; then
        (cd "$PG_TMP" && runuser -u postgres -- "$@")
    else
        (cd "$PG_TMP" && "$@")
    fi
}

find_pg_bin() {
    local postgres
    postgres=$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n $postgres ]] || return 1
    PG_BIN=$(dirname "$postgres")
    PG_VERSION=$(basename "$(dirname "$PG_BIN")")
}

start_postgres() {
    if ! find_pg_bin; then
        apt_install postgresql
        find_pg_bin || die "postgresql installed but no /usr/lib/postgresql/*/bin/postgres"
    fi
    if [[ $IS_ROOT -eq 1 ]]; then
        id -u postgres >/dev/null 2>&1 || die "no 'postgres' system user (it comes with the Debian package)"
    fi

    PG_TMP=$(mktemp -d "${TMPDIR:-/tmp}/gridcap-pg.XXXXXX")
    PG_DATA="$PG_TMP/data"
    PG_LOG="$PG_TMP/server.log"
    if [[ $IS_ROOT -eq 1 ]]; then chown postgres: "$PG_TMP"; fi
    STOPPERS+=(stop_postgres)

    local locale_opt=(--locale=C.UTF-8)
    if ! locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then
        locale_opt=(--no-locale)
    fi
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" --auth=trust --username=postgres -E UTF8 \
        "${locale_opt[@]}" >"$PG_TMP/initdb.log" 2>&1 \
        || { cat "$PG_TMP/initdb.log" >&2; die "initdb failed"; }

    local attempt
    for attempt in 1 2 3 4 5; do
        PG_PORT=$(free_port)
        : >"$PG_LOG"
        if [[ $IS_ROOT -eq 1 ]]; then chown postgres: "$PG_LOG"; fi
        # pg_ctl -w returns non-zero at once if the postmaster exits (e.g. the
        # port was taken meanwhile), and after 30 s if it never gets ready.
        if as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 30 start -o "\
            -c listen_addresses=127.0.0.1 -c port=$PG_PORT \
            -c unix_socket_directories=$PG_TMP \
            -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
            -c max_connections=200" >/dev/null 2>&1; then
            PG_STARTED=1
            break
        fi
        if grep -q 'Address already in use' "$PG_LOG"; then
            log "postgres: port $PG_PORT taken, retrying with another"
            continue
        fi
        # Still running but not ready in time: let stop_postgres kill it.
        [[ -f $PG_DATA/postmaster.pid ]] && PG_STARTED=1
        cat "$PG_LOG" >&2
        die "postgres did not start on 127.0.0.1:$PG_PORT within 30 s (server log above)"
    done
    [[ $PG_STARTED -eq 1 ]] || { cat "$PG_LOG" >&2; die "postgres: no free port after 5 tries"; }
    wait_postgres || { cat "$PG_LOG" >&2; die "pg_isready: postgres on 127.0.0.1:$PG_PORT not ready within 30 s (server log above)"; }

    local psql=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres)
    "${psql[@]}" -c "CREATE ROLE gridcap LOGIN PASSWORD 'gridcap'" >&2
    "${psql[@]}" -c "CREATE DATABASE gridcap_test OWNER gridcap" >&2

    export GRIDCAP_TEST_POSTGRES_URL="postgresql+psycopg://gridcap:gridcap@127.0.0.1:$PG_PORT/gridcap_test"
    export GRIDCAP_TEST_POSTGRES_ADMIN_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/postgres"
    log "started postgres $PG_VERSION on 127.0.0.1:$PG_PORT (data $PG_DATA)"
}

# 0 once pg_isready accepts 127.0.0.1:PORT, 1 after 30 s.
wait_postgres() {
    local deadline=$((SECONDS + 30))
    until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

stop_postgres() {
    if [[ $PG_STARTED -eq 1 && -f $PG_DATA/postmaster.pid ]]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 30 stop >/dev/null 2>&1 \
            || as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1 \
            || log "could not stop postgres in $PG_DATA"
        log "stopped postgres $PG_VERSION on 127.0.0.1:$PG_PORT"
    fi
    PG_STARTED=0
    if [[ -n $PG_TMP && -d $PG_TMP ]]; then
        rm -rf "$PG_TMP"
    fi
}

# ---------------------------------------------------------------- main
RC=0
CLEANED=0
cleanup() {
    [[ $CLEANED -eq 1 ]] && return
    CLEANED=1
    set +e
    local i
    for ((i = ${#STOPPERS[@]} - 1; i >= 0; i--)); do
        "${STOPPERS[i]}"
    done
}
on_exit() {
    local status=$?
    # A failure before the command ran (set -e, die) keeps its own status.
    [[ $RC -eq 0 ]] && RC=$status
    cleanup
    exit "$RC"
}
trap on_exit EXIT
trap 'RC=130; exit 130' INT
trap 'RC=143; exit 143' TERM

start_postgres

set +e
"$@"
RC=$?
set -e
exit "$RC"
