defmodule GranaryTest do
  # Against a real cluster: tests/clients/run.sh starts three silos and sets GRANARY_SILOS.
  use ExUnit.Case

  @silos System.get_env("GRANARY_SILOS", "") |> String.split(",")
  @opts [silos: @silos, cluster: System.get_env("GRANARY_CLUSTER", "default"),
         secret: System.get_env("GRANARY_CLUSTER_SECRET", "")]

  defp fresh(p), do: "#{p}-#{Base.encode16(:crypto.strong_rand_bytes(4))}"

  test "incr and get" do
    {:ok, c} = Granary.start_link(@opts)
    k = fresh("ex")
    assert {:ok, "1"} = Granary.call(c, "Counter", k, "incr")
    assert {:ok, "2"} = Granary.call(c, "Counter", k, "incr")
    assert {:ok, "2"} = Granary.call(c, "Counter", k, "get")
  end

  test "many calls in flight, and a binary key through every silo" do
    {:ok, c} = Granary.start_link(@opts)
    k = fresh("pipe")
    replies = 1..300 |> Task.async_stream(fn i -> Granary.call(c, "Counter", "#{k}-#{i}", "incr") end, max_concurrency: 300)
                     |> Enum.map(fn {:ok, r} -> r end)
    assert Enum.all?(replies, &(&1 == {:ok, "1"}))
    bin = <<"ex", 0>> <> :crypto.strong_rand_bytes(6)
    for s <- @silos do
      {:ok, one} = Granary.start_link(Keyword.put(@opts, :silos, [s]))
      assert {:ok, _} = Granary.call(one, "HashCounter", bin, "incr")
    end
    assert {:ok, n} = Granary.call(c, "HashCounter", bin, "get")
    assert n == Integer.to_string(length(@silos))
  end

  test "idempotency key, errors, failover" do
    {:ok, c} = Granary.start_link(@opts)
    k = fresh("idem")
    assert {:ok, "1"} = Granary.call(c, "Counter", k, "incr", "", idempotency_key: "op-1")
    assert {:ok, "1"} = Granary.call(c, "Counter", k, "incr", "", idempotency_key: "op-1")
    assert {:error, %Granary.Error{name: "GR_ENOCLASS", retryable: false}} = Granary.call(c, "NoSuchClass", "x", "get")
    assert {:error, %Granary.Error{name: "GR_ENOMETHOD"}} = Granary.call(c, "Counter", "x", "nosuch")
    {:ok, bad} = Granary.start_link(Keyword.put(@opts, :secret, "wrong"))
    assert {:error, %Granary.Error{name: "GR_EAUTH"}} = Granary.call(bad, "Counter", "x", "get")
    {:ok, fo} = Granary.start_link(Keyword.put(@opts, :silos, ["127.0.0.1:1" | @silos]))
    assert {:ok, "1"} = Granary.call(fo, "Counter", fresh("fo"), "incr")
  end
end
