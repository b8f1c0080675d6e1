#!/usr/bin/env bash
# The README's first command. Installs what is needed, builds, starts a
# throwaway PostgreSQL, migrates, and runs a local three-silo cluster hosting
# the Counter example. It increments counters through different silos,
# kills one silo with SIGKILL (its grains come back on the others with their
# state), restarts it, drains another with SIGTERM, and checks every value.
# Each silo serves the dashboard on its HTTP port (docs/dashboard.md).
#   bash scripts/demo.sh          run the demo and stop everything
#   bash scripts/demo.sh --keep   then keep the cluster running for the dashboard until Ctrl-C
# Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/deps.sh
echo "== building =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
work=$(mktemp -d /tmp/granary-demo.XXXXXX)
chmod 755 "$work" # the PostgreSQL server runs as the postgres user and must reach its data dir
keep=0
for a in "$@"; do
  case "$a" in
    --keep) keep=1 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $a (try --help)" >&2; exit 2 ;;
  esac
done
declare -A pid port hport
cleanup() {
  for i in "${!pid[@]}"; do { kill -9 "${pid[$i]}"; wait "${pid[$i]}"; } 2>/dev/null || true; done
  bash "$root/scripts/pg.sh" stop "$work/pg" || true
  rm -rf "$work"
}
trap cleanup EXIT
echo "== starting a throwaway PostgreSQL =="
url=$(bash scripts/pg.sh start "$work/pg")
echo "database: $url"
echo "== silo migrate =="
./build/silo migrate --database "$url"

. scripts/ports.sh
start_silo() { # start_silo N
  local i=$1
  [ -n "${port[$i]:-}" ] || port[$i]=$(free_port)
  while [ -z "${hport[$i]:-}" ] || [ "${hport[$i]}" = "${port[$i]}" ]; do hport[$i]=$(free_port); done
  ./build/silo run --database "$url" --listen "127.0.0.1:${port[$i]}" --http "127.0.0.1:${hport[$i]}" --cluster demo \
    --grains build/examples/counter.so >>"$work/silo$i.log" 2>&1 &
  pid[$i]=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/${port[$i]}") 2>/dev/null && return 0; sleep 0.05; done
  echo "silo $i did not start:"; cat "$work/silo$i.log"; exit 1
}
all_silos() { echo "127.0.0.1:${port[1]},127.0.0.1:${port[2]},127.0.0.1:${port[3]}"; }
call() { # call SILO_LIST GRAIN METHOD -- retries retryable errors (exit 75) for a few seconds
  local out rc
  for _ in $(seq 1 60); do
    out=$(./build/granary call --cluster demo --silo "$1" "$2" "$3" 2>"$work/err") && { echo "$out"; return 0; }
    rc=$?; [ "$rc" -eq 75 ] || { cat "$work/err" >&2; return "$rc"; }
    sleep 0.1
  done
  cat "$work/err" >&2
  return 1
}
active() { ./build/silo status --database "$url" --cluster demo | grep -c " active " || true; }

echo "== three silos =="
for i in 1 2 3; do start_silo "$i"; echo "silo $i: pid ${pid[$i]}, 127.0.0.1:${port[$i]}, dashboard http://127.0.0.1:${hport[$i]}/"; done
for _ in $(seq 1 100); do [ "$(active)" = 3 ] && break; sleep 0.1; done
./build/silo status --database "$url" --cluster demo | sed -n '2,6p'

echo "== 10 increments of each of 6 counters, entering through all three silos =="
for n in $(seq 1 10); do
  j=0
  for c in a b c d e f; do
    s=$(( (n + j) % 3 + 1 )); j=$((j + 1))
    call "127.0.0.1:${port[$s]}" "Counter/$c" incr >/dev/null
  done
done
for c in a b c d e f; do
  echo "Counter/$c = $(call "$(all_silos)" "Counter/$c" get) on silo $(call "$(all_silos)" "Counter/$c" where)"
done

victim=$(call "127.0.0.1:${port[2]}" Counter/a where)
echo "== kill -9 the silo hosting Counter/a ($victim) =="
for i in 1 2 3; do
  case "$victim" in "127.0.0.1:${port[$i]}-"*) v=$i;; esac
done
{ kill -9 "${pid[$v]}"; wait "${pid[$v]}"; } 2>/dev/null || true; unset "pid[$v]"
t0=$(date +%s%N)
survivors=""
for i in 1 2 3; do [ "$i" != "$v" ] && survivors="$survivors,127.0.0.1:${port[$i]}"; done
survivors=${survivors#,}
value=$(call "$survivors" Counter/a get)
t1=$(date +%s%N)
echo "Counter/a = $value, now on $(call "$survivors" Counter/a where), $(( (t1 - t0) / 1000000 )) ms after the kill"
echo "(until the cluster declares the dead silo dead, calls for its grains get a retryable error; call() retries them)"
[ "$value" = 10 ] || { echo "FAILED: expected 10"; exit 1; }

echo "== restart silo $v (a new incarnation on the same address) =="
start_silo "$v"
for _ in $(seq 1 100); do [ "$(active)" = 3 ] && break; sleep 0.1; done
./build/silo status --database "$url" --cluster demo | sed -n '2,8p'

d=$(( v % 3 + 1 ))
echo "== SIGTERM silo $d: graceful drain, its grains move =="
kill -TERM "${pid[$d]}"; wait "${pid[$d]}"; echo "silo $d exited with status $?"; unset "pid[$d]"
survivors=""
for i in 1 2 3; do [ "$i" != "$d" ] && survivors="$survivors,127.0.0.1:${port[$i]}"; done
ok=1
for c in a b c d e f; do
  v2=$(call "${survivors#,}" "Counter/$c" get)
  echo "Counter/$c = $v2"
  [ "$v2" = 10 ] || ok=0
done
[ "$ok" = 1 ] || { echo "FAILED: a counter lost an acknowledged increment"; exit 1; }
h=$(( d % 3 + 1 ))
members=$(curl -s "http://127.0.0.1:${hport[$h]}/api/cluster" | grep -o '"status":"active"' | wc -l)
echo "the dashboard of silo $h (http://127.0.0.1:${hport[$h]}/) shows $members active silos in the view"
echo "demo OK: every acknowledged increment survived kill -9, restart and drain"
if [ "$keep" = 1 ]; then
  start_silo "$d"
  echo "== keeping the cluster up: open http://127.0.0.1:${hport[1]}/ (or any silo's HTTP port); Ctrl-C stops it all =="
  while :; do # a little traffic so the charts move
    for c in a b c d e f; do call "$(all_silos)" "Counter/$c" get >/dev/null 2>&1 || true; done
    sleep 1
  done
fi
