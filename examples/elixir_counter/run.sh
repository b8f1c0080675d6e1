#!/usr/bin/env bash
# examples/elixir_counter/run.sh - the seed's scenario from Elixir (issue
# 16): an Elixir program (counter.exs) increments counters through the Elixir
# client while this script rolls three silos (SIGTERM and restart, one at a
# time) and scales down to one; at the end every acknowledged increment must
# be there. Needs a migrated database:
#   bash examples/elixir_counter/run.sh DATABASE_URL [BUILD_DIR]
# Run in CI by CTest (examples.elixir_counter) on the pg fixture's database.
set -uo pipefail
url=${1:?usage: run.sh DATABASE_URL [BUILD_DIR]}
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
B=${2:-${GRANARY_BUILD_DIR:-$src/build}}
. "$src/scripts/ports.sh"
work=$(mktemp -d /tmp/granary-elixir.XXXXXX)
declare -a pid port
cleanup() { touch "$work/stop"; for p in "${pid[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cluster="elixir-$$"
"$B/silo" migrate --database "$url" >/dev/null || exit 1
start() {
  "$B/silo" run --database "$url" --listen "127.0.0.1:${port[$1]}" --cluster "$cluster" --secret s3cret \
    --silo-secret s1lo --grains "$B/examples/counter.so" --log-level warn >>"$work/silo$1.log" 2>&1 &
  pid[$1]=$!
  for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/${port[$1]}") 2>/dev/null && return 0; sleep 0.05; done
  echo "silo $1 did not listen"; exit 1
}
stop() {
  kill -TERM "${pid[$1]}"
  for _ in $(seq 1 300); do kill -0 "${pid[$1]}" 2>/dev/null || break; sleep 0.1; done
  wait "${pid[$1]}" 2>/dev/null
  pid[$1]=""
}
list=""
for i in 0 1 2; do port[$i]=$(free_port); start "$i"; list="$list${list:+,}127.0.0.1:${port[$i]}"; done
sleep 1.5
timeout 180 elixir "$here/counter.exs" "$list" "$cluster" s3cret "$work/stop" &
app=$!
sleep 2
for i in 0 1 2; do echo "rolling silo $i"; stop "$i"; start "$i"; sleep 1.5; done
echo "scaling down to one"; stop 2; sleep 1; stop 1; sleep 2
touch "$work/stop"
wait "$app"
