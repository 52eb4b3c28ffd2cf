%% Erlang/OTP side of the ESTA Logic peer comparison (BRIEF section 5).
%%
%% Each benchmark prints one JSON object per line on stdout:
%%   {"bench":"ping_pong_round_trip_ns","value":...}
%%   {"bench":"ping_pong_4_pairs_round_trip_ns","value":...}
%%   {"bench":"spawn_run_exit_ns","value":...}
%%   {"bench":"spawn_run_exit_single_ns","value":...}
%%   {"bench":"idle_process_bytes","value":...}
%%   {"bench":"idle_spawn_ns","value":...}
%% The names match the keys of `estactl bench --json`.
%%
%% Run (benches/peers/compare.sh does this for you):
%%   erlc -o /tmp/peers benches/peers/peers.erl
%%   erl -noshell -pa /tmp/peers -s peers main -extra n=100000 r=5
%%
%% Parameters, from `key=value` plain arguments (after -extra) or from the
%% environment (PEERS_N, PEERS_M, PEERS_K, PEERS_R); arguments win:
%%   n  ping-pong round trips per run     (default 100,000)
%%   m  processes per spawn run           (default 1,000)
%%   k  idle processes                    (default 100,000; above ~250,000
%%      the VM needs a bigger process table: erl +P ...)
%%   r  runs per benchmark, best reported (default 5)
-module(peers).
-export([main/0, paired/0, run/1, run_paired/1, ping_pong/1, ping_pong_pairs/2,
         spawn_run_exit/1,
         spawn_run_exit_single/1, idle/1]).

