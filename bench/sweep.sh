# bench/sweep.sh - sourced by bench/run.sh once its two silos are up (needs B,
# work, url, pa, pb, secs, pids; bench/lib.sh and free_port). Sweeps calls in
# flight for three kinds of work and measures each alternative in the same
# run, at its best configuration (bench/baselines.sh):
#
#   durable writes   Granary `incr` (persist-before-reply), 10,000 grains, W in
#                    flight on one connection | pgbench -M prepared UPDATE ...
#                    RETURNING, 1/32/64 clients | Redis INCR, appendfsync always
#   live reads       Granary `get` of 10,000 live grains via their silo |
#                    pgbench -M prepared SELECT | Redis GET, no persistence
#   cross-silo calls grain -> grain, BenchDriver on B calling 10,000 Counter
#                    grains on A, W in flight | Erlang distribution: N callers
#                    on one node, gen_server:call to a second node
#
# Uses run.sh's C (bench_client). Writes $sweep_out/bench-sweep.tsv (work system level rate p50_us p99_us) and
# the plot $sweep_out/bench-sweep.svg (bench/plot.py); prints a table.
# BENCH_LEVELS (default "1 8 32 128 512 1024 4096") chooses the levels.

. bench/baselines.sh
levels=${BENCH_LEVELS:-1 8 32 128 512 1024 4096}
sweep_out=${BENCH_OUT:-docs}
tsv="$work/bench-sweep.tsv"
printf 'work\tsystem\tlevel\trate\tp50_us\tp99_us\n' >"$tsv"

row() { # row WORK SYSTEM LEVEL "RATE P50 P99"
  # shellcheck disable=SC2086
  set -- "$1" "$2" "$3" $4
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-0}" "${5:-0}" "${6:-0}" >>"$tsv"
  printf '  %-14s %-34s %5s in flight  %9s/s  p50 %6s us  p99 %7s us\n' "$1" "$2" "$3" "${4:-0}" "${5:-0}" "${6:-0}"
}

# bench_client's line -> "RATE P50 P99"
client_fig() { sed -n 's/.* \([0-9]*\) calls\/s .* p50 \([0-9]*\) us  p99 \([0-9]*\) us.*/\1 \2 \3/p'; }
checkpoint() { "$pgbin/psql" -q "$url" -c CHECKPOINT; }

G="$B/granary call --cluster bench --timeout 120000 --silo 127.0.0.1:$pb"
echo "== sweep: calls in flight ($levels), ${secs}s each, alternatives in the same run =="
# Activate the grains first, so the sweep measures live grains (no cold
# start), with a stored row each (no first-write INSERTs in the figures), and
# let the planner know the tables' sizes, as pgbench's table is analysed
# (autovacuum would, within a minute).
$C --silo 127.0.0.1:$pa --method incr --prefix sw- --keys 10000 --max-calls 10000 --window 256 --seconds 60 --label warm >/dev/null
$C --silo 127.0.0.1:$pa --method get --prefix sr- --keys 10000 --max-calls 10000 --window 256 --seconds 60 --label warm >/dev/null
"$pgbin/psql" -q "$url" -c "VACUUM ANALYZE granary_grain_state" -c "VACUUM ANALYZE granary_activation"
pgbench_setup

for w in $levels; do
  checkpoint
  row durable granary "$w" "$($C --silo 127.0.0.1:$pa --method incr --prefix sw- --keys 10000 --window "$w" \
    --seconds "$secs" --label incr 2>/dev/null | client_fig)"
done
for c in 1 32 64; do
  checkpoint
  row durable "pgbench-update-prepared" "$c" "$(pgbench_run "$work/update.sql" "$c" "$secs")"
done
redis_start always
# 256 too: the goal at 1024 in flight is twice Redis at 256 clients.
for w in $(printf '%s\n' $levels 256 | sort -nu); do
  row durable "redis-incr-fsync-always" "$w" "$(redis_run incr "$w" "$secs")"
done
redis_stop

for w in $levels; do
  row read granary "$w" "$($C --silo 127.0.0.1:$pa --method get --prefix sr- --keys 10000 --window "$w" \
    --seconds "$secs" --label get 2>/dev/null | client_fig)"
done
for c in 1 32 64; do
  row read "pgbench-select-prepared" "$c" "$(pgbench_run "$work/select.sql" "$c" "$secs")"
done
redis_start none
for w in $levels; do row read "redis-get-no-persistence" "$w" "$(redis_run get "$w" "$secs")"; done
redis_stop

n=0
for w in $levels; do
  n=$((n + 1))
  row cross-silo granary "$w" "$($G "BenchDriver/sweep$n" run "sr- 10000 100000000 $w 0 $secs" | rate_fig)"
done
erl_start
for w in $levels; do row cross-silo "erlang-distribution" "$w" "$(erl_run "$w" "$secs")"; done
erl_stop

# Latency at half the peak of 32 callers, open loop (the goal: p99 under 1 ms).
peak=$(awk -F'\t' '$1=="cross-silo" && $2=="granary" && $3==32 {print $4}' "$tsv")
if [ -n "$peak" ] && [ "$peak" -gt 1 ]; then
  half=$((peak / 2))
  echo "  cross-silo     granary, open loop at 50% of the 32-caller peak ($half calls/s): $($G BenchDriver/half run \
"sr- 10000 100000000 4096 $half $secs")"
fi

mkdir -p "$sweep_out"
cp "$tsv" "$sweep_out/bench-sweep.tsv"
python3 bench/plot.py "$tsv" "$sweep_out/bench-sweep.svg" "$(date -u +%Y-%m-%d), $(nproc) cores, ${secs}s per point" &&
  echo "plot: $sweep_out/bench-sweep.svg (data: $sweep_out/bench-sweep.tsv)"
