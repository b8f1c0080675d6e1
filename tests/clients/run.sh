#!/usr/bin/env bash
# The client libraries' own tests (clients/*), each with its own runner,
# against a real three-silo cluster on the pg fixture's PostgreSQL: Python
# (unittest), Node (node --test), Elixir (mix test). Run by CTest
# (clients.libraries); bounded in time; the silos are stopped on exit.
set -uo pipefail
B=${GRANARY_BUILD_DIR:?}
src=${GRANARY_SOURCE_DIR:?}
url=$(cat "${GRANARY_TEST_PG_DIR:?}/url")
. "$src/scripts/ports.sh"
work=$(mktemp -d /tmp/granary-clients.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cluster="clients-$$"
"$B/silo" migrate --database "$url" >/dev/null || exit 1
list=""
for i in 0 1 2; do
  p=$(free_port)
  "$B/silo" run --database "$url" --listen "127.0.0.1:$p" --cluster "$cluster" --secret s3cret \
    --silo-secret s1lo --grains "$B/examples/counter.so" --log-level warn >>"$work/silo$i.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.05; done
  list="$list${list:+,}127.0.0.1:$p"
done
sleep 1.5 # every silo's view has all three
export GRANARY_SILOS="$list" GRANARY_CLUSTER="$cluster" GRANARY_CLUSTER_SECRET=s3cret
fail=0
echo "== Python (clients/python) =="
(cd "$src/clients/python" && timeout 120 python3 -m unittest -v test_granary 2>&1) || fail=1
if [ -d "$src/clients/node" ]; then
  echo "== Node (clients/node) =="
  (cd "$src/clients/node" && timeout 120 node --test 2>&1) || fail=1
fi
if [ -d "$src/clients/elixir" ]; then
  echo "== Elixir (clients/elixir) =="
  if command -v mix >/dev/null; then
    (cd "$src/clients/elixir" && export MIX_BUILD_PATH="$work/_build" MIX_HOME="$work/mix" &&
      timeout 300 mix test 2>&1) || fail=1
  else
    echo "mix is missing (scripts/deps.sh installs elixir)"; fail=1
  fi
fi
if [ "$fail" != 0 ]; then for i in 0 1 2; do echo "--- silo $i"; tail -5 "$work/silo$i.log"; done; fi
exit "$fail"
