#!/usr/bin/env bash
# Deploys and autoscaling with live migration (docs/migration.md), on real
# silo processes and a throwaway PostgreSQL, loopback only, every wait bounded.
#   1. Rolling restart: three silos host GRAINS active grains under a steady
#      call load (`get` over all of them through all three silos); each silo
#      in turn gets SIGTERM and a new incarnation starts on its port. Prints
#      the storage reads the roll caused (every silo's granary_storage_reads_total
#      just before it stops and at the end, minus at the start), migrations
#      that failed or were refused, the p99 call latency during the roll
#      against the same load before it, and the time per silo (SIGTERM to the
#      replacement active). Same run, same load: the roll with --no-migrate
#      (the baseline: every grain reloads from storage).
#   2. Scale 1 -> 3: one silo hosts GRAINS grains under the same load; two
#      silos join; the time until each new one hosts at least 25 % of them,
#      at the default --rebalance-rate and at SCALE_RATE.
#   bench/roll.sh                        (GRAINS=100000, SCALE_RATE=10000)
set -euo pipefail
cd "$(dirname "$0")/.."
grains=${GRAINS:-100000}
scale_rate=${SCALE_RATE:-10000}
. bench/lib.sh
bench_setup roll

metric() { # metric HTTP_PORT NAME (labels included): the value, or 0
  curl -s --max-time 2 "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { v = $2 } END { print v + 0 }'
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
READS=granary_storage_reads_total
FAILED='granary_migrations_total{direction="out",result="failed"}'
REFUSED='granary_migrations_total{direction="out",result="refused"}'
MIG_OUT='granary_migrations_total{direction="out",result="ok"}'

ports=(); https=(); spids=()
start() { # start INDEX CLUSTER [FLAGS...]
  local i=$1 cluster=$2
  shift 2
  [ -n "${ports[$i]:-}" ] || ports[$i]=$(free_port)
  [ -n "${https[$i]:-}" ] || https[$i]=$(free_port)
  $B/silo run --database "$url" --listen "127.0.0.1:${ports[$i]}" --http "127.0.0.1:${https[$i]}" --no-dashboard \
    --cluster "$cluster" --grains $B/examples/counter.so --log-level warn "$@" >>"$work/silo-$cluster-$i.log" 2>&1 &
  spids[$i]=$!
  pids+=($!)
}
wait_members() { # wait_members N INDEX...: each of them sees N active members (60 s at most)
  local n=$1 i t0
  shift
  t0=$(now_ms)
  for i in "$@"; do
    until [ "$(metric "${https[$i]}" granary_membership_active)" = "$n" ]; do
      [ $(($(now_ms) - t0)) -lt 60000 ] || { echo "silo $i never saw $n members" >&2; exit 1; }
      sleep 0.05
    done
  done
}
stop() { # stop INDEX: SIGTERM, wait for the exit (60 s at most)
  kill -TERM "${spids[$1]}"
  for _ in $(seq 1 600); do kill -0 "${spids[$1]}" 2>/dev/null || break; sleep 0.1; done
  wait "${spids[$1]}" 2>/dev/null || true
}
silo_list() { local s="" i; for i in "$@"; do s+="${s:+,}127.0.0.1:${ports[$i]}"; done; echo "$s"; }
activate() { # activate CLUSTER PREFIX INDEX...: every grain activated through the silos given
  local cluster=$1 prefix=$2
  shift 2
  $B/bench/bench_client --cluster "$cluster" --silo "$(silo_list "$@")" --method get --prefix "$prefix" \
    --keys "$grains" --max-calls "$grains" --window 512 --seconds 300 --label "activate $grains" >/dev/null
}
load() { # load CLUSTER PREFIX SECONDS LABEL: the steady load, 64 calls in flight through all three ports
  $B/bench/bench_client --cluster "$1" --silo "$(silo_list 0 1 2)" --method get --prefix "$2" --keys "$grains" \
    --window 64 --seconds "$3" --label "$4" || true
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(uname -sr); $grains grains"

roll() { # roll CLUSTER [FLAGS...]
  local cluster=$1 mode
  shift
  mode=${1:-migrating}
  ports=(); https=(); spids=()
  for i in 0 1 2; do start "$i" "$cluster" "$@"; done
  wait_members 3 0 1 2
  activate "$cluster" "r-" 0 1 2
  echo "[$mode] active before the roll: $(( $(metric "${https[0]}" granary_activations) + $(metric "${https[1]}" granary_activations) + $(metric "${https[2]}" granary_activations) ))"
  load "$cluster" "r-" 8 "[$mode] before the roll"
  local r0=0 rend=0 failed=0 refused=0 moved=0 i t0 times=""
  for i in 0 1 2; do r0=$((r0 + $(metric "${https[$i]}" $READS))); done
  load "$cluster" "r-" 40 "[$mode] during the roll" > "$work/during-$cluster" &
  local lp=$!
  sleep 3
  for i in 0 1 2; do
    rend=$((rend + $(metric "${https[$i]}" $READS)))
    failed=$((failed + $(metric "${https[$i]}" "$FAILED")))
    refused=$((refused + $(metric "${https[$i]}" "$REFUSED")))
    moved=$((moved + $(metric "${https[$i]}" "$MIG_OUT")))
    t0=$(now_ms)
    stop "$i"
    local drained=$(($(now_ms) - t0))
    start "$i" "$cluster" "$@"
    wait_members 3 0 1 2
    times+=" silo $i: drain ${drained} ms, replaced and active after $(($(now_ms) - t0)) ms;"
    sleep 2
  done
  wait "$lp" || true
  cat "$work/during-$cluster"
  for i in 0 1 2; do
    rend=$((rend + $(metric "${https[$i]}" $READS)))
    failed=$((failed + $(metric "${https[$i]}" "$FAILED")))
    refused=$((refused + $(metric "${https[$i]}" "$REFUSED")))
    moved=$((moved + $(metric "${https[$i]}" "$MIG_OUT")))
  done
  echo "[$mode] storage reads caused by the roll: $((rend - r0)); activations handed over live: $moved," \
    "refused: $refused, failed: $failed"
  echo "[$mode]$times"
  for i in 0 1 2; do stop "$i"; done
}

roll roll-mig
roll roll-nomig --no-migrate

scale() { # scale CLUSTER RATE
  local cluster=$1 rate=$2 t0 a1 a2 quarter=$((grains / 4))
  ports=(); https=(); spids=()
  start 0 "$cluster" --rebalance-rate "$rate"
  wait_members 1 0
  activate "$cluster" "s-" 0
  load "$cluster" "s-" 120 "[scale, rate $rate] under the scale-up" > "$work/scale-$cluster" &
  local lp=$!
  sleep 2
  t0=$(now_ms)
  start 1 "$cluster" --rebalance-rate "$rate"
  start 2 "$cluster" --rebalance-rate "$rate"
  local reached=""
  while [ $(($(now_ms) - t0)) -lt 115000 ]; do
    a1=$(metric "${https[1]}" granary_activations)
    a2=$(metric "${https[2]}" granary_activations)
    if [ "$a1" -ge "$quarter" ] && [ "$a2" -ge "$quarter" ]; then reached=$(($(now_ms) - t0)); break; fi
    sleep 0.1
  done
  echo "[scale, rate $rate] 1 -> 3 silos: each new silo hosts >= 25 % of $grains grains after ${reached:-(not within 115 s)} ms" \
    "($(metric "${https[0]}" granary_activations) / $(metric "${https[1]}" granary_activations) / $(metric "${https[2]}" granary_activations));" \
    "storage reads on the new silos: $(( $(metric "${https[1]}" $READS) + $(metric "${https[2]}" $READS) ))"
  kill -INT "$lp" 2>/dev/null || true
  wait "$lp" 2>/dev/null || true
  for i in 0 1 2; do stop "$i"; done
}

scale scale-default 1000
scale scale-fast "$scale_rate"
