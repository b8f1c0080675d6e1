#!/usr/bin/env bash
# Deploys and autoscaling with live migration (docs/migration.md), on real
# silo processes and a throwaway PostgreSQL, loopback only, every wait bounded.
#   Rolling restart: three silos host GRAINS active grains under a steady
#      call load (`get` over all of them through all three silos); each silo
#      in turn gets SIGTERM and a new incarnation starts on its port. Prints
#      the state loads the roll caused (every silo's granary_storage_reads_total
#      minus granary_claims_refused_total just before it stops and at the end,
#      minus at the start; a refused claim reads no state and is counted apart:
#      a call that reached a silo before the directory knew where the grain
#      had gone), activations
#      taken over live, moves whose outcome was unknown (the silos' logs), the
#      p99 call latency during the roll (retries of retryable errors included)
#      against the same load before it, and the time per silo (SIGTERM to the
#      replacement active). Same run, same load: the roll with --no-migrate
#      (the baseline: every grain reloads from storage).
#   Scale 1 -> 3: one silo hosts GRAINS active grains under the same load
#      (through it); two silos start. Prints the time from their start until
#      each hosts at least 25 % of the active grains, the state loads on them
#      (goal: none), the p99 during the scale-up against before it, and the
#      spread 10 s after the start.
#   bench/roll.sh                        (GRAINS=100000; PHASES="roll scale")
set -euo pipefail
cd "$(dirname "$0")/.."
grains=${GRAINS:-100000}
. bench/lib.sh
bench_setup roll