-define(DEFAULTS, #{n => 100000, m => 1000, k => 100000, r => 5}).
%% Cycles of the one-at-a-time spawn benchmark (as `estactl bench`'s).
-define(SINGLE, 200).
%% Pairs of the many-pairs ping-pong (as `estactl bench`'s: more pairs than
%% the two schedulers).
-define(PAIRS, 4).

%% Entry point for `erl -noshell -s peers main`: prints the results and
%% halts the VM with status 0, or 1 if a benchmark failed.
main() ->
    run_and_halt(fun run/1).

%% Entry point for one paired round of compare.sh (`-s peers paired`):
%% only the benchmarks with a ratio target, ping-pong and spawn-run-exit
%% (many at once and one at a time), so that they can alternate with ours
%% within seconds. Halts like main/0.
paired() ->
    run_and_halt(fun run_paired/1).

%% Runs Benchmarks with the parameters of the command line and halts the
%% VM with status 0, or 1 (the error on stderr) if one failed.
run_and_halt(Benchmarks) ->
    try
        Benchmarks(params(init:get_plain_arguments())),
        halt(0)
    catch
        Class:Reason:Stack ->
            io:format(standard_error, "peers: ~p:~p~n~p~n", [Class, Reason, Stack]),
            halt(1)
    end.

%% Runs ping-pong (one pair, four pairs) and spawn-run-exit (many at once,
%% one at a time), printing one line each.
run_paired(#{n := N, m := M, r := R}) ->
    emit(ping_pong_round_trip_ns, best(R, fun() -> ping_pong(N) end)),
    emit(ping_pong_4_pairs_round_trip_ns, best(R, fun() -> ping_pong_pairs(?PAIRS, N) end)),
    emit(spawn_run_exit_ns, best(R, fun() -> spawn_run_exit(M) end)),
    emit(spawn_run_exit_single_ns, best(R, fun() -> spawn_run_exit_single(?SINGLE) end)).

%% Runs every benchmark with the given parameters, printing one line each.
run(#{n := N, m := M, k := K, r := R}) ->
    emit(ping_pong_round_trip_ns, best(R, fun() -> ping_pong(N) end)),
    emit(ping_pong_4_pairs_round_trip_ns, best(R, fun() -> ping_pong_pairs(?PAIRS, N) end)),
    emit(spawn_run_exit_ns, best(R, fun() -> spawn_run_exit(M) end)),
    emit(spawn_run_exit_single_ns, best(R, fun() -> spawn_run_exit_single(?SINGLE) end)),
    Idle = [idle(K) || _ <- lists:seq(1, R)],
    emit(idle_process_bytes, median([B || {B, _} <- Idle])),
    emit(idle_spawn_ns, lists:min([T || {_, T} <- Idle])).

%% --- ping-pong ----------------------------------------------------------
%% Round-trip latency: this process (the pinger) sends {Self, I} to a pong
%% process, which answers {pong, I}; the pinger checks that the answer
%% carries the round it is waiting for. Result: wall time / N, in ns.
ping_pong(N) ->
    Pong = spawn_link(fun pong/0),
    T0 = now_ns(),
    ping(Pong, 1, N),
    T1 = now_ns(),
    Pong ! stop,
    (T1 - T0) / N.

ping(_Pong, I, N) when I > N ->
    ok;
ping(Pong, I, N) ->
    Pong ! {self(), I},
    receive
        {pong, I} -> ping(Pong, I + 1, N);
        {pong, J} -> error({out_of_order, expected, I, got, J})
    end.

pong() ->
    receive
        {From, I} -> From ! {pong, I}, pong();
        stop -> ok
    end.

%% Throughput under load: P pairs at once, each a pinger making N round
%% trips with its own pong, as above; this process waits for every
%% pinger's `done`. Result: wall time / (P * N), in ns.
ping_pong_pairs(P, N) ->
    Parent = self(),
    T0 = now_ns(),
    Pingers = [spawn_link(fun() ->
                              Pong = spawn_link(fun pong/0),
                              ping(Pong, 1, N),
                              Pong ! stop,
                              Parent ! {done, self()}
                          end)
               || _ <- lists:seq(1, P)],
    [receive {done, Pinger} -> ok end || Pinger <- Pingers],
    T1 = now_ns(),
    (T1 - T0) / (P * N).

%% --- spawn + run + exit -------------------------------------------------
%% Cost of a short-lived process: spawn M processes that do nothing and
%% exit, and wait for the 'DOWN' of every one of them (monitors are how an
%% Erlang parent learns a child has finished). Result: wall time / M, in ns.
spawn_run_exit(M) ->
    T0 = now_ns(),
    spawn_noops(M),
    await_down(M),
    T1 = now_ns(),
    (T1 - T0) / M.

%% One at a time: spawn one process that does nothing, wait for its
%% 'DOWN', C times (ours: `spawn_run_exit_single_ns`, spawn one and run
%% the kernel until it exited). Result: wall time / C, in ns.
spawn_run_exit_single(C) ->
    T0 = now_ns(),
    spawn_one_by_one(C),
    T1 = now_ns(),
    (T1 - T0) / C.

spawn_one_by_one(0) -> ok;
spawn_one_by_one(C) ->
    {Pid, Ref} = spawn_monitor(fun() -> ok end),
    receive
        {'DOWN', Ref, process, Pid, normal} -> spawn_one_by_one(C - 1);
        {'DOWN', Ref, process, Pid, Reason} -> error({noop_failed, Reason})
    end.

spawn_noops(0) -> ok;
spawn_noops(M) ->
    spawn_monitor(fun() -> ok end),
    spawn_noops(M - 1).

await_down(0) -> ok;
await_down(M) ->
    receive
        {'DOWN', _Ref, process, _Pid, normal} -> await_down(M - 1);
        {'DOWN', _Ref, process, _Pid, Reason} -> error({noop_failed, Reason})
    end.

%% --- idle processes -----------------------------------------------------
%% Footprint of a process parked in `receive`: spawn K processes that each
%% report `ready` and then block in receive. Returns {Bytes, Ns}:
%%   Bytes = growth of erlang:memory(total) / K, minus the growth of this
%%           (the measuring) process, whose heap holds the list of pids;
%%   Ns    = wall time from the first spawn until all K are parked, / K.
%% The processes are then killed. Memory of dead processes is returned to
%% the allocators asynchronously (tens of ms for 100,000 of them), so each
%% run first waits for erlang:memory(total) to settle; the reported bytes
%% are the median of the runs, the time the best. Use K of 100,000 or more:
%% with a few thousand, later runs reuse process structures kept on the
%% allocators' free lists and the byte figure reads low (~2,000 not ~2,640).
idle(K) ->
    Count0 = erlang:system_info(process_count),
    settle(erlang:memory(total), 100),
    erlang:garbage_collect(),
    {Total0, Self0} = memory(),
    Parent = self(),
    T0 = now_ns(),
    Pids = [spawn(fun() -> Parent ! ready, park() end) || _ <- lists:seq(1, K)],
    await_ready(K),
    T1 = now_ns(),
    erlang:garbage_collect(),
    {Total1, Self1} = memory(),
    [exit(Pid, kill) || Pid <- Pids],
    await_process_count(Count0),
    {((Total1 - Total0) - (Self1 - Self0)) / K, (T1 - T0) / K}.

park() ->
    receive stop -> ok end.

await_ready(0) -> ok;
await_ready(K) ->
    receive ready -> await_ready(K - 1) end.

memory() ->
    {memory, Self} = erlang:process_info(self(), memory),
    {erlang:memory(total), Self}.

%% Polls every 10 ms until memory(total) moves by less than 64 KiB.
settle(_Total, 0) -> ok;
settle(Total, Tries) ->
    timer:sleep(10),
    case erlang:memory(total) of
        Now when abs(Now - Total) < 65536 -> ok;
        Now -> settle(Now, Tries - 1)
    end.

await_process_count(Count) ->
    case erlang:system_info(process_count) =< Count of
        true -> ok;
        false -> timer:sleep(1), await_process_count(Count)
    end.

%% --- helpers ------------------------------------------------------------
now_ns() ->
    erlang:monotonic_time(nanosecond).

best(R, Fun) ->
    lists:min([Fun() || _ <- lists:seq(1, R)]).

median(Values) ->
    lists:nth((length(Values) + 1) div 2, lists:sort(Values)).

emit(Bench, Value) ->
    io:format("{\"bench\":\"~s\",\"value\":~.1f}~n", [Bench, float(Value)]).

%% Defaults, overridden by PEERS_<KEY> environment variables, overridden by
%% `key=value` plain arguments.
params(Args) ->
    FromEnv = maps:map(
        fun(Key, Default) ->
            Var = "PEERS_" ++ string:uppercase(atom_to_list(Key)),
            case os:getenv(Var) of
                false -> Default;
                "" -> Default;
                Value -> positive(Var, Value)
            end
        end,
        ?DEFAULTS),
    lists:foldl(
        fun(Arg, Acc) ->
            case string:split(Arg, "=") of
                [KeyStr, Value] ->
                    Key = list_to_atom(string:lowercase(KeyStr)),
                    is_map_key(Key, ?DEFAULTS) orelse error({unknown_parameter, Arg}),
                    Acc#{Key => positive(Arg, Value)};
                _ ->
                    error({bad_argument, Arg, expected, "key=value"})
            end
        end,
        FromEnv,
        Args).

positive(What, String) ->
    case string:to_integer(String) of
        {Int, ""} when Int > 0 -> Int;
        _ -> error({not_a_positive_integer, What})
    end.
