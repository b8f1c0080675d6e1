#!/usr/bin/env bash
# A/B of the cluster call path against an earlier commit, in one run on one
# PostgreSQL: cold activations/s, get of live grains (local and forwarded),
# persisted incr at 32 and 1024 in flight, and failover time after SIGKILL.
# The two builds alternate round by round (A B A B ...), so drift on the
# machine hits both alike; each figure is printed per round.
#   bench/ab.sh REV [ROUNDS] [SECONDS]    (default 2 rounds, 3 s per bench)
# REV is built in a temporary git worktree (Release), the working tree in
# build-bench. Loopback only; bounded in time; everything stops on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: bench/ab.sh REV [ROUNDS] [SECONDS]}
rounds=${2:-2}
secs=${3:-3}
. bench/lib.sh
bench_setup ab
old_src="$work/old-src"
git worktree add -q --detach "$old_src" "$rev"
cleanup_ab() { git worktree remove --force "$old_src" >/dev/null 2>&1 || true; bench_cleanup; }
trap cleanup_ab EXIT
cmake -S "$old_src" -B "$work/old-build" -DCMAKE_BUILD_TYPE=Release -DGR_TESTS=OFF >/dev/null
cmake --build "$work/old-build" -j"$(nproc)" >/dev/null
# The newer schema serves both (an older silo ignores tables it does not know).
$B/silo migrate --database "$url" >/dev/null

echo "# $(date -u +%Y-%m-%d) on $(nproc) cores, $(uname -sr): A = $(git rev-parse --short "$rev"), B = $(git rev-parse --short HEAD)$( [ -n "$(git status --porcelain)" ] && echo '+changes'), ${secs}s per bench"

wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

run_one() { # run_one LABEL BUILD_DIR ROUND
  local label=$1 bd=$2 round=$3 cluster="ab-$1-$3"
  local pa pb a b
  pa=$(free_port); pb=$(free_port)
  for p in "$pa" "$pb"; do
    $bd/silo run --database "$url" --listen "127.0.0.1:$p" --cluster "$cluster" --grains $B/examples/counter.so \
      --log-level warn >>"$work/silo-$label.log" 2>&1 &
    pids+=("$!")
    [ "$p" = "$pa" ] && a=$! || b=$!
    wait_port "$p"
  done
  sleep 1.5 # both active in each other's view
  local C="$B/bench/bench_client --cluster $cluster"
  $C --silo 127.0.0.1:$pa --method get --prefix act- --keys 20000 --max-calls 20000 --window 256 --seconds 30 \
    --label "$label round $round: activation (cold, 256 in flight)"
  $C --silo 127.0.0.1:$pa --method get --prefix r- --keys 1000 --max-calls 1000 --window 64 --label warm >/dev/null
  $C --silo 127.0.0.1:$pa --method get --prefix r- --keys 1000 --window 64 --seconds "$secs" \
    --label "$label round $round: get, live grain, local"
  $C --silo 127.0.0.1:$pb --method get --prefix r- --keys 1000 --window 64 --seconds "$secs" \
    --label "$label round $round: get, live grain, forwarded"
  $C --silo 127.0.0.1:$pa --method incr --prefix w- --keys 1000 --window 32 --seconds "$secs" \
    --label "$label round $round: incr, 32 in flight"
  $C --silo 127.0.0.1:$pa --method incr --prefix x- --keys 10000 --window 1024 --seconds "$secs" \
    --label "$label round $round: incr, 1024 in flight"
  # Failover: a grain on A, SIGKILL A, then how long until B serves it.
  local G="$B/granary call --cluster $cluster --timeout 2000"
  $G --silo 127.0.0.1:$pa Counter/fo incr >/dev/null
  local t0 t1 ok=0
  t0=$(date +%s%N)
  kill -9 "$a"
  for _ in $(seq 1 200); do
    if $G --silo 127.0.0.1:$pb Counter/fo get >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.02
  done
  t1=$(date +%s%N)
  if [ "$ok" = 1 ]; then
    echo "$label round $round: failover after SIGKILL: $(( (t1 - t0) / 1000000 )) ms until the other silo served the grain"
  else
    echo "$label round $round: failover after SIGKILL: not served within 200 tries"
  fi
  kill -9 "$b" 2>/dev/null || true
  wait "$a" "$b" 2>/dev/null || true
}

for r in $(seq 1 "$rounds"); do
  run_one A "$work/old-build" "$r"
  run_one B "$B" "$r"
done
