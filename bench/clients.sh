#!/usr/bin/env bash
# Each client library against the C client, in one run on one silo (memory
# storage: the protocol and the client are measured, not the database): 64
# gets in flight on 1,000 live grains for SECONDS each, every client in turn.
#   bench/clients.sh [SECONDS]    (default 3)
# Loopback only; bounded in time; everything stops on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
. bench/lib.sh
bench_setup clients
echo "# $(date -u +%Y-%m-%d) on $(nproc) cores, $(uname -sr): $(git rev-parse --short HEAD)$( [ -n "$(git status --porcelain)" ] && echo '+changes'), ${secs}s each, 64 in flight"
p=$(free_port)
$B/silo run --memory --listen "127.0.0.1:$p" --grains $B/examples/counter.so --log-level warn >>"$work/silo.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.05; done
S="127.0.0.1:$p"
$B/bench/bench_client --silo "$S" --method get --prefix k --keys 1000 --window 64 --seconds "$secs" --label "C client (bench_client)"
python3 - "$S" "$secs" <<'PY'
import asyncio, sys, time
sys.path.insert(0, "clients/python")
import granary
async def main(silo, secs):
    async with granary.AsyncClient([silo], retry_for=0) as c:
        n = 0; end = time.monotonic() + secs
        async def worker(w):
            nonlocal n
            i = w
            while time.monotonic() < end:
                await c.call("Counter", "k%d" % (i % 1000), "get"); n += 1; i += 64
        t0 = time.monotonic(); await asyncio.gather(*[worker(w) for w in range(64)])
        print("%-32s %10.0f calls/s" % ("Python AsyncClient", n / (time.monotonic() - t0)))
asyncio.run(main(sys.argv[1], float(sys.argv[2])))
PY
node -e '
const { Client } = require("./clients/node/granary");
const [silo, secs] = process.argv.slice(1);
(async () => {
  const c = new Client({ silos: [silo], retryForMs: 0 });
  let n = 0; const end = Date.now() + secs * 1000, t0 = Date.now();
  await Promise.all([...Array(64).keys()].map(async (w) => { for (let i = w; Date.now() < end; i += 64) { await c.call("Counter", "k" + (i % 1000), "get"); n++; } }));
  console.log("Node Client".padEnd(32) + " " + String(Math.round(n / ((Date.now() - t0) / 1000))).padStart(10) + " calls/s");
  c.close();
})();' "$S" "$secs"
elixir -e '
Code.require_file("clients/elixir/lib/granary.ex")
[silo, secs] = System.argv()
{:ok, c} = Granary.start_link(silos: [silo])
end_ms = System.monotonic_time(:millisecond) + trunc(String.to_float(secs <> ".0") * 1000)
t0 = System.monotonic_time(:millisecond)
n = 0..63 |> Task.async_stream(fn w ->
  Stream.iterate(w, &(&1 + 64)) |> Enum.reduce_while(0, fn i, acc ->
    if System.monotonic_time(:millisecond) < end_ms do
      {:ok, _} = Granary.call(c, "Counter", "k#{rem(i, 1000)}", "get", "", retry_for: 0); {:cont, acc + 1}
    else {:halt, acc} end end) end, max_concurrency: 64, timeout: :infinity) |> Enum.reduce(0, fn {:ok, k}, a -> a + k end)
IO.puts(String.pad_trailing("Elixir Granary.call", 32) <> " " <> String.pad_leading(Integer.to_string(div(n * 1000, max(System.monotonic_time(:millisecond) - t0, 1))), 10) <> " calls/s")
' "$S" "$secs"
