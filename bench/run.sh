#!/usr/bin/env bash
# Run the benchmarks and print BENCHMARKS.md-ready lines. Bounded in time
# (about a minute), loopback only. Starts its own PostgreSQL (default
# durability: fsync on, synchronous_commit on) and stops it on exit.
#   bench/run.sh [SECONDS_PER_BENCH]     (default 3; CI uses 1 as a smoke test)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
. bench/lib.sh
bench_setup bench
pgbin=$(pg_config --bindir)

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
# Cross-silo, grain to grain: BenchDriver/d1 (on B) calls the 1000 Counter
# grains that live on A. Flat out first (W=256), then open loop at half that
# rate for the latency a caller sees at 50% load.
G="$B/granary call --cluster bench --timeout 120000 --silo 127.0.0.1:$pb"
peak=$($G BenchDriver/d1 run "r- 1000 100000000 256 0 $secs")
echo "cross-silo grain->grain, W=256 (B -> A):  $peak"
$B/bench/bench_echo --seconds "$secs" --window 256 --size 48
rate=$(echo "$peak" | sed -n 's/.* rate=\([0-9]*\).*/\1/p')
half=$(( ${rate:-2} / 2 ))
echo "cross-silo grain->grain at 50% of peak ($half calls/s, open loop):  $($G BenchDriver/d2 run "r- 1000 100000000 4096 $half $secs")"
quarter=$(( ${rate:-4} / 4 ))
echo "cross-silo grain->grain at 25% of peak ($quarter calls/s, open loop):  $($G BenchDriver/d3 run "r- 1000 100000000 4096 $quarter $secs")"
echo "cross-silo grain->grain, W=16 (closed loop):  $($G BenchDriver/d4 run "r- 1000 100000000 16 0 $secs")"
# Persisted writes: incr commits before each reply.
$C --silo 127.0.0.1:$pa --method incr --prefix w- --keys 1000 --window 32 --seconds "$secs" --label "incr (persist-before-reply)"

# Baselines in PostgreSQL itself, same database, 32 clients.
"$pgbin/psql" -q "$url" -c "CREATE TABLE IF NOT EXISTS counters (k int PRIMARY KEY, v bigint NOT NULL)" \
  -c "INSERT INTO counters SELECT g, 0 FROM generate_series(0, 999) g ON CONFLICT DO NOTHING"
echo '\set k random(0, 999)
UPDATE counters SET v = v + 1 WHERE k = :k;' > "$work/update.sql"
echo '\set k random(0, 999)
SELECT v FROM counters WHERE k = :k;' > "$work/select.sql"
for s in update select; do
  tps=$("$pgbin/pgbench" -n -c 32 -j 2 -T "$secs" -f "$work/$s.sql" "$url" 2>/dev/null | awk '/^tps/ {print $3; exit}')
  lat=$("$pgbin/pgbench" -n -c 32 -j 2 -T 1 -f "$work/$s.sql" "$url" 2>/dev/null | awk '/latency average/ {print $4; exit}')
  printf "%-28s %10.0f tps      (pgbench, 32 clients, avg latency %s ms)\n" "baseline: pgbench $s" "$tps" "$lat"
done

# Drain: activate 100k grains on A, then SIGTERM it and time the exit.
$C --silo 127.0.0.1:$pa --method get --prefix d- --keys 100000 --max-calls 100000 --window 512 --seconds 120 --label "activate 100k grains on A"
rss=$(awk '/VmRSS/ {print $2}' /proc/$A/status)
echo "silo A RSS with ~121k active grains: $((rss / 1024)) MiB"
t0=$(date +%s%N); kill -TERM "$A"; wait "$A"; t1=$(date +%s%N)
echo "drain of ~121k active grains on SIGTERM: $(( (t1 - t0) / 1000000 )) ms (exit status 0)"
