#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on 127.0.0.1:${PGPORT:-55432} (trust auth, data in
# a temporary directory) with Debian's PostgreSQL binaries, and prints the admin URL that
# the store tests take in HUDDLE_TEST_POSTGRES_URL. Stop it with: .ci/postgres.sh stop
set -euo pipefail
port=${PGPORT:-55432}
dir=/tmp/huddle-pg-$port
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }
run() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "${1:-}" = stop ]; then
  run "$bin/pg_ctl" -D "$dir" -m immediate stop >/dev/null 2>&1 || true
  exit 0
fi
if ! run "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
  rm -rf "$dir"
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  run "$bin/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >/dev/null
  run "$bin/pg_ctl" -D "$dir" -l "$dir/log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=300 -c fsync=on" start >/dev/null
fi
echo "postgres://postgres@127.0.0.1:$port/postgres"
