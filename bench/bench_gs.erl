%% bench/bench_gs.erl - the Erlang distribution baseline of bench/sweep.sh:
%% a gen_server holding counters on one node, and N caller processes on a
%% second node, each making one gen_server:call at a time over the nodes'
%% distribution link (what Erlang programs do instead of a grain call).
%%
%%   erl -name srv@127.0.0.1 ... -s bench_gs serve
%%   erl -name cli@127.0.0.1 ... -s bench_gs drive srv@127.0.0.1 CALLERS SECONDS KEYS
%% drive prints "calls=N errors=E seconds=S rate=R p50_us=.. p99_us=.." and halts.
-module(bench_gs).
-behaviour(gen_server).
-export([serve/0, drive/1]).
-export([init/1, handle_call/3, handle_cast/2]).

serve() ->
    {ok, _} = gen_server:start({local, bench_gs}, ?MODULE, #{}, []),
    ok.

init(S) -> {ok, S}.

handle_call({get, K}, _From, S) -> {reply, maps:get(K, S, 0), S};
handle_call({incr, K}, _From, S) ->
    V = maps:get(K, S, 0) + 1,
    {reply, V, S#{K => V}}.

handle_cast(_, S) -> {noreply, S}.

drive([Node, Callers, Seconds, Keys]) ->
    N = list_to_integer(atom_to_list(Callers)),
    Secs = list_to_integer(atom_to_list(Seconds)),
    K = list_to_integer(atom_to_list(Keys)),
    %% Connect and warm the link before the clock starts.
    pong = ping(Node, 100),
    0 = gen_server:call({bench_gs, Node}, {get, -1}),
    Parent = self(),
    T0 = erlang:monotonic_time(microsecond),
    End = T0 + Secs * 1000000,
    Pids = [spawn_link(fun() -> caller(Parent, Node, I, K, End, 0, 0, []) end)
            || I <- lists:seq(1, N)],
    {Calls, Errors, Lats} = collect(length(Pids), 0, 0, []),
    Elapsed = (erlang:monotonic_time(microsecond) - T0) / 1.0e6,
    Sorted = lists:sort(Lats),
    io:format("calls=~b errors=~b seconds=~.2f rate=~b p50_us=~b p99_us=~b~n",
              [Calls, Errors, Elapsed, round(Calls / Elapsed),
               pct(Sorted, 0.50), pct(Sorted, 0.99)]),
    halt(0).

%% The server node may still be registering: retry for up to 10 s.
ping(Node, 0) -> net_adm:ping(Node);
ping(Node, N) ->
    case net_adm:ping(Node) of
        pong -> pong;
        pang -> timer:sleep(100), ping(Node, N - 1)
    end.

caller(Parent, Node, I, K, End, Calls, Errors, Lats) ->
    T = erlang:monotonic_time(microsecond),
    case T >= End of
        true -> Parent ! {done, Calls, Errors, Lats};
        false ->
            R = (catch gen_server:call({bench_gs, Node}, {get, (I + Calls) rem K}, 10000)),
            Us = erlang:monotonic_time(microsecond) - T,
            E = case is_integer(R) of true -> Errors; false -> Errors + 1 end,
            caller(Parent, Node, I, K, End, Calls + 1, E, [Us | Lats])
    end.

collect(0, C, E, L) -> {C, E, L};
collect(N, C, E, L) ->
    receive {done, C1, E1, L1} -> collect(N - 1, C + C1, E + E1, L1 ++ L) end.

pct([], _) -> 0;
pct(Sorted, P) -> lists:nth(1 + trunc(P * (length(Sorted) - 1)), Sorted).