metric() { # metric HTTP_PORT NAME: the value (a bare name sums its labelled series), or 0
  { curl -s --max-time 2 "http://127.0.0.1:$1/metrics" || true; } |
    awk -v n="$2" '$1 == n || index($1, n "{") == 1 { v += $2 } END { printf "%d\n", v }'
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
READS=granary_storage_reads_total
REFUSED=granary_claims_refused_total
MIG_IN='granary_migrations_total{direction="in",result="ok"}'

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
load() { # load CLUSTER PREFIX SECONDS LABEL [INDEX...]: the steady load, 64 calls in flight through
  # the silos given (default all three); a retryable failure (a silo draining or gone) is sent again
  # for up to 10 s, inside the latency. exec: run in the background, $! is the client itself
  # (SIGTERM ends it, figures printed).
  local cluster=$1 prefix=$2 seconds=$3 label=$4
  shift 4
  [ $# -gt 0 ] || set -- 0 1 2
  exec $B/bench/bench_client --cluster "$cluster" --silo "$(silo_list "$@")" --method get --prefix "$prefix" \
    --keys "$grains" --window 64 --seconds "$seconds" --retry-ms 10000 --label "$label"
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
  local i t0 times="" r0=0 rend=0 c0=0 cend=0 moved=0
  echo "[$mode] active before the roll: $(( $(metric "${https[0]}" granary_activations) + $(metric "${https[1]}" granary_activations) + $(metric "${https[2]}" granary_activations) ))"
  (load "$cluster" "r-" 8 "[$mode] before the roll") || true
  for i in 0 1 2; do
    r0=$((r0 + $(metric "${https[$i]}" $READS)))
    c0=$((c0 + $(metric "${https[$i]}" $REFUSED)))
  done
  (load "$cluster" "r-" 300 "[$mode] during the roll") > "$work/during-$cluster" &
  local lp=$! troll
  sleep 2
  troll=$(now_ms)
  for i in 0 1 2; do
    rend=$((rend + $(metric "${https[$i]}" $READS)))
    cend=$((cend + $(metric "${https[$i]}" $REFUSED)))
    moved=$((moved + $(metric "${https[$i]}" "$MIG_IN")))
    t0=$(now_ms)
    stop "$i"
    local drained=$(($(now_ms) - t0))
    start "$i" "$cluster" "$@"
    wait_members 3 0 1 2
    times+=" silo $i: drain ${drained} ms, replaced and active after $(($(now_ms) - t0)) ms;"
    sleep 1
  done
  troll=$(($(now_ms) - troll))
  kill -TERM "$lp"
  wait "$lp" || true
  cat "$work/during-$cluster"
  for i in 0 1 2; do
    rend=$((rend + $(metric "${https[$i]}" $READS)))
    cend=$((cend + $(metric "${https[$i]}" $REFUSED)))
    moved=$((moved + $(metric "${https[$i]}" "$MIG_IN")))
  done
  echo "[$mode] the roll took $troll ms; state loads it caused: $((rend - cend - r0 + c0)); claims refused" \
    "(the grain live elsewhere, no state read): $((cend - c0)); activations taken over live:" \
    "$moved; moves with an unknown outcome: $(cat "$work"/silo-"$cluster"-*.log | grep -c 'migration failed' || true)"
  echo "[$mode]$times"
  for i in 0 1 2; do stop "$i"; done
}

scale() { # scale CLUSTER [FLAGS...]: 1 -> 3 under load
  local cluster=$1 i
  shift
  local tag="[scale${1:+ $*}]"
  ports=(); https=(); spids=()
  for i in 0 1 2; do ports[$i]=$(free_port); https[$i]=$(free_port); done
  start 0 "$cluster" "$@"
  wait_members 1 0
  activate "$cluster" "s-" 0
  (load "$cluster" "s-" 8 "$tag before, 1 silo" 0) || true
  (load "$cluster" "s-" 300 "$tag during 1 -> 3" 0) > "$work/scale-$cluster" &
  local lp=$! t0 done1=0 done2=0 a0 a1 a2 total
  sleep 2
  t0=$(now_ms)
  start 1 "$cluster" "$@"
  start 2 "$cluster" "$@"
  while [ $(($(now_ms) - t0)) -lt 60000 ]; do
    a0=$(metric "${https[0]}" granary_activations)
    a1=$(metric "${https[1]}" granary_activations)
    a2=$(metric "${https[2]}" granary_activations)
    total=$((a0 + a1 + a2))
    [ "$done1" = 0 ] && [ $((a1 * 4)) -ge "$total" ] && [ "$total" -gt 0 ] && done1=$(($(now_ms) - t0))
    [ "$done2" = 0 ] && [ $((a2 * 4)) -ge "$total" ] && [ "$total" -gt 0 ] && done2=$(($(now_ms) - t0))
    [ "$done1" != 0 ] && [ "$done2" != 0 ] && [ $(($(now_ms) - t0)) -ge 10000 ] && break
    sleep 0.1
  done
  local spread="$(metric "${https[0]}" granary_activations) / $(metric "${https[1]}" granary_activations) / $(metric "${https[2]}" granary_activations)"
  local loads=0
  for i in 1 2; do
    loads=$((loads + $(metric "${https[$i]}" $READS) - $(metric "${https[$i]}" $REFUSED)))
  done
  local moves
  moves="out ok $(metric "${https[0]}" 'granary_migrations_total{direction="out",result="ok"}'), refused $(metric "${https[0]}" 'granary_migrations_total{direction="out",result="refused"}'), unknown $(metric "${https[0]}" 'granary_migrations_total{direction="out",result="failed"}'); rebalance moves $(metric "${https[0]}" granary_rebalance_moves_total); in on silo 1 / 2: $(metric "${https[1]}" "$MIG_IN") / $(metric "${https[2]}" "$MIG_IN")"
  kill -TERM "$lp"
  wait "$lp" || true
  cat "$work/scale-$cluster"
  echo "$tag silo 0's moves: $moves"
  [ -z "${KEEP_LOGS:-}" ] || cp "$work"/silo-"$cluster"-*.log "$KEEP_LOGS"/
  echo "$tag from the start of two new silos: silo 1 hosts >= 25 % after ${done1} ms, silo 2 after ${done2} ms" \
    "(0: never within 60 s); state loads on them: $loads; activations after 10 s: $spread"
  for i in 0 1 2; do stop "$i"; done
}

for phase in ${PHASES:-roll scale}; do
  case $phase in
  roll)
    roll roll-mig
    roll roll-nomig --no-migrate
    ;;
  scale)
    scale scale-up
    scale scale-fast --rebalance-rate 10000
    ;;
  *) echo "unknown phase $phase" >&2; exit 2 ;;
  esac
done
