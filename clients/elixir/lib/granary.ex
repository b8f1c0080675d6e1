defmodule Granary do
  @moduledoc """
  Call Granary grains from Elixir over the binary protocol
  (docs/wire-protocol.md). No Hex dependencies.

      {:ok, conn} = Granary.start_link(silos: ["10.0.0.5:7700", "10.0.0.6:7700"], cluster: "default", secret: "s3cret")
      {:ok, "1"} = Granary.call(conn, "Counter", "user-42", "incr", "")

  A GenServer holds one pipelined connection (many calls in flight) and
  fails over to the next silo when it breaks. Every call carries an
  idempotency key (one per logical call, made when not given) and retryable
  errors are retried with jittered backoff until `:retry_for` ms, so a call
  counts once (docs/exactly-once.md). Errors are `{:error, %Granary.Error{}}`.
  """
  use GenServer

  defmodule Error do
    @moduledoc "A failed call: `code` (a GR_E* number), `name` (\"GR_ENOCLASS\"), `message`, `retryable`."
    defexception [:code, :name, :message, :retryable]
  end

  @names %{-1 => "EINVAL", -2 => "ENOMEM", -3 => "ETIMEDOUT", -4 => "ECANCELED", -5 => "ENOCLASS",
           -6 => "ENOMETHOD", -7 => "EAPP", -8 => "ECONFLICT", -9 => "ESTORAGE", -10 => "EPROTO",
           -11 => "ETOOBIG", -12 => "ECONN", -13 => "EVERSION", -14 => "EAUTH", -15 => "ENOTHERE",
           -16 => "EOVERLOAD", -17 => "ESHUTDOWN", -18 => "EACTIVATE", -19 => "EAGAIN", -20 => "EEXIST",
           -21 => "ENOENT", -22 => "EIO", -23 => "ECONFIG", -24 => "EBUSY", -25 => "ESTATE",
           -26 => "EDEADLOCK", -27 => "ESTATEVERSION"}
  @retryable [-3, -8, -9, -12, -15, -16, -17, -27]
  @econn -12
  @magic 0x4752
  @hello 1
  @hello_ok 2
  @request 3
  @response 4
  @goaway 8

  @doc "Make a Granary.Error for `code` with `message`."
  def error(code, message) do
    %Error{code: code, name: "GR_" <> Map.get(@names, code, "E#{-code}"), message: message,
           retryable: code in @retryable}
  end

  # ---- the API ----

  @doc """
  Start a connection process. Options: `:silos` (list of "host:port"),
  `:cluster` ("default"), `:secret` (""), `:name` ("elixir"),
  `:connect_timeout` (3000 ms), plus GenServer options under `:gen`.
  """
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, Keyword.get(opts, :gen, []))

  @doc """
  Call `method` on grain `class`/`key` with `arg` (binary). Options:
  `:timeout` (30000 ms per attempt), `:idempotency_key`, `:retry_for`
  (10000 ms; 0: no retries). Returns `{:ok, reply}` or `{:error, %Granary.Error{}}`.
  """
  def call(conn, class, key, method, arg \\ "", opts \\ []) do
    timeout = Keyword.get(opts, :timeout, 30_000)
    retry_for = Keyword.get(opts, :retry_for, 10_000)
    key_idem = Keyword.get(opts, :idempotency_key) ||
      if retry_for > 0, do: Base.encode16(:crypto.strong_rand_bytes(16), case: :lower), else: nil
    deadline = System.monotonic_time(:millisecond) + retry_for
    attempt(conn, {class, key, method, arg, timeout, key_idem}, deadline, 0)
  end

  defp attempt(conn, {_, _, _, _, timeout, _} = req, deadline, n) do
    result =
      try do
        GenServer.call(conn, {:call, req}, timeout + 2_000)
      catch
        :exit, _ -> {:error, error(-3, "no response within the call's timeout")}
      end

    case result do
      {:error, %Error{retryable: true}} = err ->
        step = min(1000, 20 * Integer.pow(2, n))
        wait = div(step, 2) + :rand.uniform(div(step, 2) + 1) - 1
        if System.monotonic_time(:millisecond) + wait >= deadline do
          err
        else
          Process.sleep(wait)
          attempt(conn, req, deadline, n + 1)
        end

      other ->
        other
    end
  end

  @doc "Close the connection process."
  def stop(conn), do: GenServer.stop(conn)

  # ---- the connection process ----

  @impl true
  def init(opts) do
    state = %{silos: Keyword.get(opts, :silos, ["127.0.0.1:7700"]), cluster: Keyword.get(opts, :cluster, "default"),
              secret: Keyword.get(opts, :secret, ""), name: Keyword.get(opts, :name, "elixir"),
              connect_timeout: Keyword.get(opts, :connect_timeout, 3000),
              sock: nil, cur: 0, next_id: 0, pending: %{}, buf: <<>>}
    {:ok, state}
  end

  @impl true
  def handle_call({:call, {class, key, method, arg, timeout, idem}}, from, state) do
    case ensure_connected(state) do
      {:ok, state} ->
        id = state.next_id + 1

        case :gen_tcp.send(state.sock, request(id, class, key, method, arg, timeout, idem)) do
          :ok ->
            {:noreply, %{state | next_id: id, pending: Map.put(state.pending, id, from)}}

          {:error, reason} ->
            # The connection broke before its close reached us: this call was
            # not sent (retryable, and safe); the ones in flight fail too.
            state = lost(state)
            {:reply, {:error, error(@econn, "connection to silo lost (#{inspect(reason)}); call not sent")}, state}
        end

      {:error, err, state} ->
        {:reply, {:error, err}, state}
    end
  end

  @impl true
  def handle_info({:tcp, sock, data}, %{sock: sock} = state), do: {:noreply, frames(%{state | buf: state.buf <> data})}
  def handle_info({:tcp_closed, sock}, %{sock: sock} = state), do: {:noreply, lost(state)}
  def handle_info({:tcp_error, sock, _}, %{sock: sock} = state), do: {:noreply, lost(state)}
  def handle_info(_, state), do: {:noreply, state}

  defp frames(%{buf: <<n::32, _::binary>> = buf} = state) when byte_size(buf) >= 4 + n do
    <<_::32, _magic::16, type::8, _flags::8, id::64, body::binary-size(n - 12), rest::binary>> = buf
    state = %{state | buf: rest}

    case type do
      @response ->
        <<status::signed-32, len::32, reply::binary-size(len), _::binary>> = body
        {from, pending} = Map.pop(state.pending, id)
        if from, do: GenServer.reply(from, if(status == 0, do: {:ok, reply}, else: {:error, error(status, reply)}))
        frames(%{state | pending: pending})

      @goaway ->
        lost(state)

      _ ->
        frames(state)
    end
  end

  defp frames(state), do: state

  defp lost(state) do
    if state.sock, do: :gen_tcp.close(state.sock)
    for {_, from} <- state.pending,
        do: GenServer.reply(from, {:error, error(@econn, "connection to silo lost; outcome of the call unknown")})

    %{state | sock: nil, pending: %{}, buf: <<>>, cur: rem(state.cur + 1, length(state.silos))}
  end

  defp ensure_connected(%{sock: nil} = state), do: connect(state, 0, nil)
  defp ensure_connected(state), do: {:ok, state}

  defp connect(state, tried, last) do
    if tried >= length(state.silos) do
      {:error, last, state}
    else
      i = rem(state.cur + tried, length(state.silos))
      case handshake(Enum.at(state.silos, i), state) do
        {:ok, sock, rest} ->
          case :inet.setopts(sock, active: true) do
            :ok ->
              {:ok, frames(%{state | sock: sock, cur: i, buf: rest})}

            {:error, reason} ->
              :gen_tcp.close(sock)
              connect(state, tried + 1, error(@econn, "connection to silo lost: #{inspect(reason)}"))
          end

        {:error, %Error{retryable: true} = err} ->
          connect(state, tried + 1, err)

        {:error, err} ->
          {:error, err, state}
      end
    end
  end

  defp handshake(addr, state) do
    [port | host_parts] = addr |> String.split(":") |> Enum.reverse()
    host = host_parts |> Enum.reverse() |> Enum.join(":") |> String.trim_leading("[") |> String.trim_trailing("]")

    with {:ok, sock} <- :gen_tcp.connect(String.to_charlist(host), String.to_integer(port),
                          [:binary, active: false, nodelay: true], state.connect_timeout),
         :ok <- :gen_tcp.send(sock, hello(state.cluster, state.secret, state.name)),
         {:ok, <<n::32, _::16, type::8, _::8, _::64>>} <- :gen_tcp.recv(sock, 16, state.connect_timeout),
         {:ok, body} <- :gen_tcp.recv(sock, n - 12, state.connect_timeout) do
      case type do
        @hello_ok ->
          {:ok, sock, <<>>}

        @goaway ->
          :gen_tcp.close(sock)
          <<status::signed-32, len::32, why::binary-size(len), _::binary>> = body
          {:error, error(if(status in [-14, -13], do: status, else: @econn), why)}

        _ ->
          :gen_tcp.close(sock)
          {:error, error(-10, "silo did not answer the handshake")}
      end
    else
      {:error, reason} -> {:error, error(@econn, "cannot connect to #{addr}: #{inspect(reason)}")}
    end
  end

  # ---- frames ----

  defp frame(type, id, body, flags \\ 0), do: <<12 + byte_size(body)::32, @magic::16, type::8, flags::8, id::64, body::binary>>

  defp hello(cluster, secret, name) do
    frame(@hello, 0, <<1::16, 1::8, 0::8, byte_size(cluster)::16, byte_size(secret)::16, byte_size(name)::16,
                       cluster::binary, secret::binary, name::binary>>)
  end

  defp request(id, class, key, method, arg, timeout, idem) do
    body = <<timeout::32, byte_size(class)::16, byte_size(method)::16, byte_size(key)::32, byte_size(arg)::32,
             class::binary, key::binary, method::binary, arg::binary>>

    if idem, do: frame(@request, id, body <> <<byte_size(idem)::8, idem::binary>>, 0x40), else: frame(@request, id, body)
  end
end
