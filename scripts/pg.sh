#!/usr/bin/env bash
# A throwaway PostgreSQL for demos, tests and benchmarks.
#   scripts/pg.sh start DIR   initdb into DIR, start on a free 127.0.0.1 port,
#                             write the connection URL to DIR/url and print it
#   scripts/pg.sh stop DIR    stop it (fast, then immediate) and remove DIR
#   scripts/pg.sh restart DIR [fast|immediate]   stop and start on the same port
# As root the server runs as the unprivileged `postgres` user (initdb refuses root).
set -euo pipefail
cmd=${1:?usage: pg.sh start|stop|restart DIR}
dir=${2:?usage: pg.sh start|stop|restart DIR}
# Absolute, for every command: the server resolves its socket directory (-k)
# from its own working directory, so a relative DIR broke restarts.
dir=$(realpath -m -- "$dir")

bindir=""
if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
  bindir=$(pg_config --bindir)
else
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
[ -x "$bindir/initdb" ] || { echo "pg.sh: PostgreSQL server binaries not found (run scripts/deps.sh)" >&2; exit 1; }

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

start_server() {
  local port=$1
  as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 ${GR_PG_OPTS:-}" start >/dev/null
}

case "$cmd" in
start)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
  chmod 700 "$dir"
  as_pg test -w "$dir" || { echo "pg.sh: $dir is not reachable by the postgres user (check the parent directories' permissions)" >&2; exit 1; }
  as_pg "$bindir/initdb" -D "$dir/data" -U granary --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null 2>"$dir/initdb.err" \
    || as_pg "$bindir/initdb" -D "$dir/data" -U granary --auth=trust -E UTF8 >/dev/null
  # GR_PG_HBA: extra pg_hba.conf lines (the chaos harness admits its own
  # network namespaces); GR_PG_OPTS: extra server settings (later -c wins).
  [ -n "${GR_PG_HBA:-}" ] && echo "$GR_PG_HBA" >> "$dir/data/pg_hba.conf"
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    if start_server "$port"; then break; fi
    [ "$attempt" -eq 5 ] && { cat "$dir/log" >&2; exit 1; }
  done
  if ! as_pg "$bindir/createdb" -h 127.0.0.1 -p "$port" -U granary granary; then
    # Do not leave a server behind that nobody knows about.
    as_pg "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 20 stop >/dev/null 2>&1 || true
    exit 1
  fi
  url="postgresql://granary@127.0.0.1:$port/granary"
  echo "$url" > "$dir/url"
  echo "$port" > "$dir/port"
  chmod 644 "$dir/url" "$dir/port"
  echo "$url"
  ;;
stop)
  [ -d "$dir/data" ] || exit 0
  as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 20 stop >/dev/null 2>&1 \
    || as_pg "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 20 stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  ;;
restart)
  mode=${3:-fast}
  as_pg "$bindir/pg_ctl" -D "$dir/data" -m "$mode" -w -t 20 stop >/dev/null
  # The same port must be free again; give a lingering socket a moment.
  for attempt in 1 2 3 4 5; do
    if start_server "$(cat "$dir/port")"; then exit 0; fi
    [ "$attempt" -eq 5 ] && { tail -n 20 "$dir/log" >&2; exit 1; }
    sleep 0.3
  done
  ;;
*)
  echo "usage: pg.sh start|stop|restart DIR" >&2; exit 2 ;;
esac
