#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the Iceberg SQL catalog test
# (services/feeder-writer/tests/iceberg.rs, `the_sql_catalog_works_on_postgres`): the
# production catalog database, tested against a real server instead of skipped.
#
# Usage: tests/setup-postgres.sh start DIR   -> prints the connection URL (last line)
#        tests/setup-postgres.sh stop DIR
#
# Uses Debian's postgresql package (installed with apt-get when no initdb is found). The
# server runs as the `postgres` user when started as root (PostgreSQL refuses root),
# listens on 127.0.0.1 only, on a free port, with trust authentication for that
# address: a test fixture, never a deployment.
set -euo pipefail

cmd="${1:?start|stop}"
dir="${2:?data directory}"

find_bin() {
    local b
    b="$(command -v initdb 2>/dev/null || true)"
    if [ -z "$b" ]; then
        b="$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)"
    fi
    [ -n "$b" ] && dirname "$(readlink -f "$b")"
}

bin="$(find_bin || true)"
if [ -z "$bin" ] && [ "$cmd" = start ]; then
    echo "setup-postgres: installing Debian's postgresql" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    bin="$(find_bin)"
fi

as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "$cmd" in
start)
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    as_owner "$bin/initdb" -D "$dir/data" -U feeder --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off" start >&2 \
        || { cat "$dir/server.log" >&2; exit 1; }
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U feeder iceberg >&2
    echo "postgres://feeder@127.0.0.1:$port/iceberg"
    ;;
stop)
    if [ -n "$bin" ] && [ -d "$dir/data" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >&2 || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
