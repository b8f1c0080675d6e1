#!/usr/bin/env bash
# tests/examples/check_examples.sh - the session store and chat examples
# (examples/sessions, examples/chat) as a user runs them: the stock silo
# with their .so, two silos on the pg fixture's PostgreSQL, the granary CLI.
# Sessions: fields, a 900 KiB value, expiry while active, expiry across a
# restart (the row is gone), touch keeping one alive. Chat: join, a post
# through one silo delivered to inboxes read through the other, the
# filter worker cleaning and refusing text, members only, the durable
# tidy reminder firing. One line per check; exit 1 on any failure.
set -uo pipefail
B=${GRANARY_BUILD_DIR:?}
src=${GRANARY_SOURCE_DIR:?}
url=$(cat "${GRANARY_TEST_PG_DIR:?}/url")
. "$src/scripts/ports.sh"
work=$(mktemp -d /tmp/granary-examples.XXXXXX)
declare -a pid port
cleanup() {
  for p in "${pid[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }
cluster="examples-$$"
"$B/silo" migrate --database "$url" >/dev/null || { echo "migrate failed"; exit 1; }

start() { # start I GRAINS [ENV=VAL...]
  local i=$1 grains=$2
  shift 2
  [ -n "${port[$i]:-}" ] || port[$i]=$(free_port)
  env "$@" "$B/silo" run --database "$url" --listen "127.0.0.1:${port[$i]}" --cluster "$cluster" \
    --grains "$B/examples/$grains" --reminder-poll-ms 100 --reminder-min-period-ms 100 \
    --log-level warn >>"$work/silo$i.log" 2>&1 &
  pid[$i]=$!
  for _ in $(seq 1 200); do
    "$B/granary" members --cluster "$cluster" --silo "127.0.0.1:${port[$i]}" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "silo $i did not start: $(tail -n 5 "$work/silo$i.log")"
  exit 1
}
stop() { kill -TERM "${pid[$1]}" && wait "${pid[$1]}" 2>/dev/null; pid[$1]=""; }
g() { # g SILO_INDEX CLASS/KEY METHOD [ARG] : the reply on stdout, the exit status of granary
  local i=$1
  shift
  "$B/granary" call --cluster "$cluster" --silo "127.0.0.1:${port[$i]}" --timeout 5000 "$@"
}
expect() { # expect WHAT WANT GOT
  [ "$3" = "$2" ] && ok "$1" || bad "$1: expected '$2', got '$3'"
}

# ---- sessions ----
start 0 sessions.so SESSION_TTL_MS=1500
expect "sessions: put" ok "$(g 0 Session/s1 put user=alice)"
g 0 Session/s1 put theme=dark >/dev/null
expect "sessions: get" alice "$(g 0 Session/s1 get user)"
expect "sessions: keys" "user,theme" "$(g 0 Session/s1 keys | grep -v '^$' | paste -sd, -)"
head -c 921600 /dev/zero | tr '\0' 'x' | sed 's/^/cart=/' >"$work/big"
g 0 Session/big put - <"$work/big" >/dev/null && ok "sessions: a 900 KiB value stored" || bad "sessions: big put failed"
n=$(g 0 Session/big get cart | tr -d '\n' | wc -c)
expect "sessions: the 900 KiB value read back" 921600 "$n"
out=$(g 0 Session/nope get user 2>&1)
rc=$?
[ "$rc" = 1 ] && [[ "$out" == *"no such field"* ]] && ok "sessions: a missing field is an error ($rc)" ||
  bad "sessions: missing field: rc $rc: $out"
sleep 2.2
out=$(g 0 Session/s1 get user 2>&1)
[[ "$out" == *"no such field"* ]] && ok "sessions: expired after its TTL while active" || bad "sessions: not expired: $out"
g 0 Session/t1 put k=v >/dev/null
sleep 1
g 0 Session/t1 touch >/dev/null
sleep 1
expect "sessions: touch keeps a session alive" v "$(g 0 Session/t1 get k)"
g 0 Session/r1 put k=kept >/dev/null
stop 0
sleep 1.8 # the session expires while no silo runs
start 0 sessions.so SESSION_TTL_MS=1500
out=$(g 0 Session/r1 get k 2>&1)
[[ "$out" == *"no such field"* ]] && ok "sessions: expired across a restart" || bad "sessions: r1 after restart: $out"
rows=""
for _ in $(seq 1 40); do # deleted by the activation's first turn: bounded wait
  # Gone, or left empty: a keyed call's reply (the CLI keys every call) is
  # stored with the change, so a clear by one keeps the row, emptied.
  rows=$(psql -At "$url" -c "SELECT count(*) FROM granary_grain_state WHERE service = '$cluster' AND grain_class = 'Session' AND grain_key = 'r1'::bytea AND octet_length(state) > 0" 2>&1)
  [ "$rows" = 0 ] && break
  sleep 0.05
done
expect "sessions: the expired session's data is deleted" 0 "$rows"
# Sessions nobody calls again: the TTL sweep (state_ttl_s, docs/lifecycle.md)
# deletes their rows, reminders and stored replies without any call; a
# session in use stays.
for k in $(seq 1 20); do g 0 "Session/w$k" put k=v >/dev/null || bad "sessions: put w$k"; done
psql -q "$url" -c "INSERT INTO granary_reminder (service, grain_class, grain_key, name, due_us, period_ms) VALUES ('$cluster', 'Session', 'w1'::bytea, 'r', 9000000000000000, 0)" >/dev/null
stop 0 # the grains deactivate: nothing holds them any more
start 0 sessions.so SESSION_TTL_MS=1500
left=""
for _ in $(seq 1 100); do # TTL 2 s, a page a second: bounded wait (10 s)
  g 0 Session/t2 put k=v >/dev/null
  left=$(psql -At "$url" -c "SELECT (SELECT count(*) FROM granary_grain_state WHERE service = '$cluster' AND grain_class = 'Session' AND convert_from(grain_key, 'UTF8') LIKE 'w%') + (SELECT count(*) FROM granary_reminder WHERE service = '$cluster' AND grain_key = 'w1'::bytea) + (SELECT count(*) FROM granary_reply WHERE service = '$cluster' AND convert_from(grain_key, 'UTF8') LIKE 'w%')" 2>&1)
  [ "$left" = 0 ] && break
  sleep 0.1
done
expect "sessions: rows, reminders and replies of sessions nobody calls are deleted by the TTL sweep" 0 "$left"
expect "sessions: a session in use is kept" v "$(g 0 Session/t2 get k)"
stop 0

# ---- chat, on two silos ----
start 0 chat.so CHAT_TIDY_MS=400
start 1 chat.so CHAT_TIDY_MS=400
for who in alice bob carol; do g 0 Room/lobby join "$who" >/dev/null || bad "chat: join $who"; done
expect "chat: a post reaches every member" "delivered 3" "$(g 1 Room/lobby post 'alice: hello, darn it')"
expect "chat: the inbox holds the filtered text" "alice: hello, **** it" "$(g 0 Inbox/bob read)"
expect "chat: reading empties the inbox" "" "$(g 1 Inbox/bob read)"
expect "chat: carol got it too" "alice: hello, **** it" "$(g 1 Inbox/carol read)"
out=$(g 0 Room/lobby post 'mallory: hi' 2>&1)
[[ "$out" == *"join the room first"* ]] && ok "chat: only members post" || bad "chat: non-member post: $out"
long=$(head -c 600 /dev/zero | tr '\0' 'y')
out=$(g 1 Room/lobby post "bob: $long" 2>&1)
[[ "$out" == *"post refused"* ]] && ok "chat: the filter refuses a 600-byte message" || bad "chat: long post: $out"
g 0 Room/lobby leave carol >/dev/null
expect "chat: after leave, two inboxes" "delivered 2" "$(g 0 Room/lobby post 'bob: bye carol')"
list=$("$B/granary" reminder list Room/lobby --cluster "$cluster" --silo "127.0.0.1:${port[1]}" 2>&1)
[[ "$list" == *tidy* ]] && ok "chat: the room's tidy reminder is registered" || bad "chat: reminder list: $list"
for i in $(seq 1 14); do g $((i % 2)) Room/lobby post "alice: message $i" >/dev/null; done
t0=$(g 0 Room/lobby stats | sed -n 's/.*tidied=\([0-9]*\).*/\1/p')
st=""
for _ in $(seq 1 100); do # a tidy after the last post (it fires every 400 ms): bounded wait
  st=$(g 0 Room/lobby stats)
  t=$(sed -n 's/.*tidied=\([0-9]*\).*/\1/p' <<<"$st")
  [ "${t:-0}" -gt "${t0:-0}" ] && break
  sleep 0.1
done
[[ "$st" == *"kept=10 "* ]] && [ "${t:-0}" -gt "${t0:-0}" ] && ok "chat: the tidy reminder fired and trimmed ($st)" ||
  bad "chat: tidy did not fire or trim: $st (tidied before: $t0)"
stop 0
stop 1
[ "$fail" = 0 ]
