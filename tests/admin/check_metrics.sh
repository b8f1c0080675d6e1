#!/usr/bin/env bash
# tests/admin/check_metrics.sh [DATABASE_URL] - a live silo's /metrics as a
# Prometheus server would read it: `promtool check metrics` (Debian's
# prometheus package) must report nothing, every family must have HELP and
# TYPE, and the process_* and granary_build_info families must be there.
# With a database URL the silo runs on PostgreSQL (the pool, membership and
# reminder families appear too), else on memory. Calls are made first so
# that per-class and per-method families have samples. Loopback only.
set -uo pipefail
B=${GRANARY_BUILD_DIR:?}
src=${GRANARY_SOURCE_DIR:?}
url=${1:-}
. "$src/scripts/ports.sh"
command -v promtool >/dev/null || { echo "promtool missing: run scripts/deps.sh"; exit 1; }
work=$(mktemp -d /tmp/granary-metrics.XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port=$(free_port)
hport=$(free_port)
while [ "$hport" = "$port" ]; do hport=$(free_port); done
if [ -n "$url" ]; then
  "$B/silo" migrate --database "$url" >/dev/null || { echo "migrate failed"; exit 1; }
  storage=(--database "$url" --cluster "metrics-$$")
  cl=(--cluster "metrics-$$")
else
  storage=(--memory)
  cl=()
fi
"$B/silo" run "${storage[@]}" --listen "127.0.0.1:$port" --http "127.0.0.1:$hport" \
  --grains "$B/examples/counter.so" --log-level warn >"$work/silo.log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
  curl -sf "http://127.0.0.1:$hport/readyz" >/dev/null 2>&1 && break
  sleep 0.05
done
for i in 1 2 3; do
  "$B/granary" call "${cl[@]}" --silo "127.0.0.1:$port" "Counter/m$i" incr >/dev/null || { echo "call failed"; cat "$work/silo.log"; exit 1; }
done
"$B/granary" call "${cl[@]}" --silo "127.0.0.1:$port" Counter/m1 no-such-method >/dev/null 2>&1 # an error sample
curl -sf "http://127.0.0.1:$hport/metrics" >"$work/metrics.txt" || { echo "GET /metrics failed"; exit 1; }
fail=0
if ! out=$(promtool check metrics <"$work/metrics.txt" 2>&1); then
  echo "FAIL promtool check metrics:"
  echo "$out"
  fail=1
elif [ -n "$out" ]; then # promtool prints lint problems even when it exits 0 on some versions
  echo "FAIL promtool reported: $out"
  fail=1
else
  echo "ok   promtool check metrics: no problems"
fi
families=$(grep -c '^# TYPE ' "$work/metrics.txt")
helps=$(grep -c '^# HELP ' "$work/metrics.txt")
[ "$families" = "$helps" ] && echo "ok   $families families, each with HELP" || { echo "FAIL $families TYPE lines, $helps HELP lines"; fail=1; }
for f in process_cpu_seconds_total process_resident_memory_bytes process_open_fds process_max_fds \
  process_start_time_seconds granary_build_info granary_calls_total; do
  grep -q "^$f[ {]" "$work/metrics.txt" && echo "ok   $f" || { echo "FAIL no $f"; fail=1; }
done
[ "$fail" = 0 ]
