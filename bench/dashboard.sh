#!/usr/bin/env bash
# What the dashboard costs: three silos on a throwaway PostgreSQL, a get
# load through one of them, measured without anyone watching and then with
# PAGES dashboards open (each polls /api/cluster once a second, as the page
# does: the first poll takes all five minutes, later ones the last seconds).
# Prints calls/s both ways, the poll latency and the JSON sizes. A control
# run polls /healthz the same way, so the pollers' own processes (curl,
# every second, on the same cores) are not charged to the dashboard.
# Bounded (about 4 x SECONDS), loopback only.
#   bench/dashboard.sh [SECONDS] [PAGES]     (defaults 10 and 4)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
pages=${2:-4}
. bench/lib.sh
bench_setup dash
declare -a port hport
for i in 0 1 2; do
  port[$i]=$(free_port)
  hport[$i]=$(free_port)
  while [ "${hport[$i]}" = "${port[$i]}" ]; do hport[$i]=$(free_port); done
  $B/silo run --database "$url" --listen "127.0.0.1:${port[$i]}" --http "127.0.0.1:${hport[$i]}" --cluster dash \
    --grains $B/bench/bench_grains.so --log-level warn >>"$work/silo-$i.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/${hport[$i]}") 2>/dev/null && break; sleep 0.05; done
done
sleep 1.5
H="http://127.0.0.1:${hport[0]}"
C="$B/bench/bench_client --cluster dash --silo 127.0.0.1:${port[1]}"
echo "# $(date -u +%Y-%m-%d) on $(nproc) cores, $(uname -sr); ${secs}s per run, $pages pages"
$C --method get --prefix r- --keys 1000 --max-calls 1000 --window 64 --label warm >/dev/null
$C --method incr --prefix w- --keys 100 --window 16 --seconds 2 --label "some writes (for the storage series)" >/dev/null

poller() { # poller N PATH: one page, polling once a second until killed
  local since=0 out t
  while :; do
    out=$(curl -s -o "$work/page$1.json" -w '%{time_total} %{size_download}' "$H$2?since=$since")
    [ "$2" = /api/cluster ] && echo "$out" >>"$work/polls$1.txt"
    t=$(grep -o '"now_ms":[0-9]*' "$work/page$1.json" | head -1 | cut -d: -f2 || true)
    [ -n "$t" ] && since=$(( t / 1000 - 5 ))
    sleep 1
  done
}
run_with() { # run_with PATH LABEL
  local mine=()
  for n in $(seq 1 "$pages"); do poller "$n" "$1" & mine+=("$!"); pids+=("$!"); done
  $C --method get --prefix r- --keys 1000 --window 64 --seconds "$secs" --label "$2"
  for p in "${mine[@]}"; do kill "$p" 2>/dev/null || true; done
  wait "${mine[@]}" 2>/dev/null || true
}
$C --method get --prefix r- --keys 1000 --window 64 --seconds "$secs" --label "get via B, nobody watching"
run_with /healthz "get via B, $pages pollers of /healthz"
run_with /api/cluster "get via B, $pages dashboards open"
run_with /healthz "get via B, $pages pollers of /healthz"
$C --method get --prefix r- --keys 1000 --window 64 --seconds "$secs" --label "get via B, nobody watching"
cat "$work"/polls*.txt | awk '{print $1 * 1000}' | sort -n >"$work/lat.txt"
n=$(wc -l <"$work/lat.txt")
p50=$(awk -v n="$n" 'NR == int(n * 0.5) + 1' "$work/lat.txt")
p99=$(awk -v n="$n" 'NR == int(n * 0.99) + 1' "$work/lat.txt")
max=$(tail -1 "$work/lat.txt")
first=$(head -1 "$work/polls1.txt" | awk '{print $2}')
later=$(tail -1 "$work/polls1.txt" | awk '{print $2}')
full=$(curl -s -o /dev/null -w '%{size_download}' "$H/api/cluster?since=0")
echo "/api/cluster (3 silos) under that load: $n polls, latency p50 ${p50} ms, p99 ${p99} ms, max ${max} ms"
echo "/api/cluster size: first poll $first bytes, a later poll $later bytes, all five minutes now $full bytes"
