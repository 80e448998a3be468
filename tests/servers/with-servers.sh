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
#   * InfluxDB 1.x (`influxd` from the Debian package `influxdb`, 1.6.7 on
#     bookworm, installed with apt-get if missing; the package's own service is
#     kept from starting).  Config, meta, data and wal in a mktemp -d directory,
#     HTTP on 127.0.0.1 at a free port, its RPC (backup) port on another free
#     port of 127.0.0.1, auth off, reporting and self-monitoring off.  Runs as
#     the calling user.  Exports:
#       GRIDCAP_TEST_INFLUX_URL   http://127.0.0.1:PORT
#       GRIDCAP_TEST_INFLUXD      path of influxd (tests start more with it)
#
# Each start_* prints one line to stderr and exports its connection variables;
# each stop_* is safe to call when its start_* never ran or failed half way.
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

# ---------------------------------------------------------------- InfluxDB
INFLUXD=""
INFLUX_TMP=""
INFLUX_PID=""
INFLUX_PORT=""

install_influxdb() {
    # The package's postinst would start a system influxd on :8086; a policy-rc.d
    # that answers 101 ("action forbidden") keeps it from starting.
    local policy=/usr/sbin/policy-rc.d own_policy=0 status=0
    if [[ $IS_ROOT -eq 1 && ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
    fi
    apt_install influxdb || status=$?
    if [[ $own_policy -eq 1 ]]; then rm -f "$policy"; fi
    return "$status"
}

write_influx_config() {  # FILE HTTP_PORT RPC_PORT
    cat >"$1" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$3"
[meta]
  dir = "$INFLUX_TMP/meta"
  logging-enabled = false
[data]
  dir = "$INFLUX_TMP/data"
  wal-dir = "$INFLUX_TMP/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:$2"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false
EOF
}

# 0 once GET /ping answers 204; 1 if influxd exits or 30 s pass.
wait_influx() {
    local deadline=$((SECONDS + 30)) url="http://127.0.0.1:$INFLUX_PORT/ping" code
    while ((SECONDS < deadline)); do
        kill -0 "$INFLUX_PID" 2>/dev/null || return 1
        if command -v curl >/dev/null 2>&1; then
            code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" || true)
        else
            code=$(python3 -c 'import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=2).status)' \
                "$url" 2>/dev/null || true)
        fi
        [[ $code == 204 ]] && return 0
        sleep 0.1
    done
    return 1
}

start_influx() {
    INFLUXD=$(command -v influxd || true)
    if [[ -z $INFLUXD ]]; then
        install_influxdb
        INFLUXD=$(command -v influxd || true)
        [[ -n $INFLUXD ]] || die "influxdb installed but no influxd on PATH"
    fi
    INFLUX_TMP=$(mktemp -d "${TMPDIR:-/tmp}/gridcap-influx.XXXXXX")
    STOPPERS+=(stop_influx)

    local attempt started=0 log="$INFLUX_TMP/influxd.log"
    for attempt in 1 2 3 4 5; do
        INFLUX_PORT=$(free_port)
        write_influx_config "$INFLUX_TMP/influxdb.conf" "$INFLUX_PORT" "$(free_port)"
        "$INFLUXD" -config "$INFLUX_TMP/influxdb.conf" >"$log" 2>&1 &
        INFLUX_PID=$!
        if wait_influx; then
            started=1
            break
        fi
        if grep -q 'address already in use' "$log"; then
            log "influxd: port taken, retrying with others"
            stop_influx_process
            continue
        fi
        cat "$log" >&2
        die "influxd did not answer /ping on 127.0.0.1:$INFLUX_PORT within 30 s (server log above)"
    done
    [[ $started -eq 1 ]] || { cat "$log" >&2; die "influxd: no free port after 5 tries"; }

    export GRIDCAP_TEST_INFLUX_URL="http://127.0.0.1:$INFLUX_PORT"
    export GRIDCAP_TEST_INFLUXD="$INFLUXD"
    log "started influxd $("$INFLUXD" version 2>/dev/null | awk '{print $2}') on 127.0.0.1:$INFLUX_PORT (data $INFLUX_TMP)"
}

stop_influx_process() {
    if [[ -n $INFLUX_PID ]] && kill -0 "$INFLUX_PID" 2>/dev/null; then
        kill "$INFLUX_PID" 2>/dev/null
        local deadline=$((SECONDS + 10))
        while kill -0 "$INFLUX_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        kill -KILL "$INFLUX_PID" 2>/dev/null
    fi
    if [[ -n $INFLUX_PID ]]; then wait "$INFLUX_PID" 2>/dev/null; fi
    INFLUX_PID=""
}

stop_influx() {
    if [[ -n $INFLUX_PID ]]; then
        stop_influx_process
        log "stopped influxd on 127.0.0.1:$INFLUX_PORT"
    fi
    if [[ -n $INFLUX_TMP && -d $INFLUX_TMP ]]; then
        rm -rf "$INFLUX_TMP"
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
start_influx

set +e
"$@"
RC=$?
set -e
exit "$RC"
