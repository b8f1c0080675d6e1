#!/usr/bin/env bash
# Memory bounds (docs/operations.md, "Memory bounds") under a load that
# creates grains without end: one silo with --memory-limit LIMIT (64MiB) on a
# throwaway PostgreSQL, one bench_client sending GRAINS (1,000,000) `incr`
# calls, each to a new Counter grain, 64 in flight; a refused call
# (GR_EOVERLOAD at the bound) is sent again 5 ms later by the client, its
# latency counted from the first attempt. Prints the silo's peak resident
# memory (VmHWM) against the limit, the calls refused and retried, the
# activations evicted, and the check that nothing acknowledged was lost:
# every acknowledged incr is a stored row with value 1 (one row per grain,
# read back from PostgreSQL). Baseline in the same run: the same load on a
# silo without a limit, for its peak memory. Loopback only, bounded.
#   bench/bounds.sh                 (GRAINS=1000000 LIMIT=64MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
grains=${GRAINS:-1000000}
limit=${LIMIT:-64MiB}
. bench/lib.sh
bench_setup bounds

metric() { # metric HTTP_PORT NAME
  curl -s --max-time 2 "http://127.0.0.1:$1/metrics" |
    awk -v n="$2" '$1 == n || index($1, n "{") == 1 { v += $2 } END { printf "%d\n", v }'
}
echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(uname -sr); $grains new grains, 64 in flight"

run() { # run CLUSTER LABEL [FLAGS...]
  local cluster=$1 label=$2
  shift 2
  local port http pid
  port=$(free_port)
  http=$(free_port)
  $B/silo run --database "$url" --listen "127.0.0.1:$port" --http "127.0.0.1:$http" --no-dashboard \
    --cluster "$cluster" --grains $B/examples/counter.so --log-level warn "$@" >>"$work/silo-$cluster.log" 2>&1 &
  pid=$!
  pids+=($pid)
  for _ in $(seq 1 200); do [ "$(metric "$http" granary_membership_active)" = 1 ] && break; sleep 0.05; done
  local out
  out=$($B/bench/bench_client --cluster "$cluster" --silo "127.0.0.1:$port" --method incr --prefix "b-" \
    --keys "$grains" --max-calls "$grains" --window 64 --seconds 600 --retry-ms 60000 --label "$label")
  echo "$out"
  local hwm
  hwm=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")
  local ok rows bad
  ok=$(echo "$out" | sed -n 's/.* ok \([0-9]*\) .*/\1/p')
  echo "[$label] peak resident memory (VmHWM): $((hwm / 1024)) MiB; refused (GR_EOVERLOAD, retried):" \
    "$(metric "$http" granary_activations_refused_total); evicted: $(metric "$http" granary_activations_evicted_total);" \
    "active at the end: $(metric "$http" granary_activations)"
  rows=$("$pgbin/psql" -Atq "$url" -c "SELECT count(*) FROM granary_grain_state WHERE service = '$cluster' AND grain_class = 'Counter'")
  bad=$("$pgbin/psql" -Atq "$url" -c "SELECT count(*) FROM granary_grain_state WHERE service = '$cluster' AND grain_class = 'Counter' AND state <> (SELECT state FROM granary_grain_state WHERE service = '$cluster' AND grain_class = 'Counter' AND grain_key = 'b-0'::bytea)")
  local v0
  v0=$("$pgbin/psql" -Atq "$url" -c "SELECT encode(state, 'escape') FROM granary_grain_state WHERE service = '$cluster' AND grain_class = 'Counter' AND grain_key = 'b-0'::bytea" | head -1)
  echo "[$label] acknowledged: $ok; stored rows: $rows; b-0's stored value: '$v0'; rows whose value differs from it: $bad"
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
}

run bounded "--memory-limit $limit" --memory-limit "$limit"
run unbounded "no limit (baseline)" --memory-limit 0
