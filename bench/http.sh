#!/usr/bin/env bash
# HTTP grain calls against the binary protocol at the same concurrency, in
# one run: wrk (64 keep-alive connections, one request in flight each) posts
# `get` to 1,000 live grains of one silo, then bench_client sends the same
# calls with 64 in flight over the binary protocol; alternating rounds.
#   bench/http.sh [ROUNDS] [SECONDS]    (default 3 rounds, 3 s each)
# Loopback only; bounded in time; everything stops on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-3}
. bench/lib.sh
bench_setup http
command -v wrk >/dev/null || { echo "wrk is missing (scripts/deps.sh installs it)" >&2; exit 1; }
echo "# $(date -u +%Y-%m-%d) on $(nproc) cores, $(uname -sr), $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2): $(git rev-parse --short HEAD)$( [ -n "$(git status --porcelain)" ] && echo '+changes'), ${secs}s per bench"
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
p=$(free_port); hp=$(free_port)
$B/silo run --database "$url" --listen "127.0.0.1:$p" --http "127.0.0.1:$hp" --cluster http \
  --grains $B/examples/counter.so --log-level warn >>"$work/silo.log" 2>&1 &
pids+=("$!")
wait_port "$p"; wait_port "$hp"
sleep 1
BC="$B/bench/bench_client --cluster http --silo 127.0.0.1:$p --method get --prefix k --keys 1000"
$BC --max-calls 1000 --window 64 --label warm >/dev/null
cat >"$work/post.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/v1/grains/Counter/k" .. (n % 1000) .. "/get", nil, "")
end
LUA
for r in $(seq 1 "$rounds"); do
  out=$(wrk -t2 -c64 -d"${secs}s" -s "$work/post.lua" "http://127.0.0.1:$hp" 2>&1)
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  lat=$(awk '/Latency/ {print $2; exit}' <<<"$out")
  echo "round $r: HTTP POST get, 64 keep-alive connections (wrk)   ${rps} calls/s  mean latency ${lat}  non-2xx ${non2xx:-0}"
  $BC --window 64 --seconds "$secs" --label "round $r: binary protocol get, 64 in flight (bench_client)"
done
