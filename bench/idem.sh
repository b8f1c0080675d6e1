#!/usr/bin/env bash
# The cost of idempotency keys, in one run on one PostgreSQL: persisted incr
# through one silo at 32 and 1024 in flight, each call without a key and
# with its own fresh key, in alternating rounds (so drift hits both alike);
# then what keys add to the rows (bytes per grain with N remembered keys)
# and the cost of the pruning each write does.
#   bench/idem.sh [ROUNDS] [SECONDS]    (default 3 rounds, 3 s per bench)
# Loopback only; bounded in time; everything stops on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-3}
. bench/lib.sh
bench_setup idem
echo "# $(date -u +%Y-%m-%d) on $(nproc) cores, $(uname -sr): $(git rev-parse --short HEAD)$( [ -n "$(git status --porcelain)" ] && echo '+changes'), ${secs}s per bench"
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
p=$(free_port)
$B/silo run --database "$url" --listen "127.0.0.1:$p" --cluster idem --grains $B/examples/counter.so \
  --log-level warn >>"$work/silo.log" 2>&1 &
pids+=("$!")
wait_port "$p"
sleep 1
BC="$B/bench/bench_client --cluster idem --silo 127.0.0.1:$p --method incr"
for r in $(seq 1 "$rounds"); do
  for idem in 0 1; do
    label=$([ $idem = 1 ] && echo "with keys" || echo "no keys  ")
    $BC --prefix "w$r-$idem-" --keys 1000 --window 32 --seconds "$secs" --idem $idem \
      --label "round $r, $label: persisted incr, 32 in flight"
    $BC --prefix "x$r-$idem-" --keys 10000 --window 1024 --seconds "$secs" --idem $idem \
      --label "round $r, $label: persisted incr, 1024 in flight"
  done
done
# Storage per key: grains that remembered N keyed incrs (N = 10, 100, 1000).
for n in 10 100 1000; do
  $BC --prefix "g$n-" --keys 10 --window 10 --max-calls $((n * 10)) --seconds 60 --idem 1 --label "fill $n" >/dev/null
done
$BC --prefix "g0-" --keys 10 --window 10 --max-calls 100 --seconds 60 --idem 0 --label "fill 0" >/dev/null
psql "$url" -qAt -c "SELECT 'reply rows: ' || count(*) || ', ' || pg_size_pretty(pg_total_relation_size('granary_reply')) || ' with its indexes, ' || round(pg_total_relation_size('granary_reply')::numeric / greatest(count(*), 1)) || ' bytes per remembered key' FROM granary_reply"
# Pruning at the bound: every write of these grains drops the oldest key and
# stores the other 999 again (the row is rewritten whole), against grains
# with few keys, at the same concurrency.
$BC --prefix "g10-" --keys 10 --window 10 --seconds "$secs" --idem 1 --label "10 grains holding ~10 keys each, keyed incr, 10 in flight"
$BC --prefix "g1000-" --keys 10 --window 10 --seconds "$secs" --idem 1 --label "10 grains at the 1000-key bound, keyed incr, 10 in flight"
