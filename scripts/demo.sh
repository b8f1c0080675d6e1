#!/usr/bin/env bash
# The README's first command: install, build, start a throwaway PostgreSQL,
# migrate, run a silo hosting the Counter example, increment a counter, kill
# the silo with SIGKILL, restart it and show that every acknowledged
# increment survived. Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/deps.sh
echo "== building =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
pgdir=$(mktemp -d /tmp/granary-demo-pg.XXXXXX)
silo_pid=""
cleanup() {
  [ -n "$silo_pid" ] && kill -9 "$silo_pid" 2>/dev/null || true
  bash "$root/scripts/pg.sh" stop "$pgdir" || true
}
trap cleanup EXIT
echo "== starting a throwaway PostgreSQL =="
url=$(bash scripts/pg.sh start "$pgdir")
echo "database: $url"
echo "== silo migrate =="
./build/silo migrate --database "$url"
port=$(( (RANDOM % 20000) + 20000 ))
start_silo() {
  ./build/silo run --database "$url" --listen "127.0.0.1:$port" \
    --grains build/examples/counter.so >>"$pgdir/silo.log" 2>&1 &
  silo_pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0; sleep 0.05; done
  echo "silo did not start:"; cat "$pgdir/silo.log"; exit 1
}
call() { ./build/granary call --silo "127.0.0.1:$port" "$@"; }
echo "== silo run (pid below) hosting Counter on 127.0.0.1:$port =="
start_silo
echo "silo pid $silo_pid"
echo "== 5 x granary call Counter/demo incr =="
for _ in 1 2 3 4 5; do call Counter/demo incr; done
echo "== 100 pipelined increments from a C client (examples/counter/counter_client.c) =="
./build/examples/counter_client "127.0.0.1:$port" demo 100
echo "== kill -9 the silo =="
kill -9 "$silo_pid"; wait "$silo_pid" 2>/dev/null || true
echo "== restart it and read the counter =="
start_silo
value=$(call Counter/demo get)
echo "Counter/demo = $value after kill -9 and restart (expected 105)"
echo "== silo status =="
./build/silo status --database "$url"
echo "== SIGTERM: graceful stop =="
kill -TERM "$silo_pid"; wait "$silo_pid"; echo "silo exited with status $?"
silo_pid=""
[ "$value" = "105" ] || { echo "FAILED: expected 105"; exit 1; }
echo "demo OK"
