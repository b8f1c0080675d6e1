#!/usr/bin/env bash
# The seed's two-pod scenario, as a new user would run it (issue 15): four
# shell loops of plain `granary call --silo A,B ... Counter/cN incr` (retries
# on by default), and one loop of `curl -X POST .../v1/grains/Counter/c5/incr`
# (issue 16: an Idempotency-Key per call, retried across both silos' HTTP
# ports), while both silos are rolled (SIGTERM, restart), one is scaled
# away, and the other is killed with SIGKILL and restarted. No error may
# reach a loop, and every counter must end equal to the number of calls its
# loop made: nothing lost, nothing counted twice.
# Run by CTest (e2e.two-pod) with the pg fixture's database; bounded in time.
set -uo pipefail
B=${GRANARY_BUILD_DIR:?}
src=${GRANARY_SOURCE_DIR:?}
url=$(cat "${GRANARY_TEST_PG_DIR:?}/url")
. "$src/scripts/ports.sh"
work=$(mktemp -d /tmp/granary-twopod.XXXXXX)
cluster="twopod-$$"
declare -a pid port hport
cleanup() {
  touch "$work/stop"
  for p in "${pid[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
log() { echo "[two-pod $(date +%T.%N | cut -c1-12)] $*"; }

port[0]=$(free_port)
port[1]=$(free_port)
while [ "${port[1]}" = "${port[0]}" ]; do port[1]=$(free_port); done
hport[0]=$(free_port)
hport[1]=$(free_port)
"$B/silo" migrate --database "$url" >/dev/null || { echo "migrate failed"; exit 1; }

start() { # start I
  "$B/silo" run --database "$url" --listen "127.0.0.1:${port[$1]}" --cluster "$cluster" \
    --http "127.0.0.1:${hport[$1]}" --grains "$B/examples/counter.so" --log-level warn >>"$work/silo$1.log" 2>&1 &
  pid[$1]=$!
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/${port[$1]}") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "silo $1 did not listen"; exit 1
}
stop() { # stop I: SIGTERM and wait (bounded)
  kill -TERM "${pid[$1]}"
  for _ in $(seq 1 300); do kill -0 "${pid[$1]}" 2>/dev/null || break; sleep 0.1; done
  wait "${pid[$1]}" 2>/dev/null
  pid[$1]=""
}

start 0
start 1
sleep 1.5 # both in each other's view
silos="127.0.0.1:${port[0]},127.0.0.1:${port[1]}"

loop() { # loop N: increments Counter/cN until told to stop (at most 3000 calls)
  local n=$1 ok=0 err=0
  for _ in $(seq 1 3000); do
    [ -e "$work/stop" ] && break
    if "$B/granary" call --silo "$silos" --cluster "$cluster" "Counter/c$n" incr >/dev/null 2>>"$work/loop$n.err"; then
      ok=$((ok + 1))
    else
      err=$((err + 1))
    fi
  done
  echo "$ok $err" >"$work/loop$n.count"
}
# curl as a service in another language would call: one key per logical
# call, retried (retryable statuses or no connection) on either silo for up
# to 10 s.
http_loop() {
  local ok=0 err=0 i key code attempt
  for i in $(seq 1 3000); do
    [ -e "$work/stop" ] && break
    key="curl-$$-$i"
    code=0
    for attempt in $(seq 0 199); do
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST -H "Idempotency-Key: $key" \
        "http://127.0.0.1:${hport[$((attempt % 2))]}/v1/grains/Counter/c5/incr" 2>/dev/null)
      case "$code" in 200) break ;; 000|429|503|504) sleep 0.05 ;; *) break ;; esac
    done
    if [ "$code" = 200 ]; then ok=$((ok + 1)); else err=$((err + 1)); echo "curl: $code" >>"$work/loop5.err"; fi
  done
  echo "$ok $err" >"$work/loop5.count"
}
for n in 1 2 3 4; do loop "$n" & done
http_loop &
loops=$(jobs -p | tail -5)

sleep 2
log "rolling update: silo 0"; stop 0; start 0; sleep 1.5
log "rolling update: silo 1"; stop 1; start 1; sleep 1.5
log "scale down to one: silo 1 goes"; stop 1; sleep 1.5
log "SIGKILL silo 0 and restart it"; kill -9 "${pid[0]}"; wait "${pid[0]}" 2>/dev/null; sleep 0.3; start 0
sleep 3
touch "$work/stop"
log "stopping the loops"
for p in $loops; do wait "$p"; done

fail=0
total=0
for n in 1 2 3 4 5; do
  read -r ok err <"$work/loop$n.count"
  got=$("$B/granary" call --silo "$silos" --cluster "$cluster" "Counter/c$n" get 2>&1)
  total=$((total + ok + err))
  echo "Counter/c$n: $ok calls acknowledged, $err failed, final value $got"
  if [ "$err" != 0 ]; then
    echo "FAIL: errors reached loop $n:"; sort "$work/loop$n.err" | uniq -c | head -5; fail=1
  fi
  [ "$got" = "$ok" ] || { echo "FAIL: Counter/c$n is $got, its loop made $ok calls"; fail=1; }
done
[ "$total" -gt 100 ] || { echo "FAIL: only $total calls were made"; fail=1; }
if [ "$fail" != 0 ]; then
  for i in 0 1; do echo "--- silo $i log (tail)"; tail -20 "$work/silo$i.log"; done
  exit 1
fi
echo "PASS: $total calls (granary call, and curl on Counter/c5) through two silos rolled, scaled down and killed: none failed, none lost, none doubled"
