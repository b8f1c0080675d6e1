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
  as_pg "$bindir/pg_ctl" -D "$srv/data" -l "$srv/log" -w -t 30 \
    -o "-p $port -k $srv -c listen_addresses=127.0.0.1 ${GR_PG_OPTS:-}" start >/dev/null
}

# Where the server's own files live: DIR, or (when the postgres user cannot
# reach DIR, e.g. a checkout under a 0700 mktemp directory) a directory of
# its own in /tmp, named in DIR/server. DIR always holds url and port.
server_dir() {
  if [ -f "$dir/server" ]; then cat "$dir/server"; else echo "$dir"; fi
}

case "$cmd" in
start)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  srv=$dir
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
  chmod 700 "$dir"
  if ! as_pg test -w "$dir"; then
    srv=$(mktemp -d /tmp/granary-pg.XXXXXX)
    [ "$(id -u)" -eq 0 ] && chown postgres "$srv"
    chmod 700 "$srv"
    as_pg test -w "$srv" || { echo "pg.sh: neither $dir nor $srv is writable by the postgres user" >&2; exit 1; }
    echo "$srv" > "$dir/server"
  fi
  as_pg "$bindir/initdb" -D "$srv/data" -U granary --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null 2>"$srv/initdb.err" \
    || as_pg "$bindir/initdb" -D "$srv/data" -U granary --auth=trust -E UTF8 >/dev/null
  # GR_PG_HBA: extra pg_hba.conf lines (the chaos harness admits its own
  # network namespaces); GR_PG_OPTS: extra server settings (later -c wins).
  [ -n "${GR_PG_HBA:-}" ] && echo "$GR_PG_HBA" >> "$srv/data/pg_hba.conf"
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    if start_server "$port"; then break; fi
    [ "$attempt" -eq 5 ] && { cat "$srv/log" >&2; exit 1; }
  done
  if ! as_pg "$bindir/createdb" -h 127.0.0.1 -p "$port" -U granary granary; then
    # Do not leave a server behind that nobody knows about.
    as_pg "$bindir/pg_ctl" -D "$srv/data" -m immediate -w -t 20 stop >/dev/null 2>&1 || true
    exit 1
  fi
  url="postgresql://granary@127.0.0.1:$port/granary"
  echo "$url" > "$dir/url"
  echo "$port" > "$dir/port"
  chmod 644 "$dir/url" "$dir/port"
  echo "$url"
  ;;
stop)
  srv=$(server_dir)
  [ -d "$srv/data" ] || { rm -rf "$dir"; exit 0; }
  as_pg "$bindir/pg_ctl" -D "$srv/data" -m fast -w -t 20 stop >/dev/null 2>&1 \
    || as_pg "$bindir/pg_ctl" -D "$srv/data" -m immediate -w -t 20 stop >/dev/null 2>&1 || true
  rm -rf "$srv" "$dir"
  ;;
restart)
  mode=${3:-fast}
  srv=$(server_dir)
  as_pg "$bindir/pg_ctl" -D "$srv/data" -m "$mode" -w -t 20 stop >/dev/null
  # The same port must be free again; give a lingering socket a moment.
  for attempt in 1 2 3 4 5; do
    if start_server "$(cat "$dir/port")"; then exit 0; fi
    [ "$attempt" -eq 5 ] && { tail -n 20 "$srv/log" >&2; exit 1; }
    sleep 0.3
  done
  ;;
*)
  echo "usage: pg.sh start|stop|restart DIR" >&2; exit 2 ;;
esac
