#!/usr/bin/env bash
# The cost of TLS, in one run on one PostgreSQL: two silos without TLS and
# two with mutual TLS on every link (clients and silo-to-silo), measured in
# alternating rounds (plain, TLS, plain, TLS ...) so drift hits both alike:
# get of live grains through the silo that forwards every call (the
# cross-silo path: client -> silo -> silo), and persisted incr at 32 and
# 1024 in flight. Certificates are made for the run (ECDSA P-256, TLS 1.3).
#   bench/tls.sh [ROUNDS] [SECONDS]    (default 3 rounds, 3 s per bench)
# Loopback only; bounded in time; everything stops on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-3}
. bench/lib.sh
bench_setup tls
bash tests/support/make_certs.sh "$work/certs" >/dev/null
C="$work/certs"
echo "# $(date -u +%Y-%m-%d) on $(nproc) cores, $(uname -sr), $(openssl version | cut -d' ' -f1-2): $(git rev-parse --short HEAD)$( [ -n "$(git status --porcelain)" ] && echo '+changes'), ${secs}s per bench"

wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

run_one() { # run_one plain|tls ROUND
  local mode=$1 round=$2 cluster="tls-$1-$2" pa pb a b
  local silo_tls=() client_tls=()
  if [ "$mode" = tls ]; then
    silo_tls=(--tls-cert "$C/silo.crt" --tls-key "$C/silo.key" --tls-ca "$C/ca.crt" --tls-client-auth
              --tls-server-name granary-silo)
    client_tls=(--tls-ca "$C/ca.crt" --tls-cert "$C/client.crt" --tls-key "$C/client.key")
  fi
  pa=$(free_port); pb=$(free_port)
  for p in "$pa" "$pb"; do
    $B/silo run --database "$url" --listen "127.0.0.1:$p" --cluster "$cluster" --grains $B/examples/counter.so \
      --log-level warn "${silo_tls[@]}" >>"$work/silo-$mode.log" 2>&1 &
    pids+=("$!")
    [ "$p" = "$pa" ] && a=$! || b=$!
    wait_port "$p"
  done
  sleep 1.5 # both active in each other's view
  local BC="$B/bench/bench_client --cluster $cluster ${client_tls[*]}"
  # Grains placed on A (prefer-local: entered through A), then called through B.
  $BC --silo 127.0.0.1:$pa --method get --prefix r- --keys 1000 --max-calls 1000 --window 64 --label warm >/dev/null
  $BC --silo 127.0.0.1:$pb --method get --prefix r- --keys 1000 --window 64 --seconds "$secs" \
    --label "$mode round $round: get, cross-silo (forwarded), 64 in flight"
  $BC --silo 127.0.0.1:$pa --method incr --prefix w- --keys 1000 --window 32 --seconds "$secs" \
    --label "$mode round $round: persisted incr, 32 in flight"
  $BC --silo 127.0.0.1:$pa --method incr --prefix x- --keys 10000 --window 1024 --seconds "$secs" \
    --label "$mode round $round: persisted incr, 1024 in flight"
  kill -9 "$a" "$b" 2>/dev/null || true
  wait "$a" "$b" 2>/dev/null || true
}

for r in $(seq 1 "$rounds"); do
  run_one plain "$r"
  run_one tls "$r"
done
