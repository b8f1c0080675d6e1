# examples/elixir_counter/counter.exs - an Elixir service keeping its counters
# in Granary: 8 workers increment their counters through the Elixir client
# (clients/elixir) until the file STOP exists, counting what was
# acknowledged; then every counter is read back and compared. Run by run.sh
# while it rolls the silos; the client's retries (one idempotency key per
# increment) carry the calls across restarts.
#   elixir counter.exs SILOS CLUSTER SECRET STOP_FILE
Code.require_file(Path.join([__DIR__, "..", "..", "clients", "elixir", "lib", "granary.ex"]))

[silos, cluster, secret, stop] = System.argv()
{:ok, conn} = Granary.start_link(silos: String.split(silos, ","), cluster: cluster, secret: secret)
run = Base.encode16(:crypto.strong_rand_bytes(4), case: :lower)

workers =
  for w <- 1..8 do
    Task.async(fn ->
      key = "elixir-#{run}-#{w}"
      Stream.iterate(0, &(&1 + 1))
      |> Enum.reduce_while({0, 0}, fn _, {ok, err} ->
        if File.exists?(stop) do
          {:halt, {ok, err}}
        else
          case Granary.call(conn, "Counter", key, "incr", "", retry_for: 15_000) do
            {:ok, _} -> {:cont, {ok + 1, err}}
            {:error, e} -> IO.puts("worker #{w}: #{e.name}: #{e.message}"); {:cont, {ok, err + 1}}
          end
        end
      end)
      |> then(fn {ok, err} -> {key, ok, err} end)
    end)
  end

results = Enum.map(workers, &Task.await(&1, :infinity))

bad =
  Enum.count(results, fn {key, ok, err} ->
    {:ok, got} = Granary.call(conn, "Counter", key, "get")
    IO.puts("#{key}: #{ok} increments acknowledged, #{err} failed, value #{got}")
    err != 0 or got != Integer.to_string(ok)
  end)

total = Enum.reduce(results, 0, fn {_, ok, _}, acc -> acc + ok end)
if bad == 0 and total > 0 do
  IO.puts("PASS: #{total} increments from Elixir, every one there")
else
  IO.puts("FAIL: #{bad} counters wrong")
  System.halt(1)
end
