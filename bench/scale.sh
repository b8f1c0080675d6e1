#!/usr/bin/env bash
# Scale past this machine, by simulation: N real silo processes (the release
# binary, PostgreSQL storage and membership, default timing) on one machine
# and one PostgreSQL, for each N given. Measures, per N:
#   - the time until N silos that start together all see each other,
#   - PostgreSQL transactions per second of the idle cluster (heartbeats,
#     reminder polls: what membership costs the database),
#   - after a SIGKILL of one silo: when the first, the median and the last
#     survivor saw the view without it (the lease, then propagation),
#   - after a new silo joins: when the first, median and last saw it,
#   - with GRAINS grains active across the cluster: after a SIGKILL of one
#     silo, the time until the directory is whole again (the entries the dead
#     silo owned re-registered by the silos hosting those grains).
# Loopback only, every wait bounded.
#   bench/scale.sh [N ...]          (default: 32 64)
#   SCALE_GRAINS=1000000 bench/scale.sh 32
#   SCALE_LEASE_MS=5000 (--lease-ms of every silo; default 1200), SCALE_LOG=warn
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(32 64)
grains=${SCALE_GRAINS:-0}
lease=${SCALE_LEASE_MS:-1200}
# 64 silos hold ~6 connections each (pool, membership, reminders).
export GR_PG_OPTS="-c max_connections=800 -c shared_buffers=256MB"
. bench/lib.sh
bench_setup scale
probe="python3 bench/scale_probe.py"
xacts() { "$pgbin/psql" -Atq "$url" -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"; }

echo "# $(date -u +%Y-%m-%d) on $(nproc) cores, $(uname -sr); silos: ${sizes[*]}; grains for the handoff: $grains"
for n in "${sizes[@]}"; do
  cluster="scale$n"
  ports=(); https=(); spids=(); cpids=()
  start() { # start INDEX
    local p h
    p=$(free_port); h=$(free_port)
    $B/silo run --database "$url" --listen "127.0.0.1:$p" --http "127.0.0.1:$h" --no-dashboard --cluster "$cluster" \
      --grains $B/examples/counter.so --pg-pool 2 --lease-ms "$lease" --log-level "${SCALE_LOG:-error}" >>"$work/silo-$cluster-$1.log" 2>&1 &
    spids[$1]=$!; pids+=($!); ports[$1]=$p; https[$1]=$h
  }
  t0=$(date +%s%N)
  for i in $(seq 0 $((n - 1))); do start "$i"; done
  if ! formed=$($probe wait-size "$n" 120 "${https[@]}"); then echo "N=$n: the cluster did not form in 120 s"; exit 1; fi
  echo "N=$n: all $n silos started together saw each other after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  sleep 2
  x0=$(xacts); s0=$(date +%s%N); sleep 10; x1=$(xacts); s1=$(date +%s%N)
  echo "N=$n: idle cluster: $(( (x1 - x0) * 1000000000 / (s1 - s0) )) PostgreSQL transactions/s (heartbeats every 200 ms, reminder polls)"

  if [ "$grains" -gt 0 ]; then
    per=$(( grains / n ))
    t0=$(date +%s%N)
    # Two clients at a time (two cores), each activating its share through one silo.
    for i in $(seq 0 $((n - 1))); do
      $B/bench/bench_client --cluster "$cluster" --silo "127.0.0.1:${ports[$i]}" --method get --prefix "g$i-" \
        --keys "$per" --max-calls "$per" --window 512 --seconds 300 --label "activate $per via silo $i" >/dev/null &
      cpids+=($!)
      if [ ${#cpids[@]} -eq 2 ]; then wait "${cpids[@]}"; cpids=(); fi
    done
    [ ${#cpids[@]} -eq 0 ] || wait "${cpids[@]}"
    echo "N=$n: $($probe sum granary_activations "${https[@]}") grains active, $(( ($(date +%s%N) - t0) / 1000000 )) ms to activate"
    last=$((n - 1))
    { kill -9 "${spids[$last]}"; wait "${spids[$last]}"; } 2>/dev/null || true
    t0=$(date +%s%N)
    live=("${https[@]:0:$last}")
    echo "N=$n: SIGKILL of a silo with ~$per grains: directory whole again (entries = activations) after" \
      "$($probe wait-directory 180 "${live[@]}" | awk '{printf "%s ms (%s entries)", $1, $2}')" \
      "(its grains are reactivated on their next call)"
    $probe wait-size $((n - 1)) 60 "${live[@]}" >/dev/null
    start "$last"
    $probe wait-size "$n" 60 "${https[@]}" >/dev/null
  fi

  victim=$((n - 1))
  { kill -9 "${spids[$victim]}"; wait "${spids[$victim]}"; } 2>/dev/null || true
  live=("${https[@]:0:$victim}")
  read -r f m l < <($probe wait-size $((n - 1)) 60 "${live[@]}")
  echo "N=$n: SIGKILL of one silo: seen by the first survivor after $f ms, the median $m ms, the last $l ms (lease $lease ms)"
  start "$victim"
  read -r f m l < <($probe wait-size "$n" 60 "${https[@]}")
  echo "N=$n: a silo joining: seen (active) by the first silo after $f ms, the median $m ms, the last $l ms"
  for p in "${spids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${spids[@]}"; do
    for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
done
