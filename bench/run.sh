#!/usr/bin/env bash
# Run the benchmarks and print BENCHMARKS.md-ready lines. Bounded in time
# (about five minutes at 3 s per point), loopback only. Starts its own PostgreSQL (default
# durability: fsync on, synchronous_commit on) and stops it on exit.
#   bench/run.sh [SECONDS_PER_BENCH]     (default 3; CI uses 1 as a smoke test)
# The sweep (bench/sweep.sh) writes docs/bench-sweep.{tsv,svg}, or into
# $BENCH_OUT; BENCH_LEVELS chooses the calls in flight (default 1 .. 4096).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
. bench/lib.sh
bench_setup bench

echo "# $(date -u +%Y-%m-%d) on $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); ${secs}s per bench"
$B/bench/bench_local --seconds "$secs"
$B/bench/bench_memory --grains 1000000

start_silo() { # start_silo PORT -> pid in $last_pid
  $B/silo run --database "$url" --listen "127.0.0.1:$1" --cluster bench --grains $B/bench/bench_grains.so \
    --log-level warn >>"$work/silo-$1.log" 2>&1 &
  last_pid=$!; pids+=("$last_pid")
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && break; sleep 0.05; done
}
pa=$(free_port); start_silo "$pa"; A=$last_pid
pb=$(free_port); start_silo "$pb"
sleep 1.5 # both active in each other's view
C="$B/bench/bench_client --cluster bench"

# Activation: cold grains (no row yet), state read from PostgreSQL.
$C --silo 127.0.0.1:$pa --method get --prefix act- --keys 20000 --max-calls 20000 --window 256 --seconds 30 --label "activation (cold, via A)"
# Reads of active grains: warm 1000 grains on A, then read them.
$C --silo 127.0.0.1:$pa --method get --prefix r- --keys 1000 --max-calls 1000 --window 64 --label warm >/dev/null
$C --silo 127.0.0.1:$pa --method get --prefix r- --keys 1000 --window 64 --seconds "$secs" --label "get, grain on A, via A"
# Cross-silo: the same grains entered through B are forwarded to A.
$C --silo 127.0.0.1:$pb --method get --prefix r- --keys 1000 --window 64 --seconds "$secs" --label "get, grain on A, via B"
$B/bench/bench_echo --seconds "$secs" --window 64 --size 48

# The sweep: durable writes, live reads and cross-silo calls at 1 .. 4096 in
# flight, each beside pgbench, Redis and Erlang measured here and now.
. bench/sweep.sh

# Drain: activate 100k grains on A, then SIGTERM it and time the exit.
$C --silo 127.0.0.1:$pa --method get --prefix d- --keys 100000 --max-calls 100000 --window 512 --seconds 120 --label "activate 100k grains on A"
rss=$(awk '/VmRSS/ {print $2}' /proc/$A/status)
echo "silo A RSS with ~121k active grains: $((rss / 1024)) MiB"
t0=$(date +%s%N); kill -TERM "$A"; wait "$A"; t1=$(date +%s%N)
echo "drain of ~121k active grains on SIGTERM: $(( (t1 - t0) / 1000000 )) ms (exit status 0)"
