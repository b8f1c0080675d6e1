# bench/baselines.sh - sourced by bench/sweep.sh: the alternatives, each at its
# best configuration, started and stopped here on 127.0.0.1 (every process
# goes into $pids, which bench/lib.sh kills on exit). Each *_run function
# prints one line "RATE P50_US P99_US" (0 0 0 if the tool failed).
#
#   pgbench_run FILE CLIENTS SECONDS   pgbench -M prepared, a script FILE
#   redis_start MODE                   MODE: always (AOF, appendfsync always)
#                                      or none (no persistence); sets redis_port
#   redis_run TEST CLIENTS SECONDS     redis-benchmark -t TEST, 10,000 keys
#   redis_stop
#   erl_start                          a gen_server node (bench_gs.erl)
#   erl_run CALLERS SECONDS            N callers on a second node
#   erl_stop

# "rate=R p50_us=P p99_us=Q" (BenchDriver's and bench_gs's lines) -> "R P Q".
rate_fig() { sed -n 's/.* rate=\([0-9]*\) p50_us=\([0-9]*\) p99_us=\([0-9]*\).*/\1 \2 \3/p'; }

# Percentiles of one number per line on stdin (microseconds).
pcts() { sort -n | awk '{v[NR]=$1} END {if (!NR) {print "0 0"; exit}
  i=int(0.50*(NR-1))+1; j=int(0.99*(NR-1))+1; print v[i], v[j]}'; }

pgbench_setup() { # a fresh table of 10,000 counters, vacuumed and analysed
  "$pgbin/psql" -q "$url" -c "DROP TABLE IF EXISTS counters" \
    -c "CREATE TABLE counters (k int PRIMARY KEY, v bigint NOT NULL)" \
    -c "INSERT INTO counters SELECT g, 0 FROM generate_series(0, 9999) g" -c "VACUUM ANALYZE counters"
  printf '\\set k random(0, 9999)\nUPDATE counters SET v = v + 1 WHERE k = :k RETURNING v;\n' >"$work/update.sql"
  printf '\\set k random(0, 9999)\nSELECT v FROM counters WHERE k = :k;\n' >"$work/select.sql"
}

pgbench_run() { # pgbench_run FILE CLIENTS SECONDS
  local jobs=$(( $2 < 2 ? 1 : 2 )) out
  rm -f "$work"/pgl.*
  out=$(cd "$work" && timeout $(( $3 + 60 )) "$pgbin/pgbench" -n -M prepared -c "$2" -j "$jobs" -T "$3" \
    -l --log-prefix=pgl -f "$1" "$url" 2>/dev/null) || { echo "0 0 0"; return; }
  local tps
  tps=$(echo "$out" | awk '/^tps/ {printf "%.0f", $3; exit}')
  echo "$tps $(cat "$work"/pgl.* | awk '{print $3}' | pcts)"
  rm -f "$work"/pgl.*
}

redis_start() { # redis_start always|none
  local dir="$work/redis-$1"
  mkdir -p "$dir"
  redis_port=$(free_port)
  local persist=(--save "" --appendonly no)
  [ "$1" = always ] && persist=(--save "" --appendonly yes --appendfsync always)
  redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$dir" --maxclients 10000 \
    --protected-mode yes "${persist[@]}" --logfile "$dir/redis.log" &
  redis_pid=$!; pids+=("$redis_pid")
  for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  # GET reads keys that exist: write all 10,000 first.
  redis-benchmark -p "$redis_port" -c 32 -n 100000 -r 10000 -t set -q >/dev/null 2>&1 || true
}

redis_stop() { kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null || true; }

# redis-benchmark runs a request count, not a time: a short probe estimates the
# rate, then a run of about SECONDS is measured (its CSV has the percentiles).
redis_run() { # redis_run TEST CLIENTS SECONDS
  local c=$2 probe n csv
  probe=$(( c * 4 > 4000 ? c * 4 : 4000 ))
  local rps
  rps=$(timeout 60 redis-benchmark -p "$redis_port" -c "$c" -n "$probe" -r 10000 -t "$1" --csv 2>/dev/null |
    awk -F'"' 'NR==2 {printf "%.0f", $4}')
  [ -n "$rps" ] || { echo "0 0 0"; return; }
  n=$(( rps * $3 ))
  [ "$n" -lt "$probe" ] && n=$probe
  [ "$n" -gt 5000000 ] && n=5000000
  csv=$(timeout $(( $3 * 4 + 60 )) redis-benchmark -p "$redis_port" -c "$c" -n "$n" -r 10000 -t "$1" --csv \
    2>/dev/null | awk -F'"' 'NR==2')
  [ -n "$csv" ] || { echo "0 0 0"; return; }
  # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max"
  echo "$csv" | awk -F'"' '{printf "%.0f %.0f %.0f\n", $4, $10 * 1000, $14 * 1000}'
}

erl_start() {
  mkdir -p "$work/erl"
  erlc -o "$work/erl" bench/bench_gs.erl
  export ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT
  ERL_EPMD_PORT=$(free_port)
  epmd -address 127.0.0.1 -port "$ERL_EPMD_PORT" &
  pids+=($!)
  erl_opts=(-noshell -setcookie granarybench -kernel inet_dist_use_interface '{127,0,0,1}' -pa "$work/erl")
  erl "${erl_opts[@]}" -name srv@127.0.0.1 -s bench_gs serve >"$work/erl/srv.log" 2>&1 &
  erl_pid=$!; pids+=("$erl_pid")
}

erl_run() { # erl_run CALLERS SECONDS
  local out
  out=$(timeout $(( $2 + 60 )) erl "${erl_opts[@]}" -name cli@127.0.0.1 -s bench_gs drive srv@127.0.0.1 "$1" "$2" 10000 \
    2>/dev/null | grep '^calls=') || { echo "0 0 0"; return; }
  echo "$out" | rate_fig
}

erl_stop() { kill "$erl_pid" 2>/dev/null; wait "$erl_pid" 2>/dev/null || true; }
