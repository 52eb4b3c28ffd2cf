#!/usr/bin/env bash
# Peer comparison: ESTA Logic (`estactl bench --json`) against Erlang/OTP
# (peers.erl, next to this script) on the same machine, in one run.
#
# First every benchmark once on each side; then ROUNDS paired rounds of the
# benchmarks with a ratio target (ping-pong, one pair and four pairs at
# once; spawn + run + exit, many at once and one at a time), Erlang's and
# ours back to back within seconds, which side goes first alternating.
# The host's speed drifts by tens of percent over minutes, so each round
# gives one ratio from figures taken moments apart, and the table reports
# the median of those ratios (the range in brackets) rather than a ratio of
# figures measured a minute apart.
#
# Usage: benches/peers/compare.sh [--json]
#   --json   print the combined results as one JSON object instead of a table
#
# Environment:
#   ESTACTL=/path/to/estactl   use this binary instead of `cargo run --release`
#   PEERS_N  ping-pong round trips        (Erlang side; default 100000)
#   PEERS_M  processes per spawn run      (Erlang side; default 1000)
#   PEERS_K  idle processes               (Erlang side; default 100000)
#   PEERS_R  runs per benchmark, best kept (both sides; default 5)
#   PEERS_ROUNDS  paired rounds (default 7; 0 skips them)
# estactl uses its own fixed counts (100,000 round trips, 1,000 spawns), so
# leave N and M at their defaults for a like-for-like comparison.
#
# Installs erlang-base with apt-get if `erl` or `erlc` is missing.
set -euo pipefail

json=0
for arg in "$@"; do
    case "$arg" in
        --json) json=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "compare.sh: unknown argument: '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
runs=${PEERS_R:-5}
# Set but empty is an error, as for the other counts (not the default).
rounds=${PEERS_ROUNDS-7}
case "$rounds" in
    '' | *[!0-9]*)
        echo "compare.sh: PEERS_ROUNDS must be a whole number, not '$rounds'" >&2
        exit 2
        ;;
esac
if [ "${#rounds}" -gt 4 ] || [ "$((10#$rounds))" -gt 1000 ]; then
    echo "compare.sh: PEERS_ROUNDS must be at most 1000, not '$rounds'" >&2
    exit 2
fi
# The counts peers.erl reads must be positive whole numbers: said here, once,
# before anything runs (peers.erl would stop with a stack trace).
for name in PEERS_N PEERS_M PEERS_K PEERS_R; do
    value=${!name-1}
    # Digits only, and not all zeros (`010` is ten).
    case "$value" in
        '' | *[!0-9]*) valid=0 ;;
        *) if [ -n "${value//0/}" ]; then valid=1; else valid=0; fi ;;
    esac
    if [ "$valid" -ne 1 ]; then
        echo "compare.sh: $name must be a positive whole number, not '$value'" >&2
        exit 2
    fi
    # At most what estactl's --repeat takes (a u32) and Erlang's counts
    # sensibly are; nine digits or fewer also keep the shell's arithmetic
    # below safe.
    stripped=$((10#$value)) 2>/dev/null || stripped=""
    if [ "${#value}" -gt 18 ] || [ -z "$stripped" ] || [ "$stripped" -gt 1000000000 ]; then
        echo "compare.sh: $name must be at most 1000000000, not '$value'" >&2
        exit 2
    fi
done
idle=${PEERS_K:-100000}

log() { echo "compare.sh: $*" >&2; }

# --- Erlang ----------------------------------------------------------------
if ! command -v erl >/dev/null || ! command -v erlc >/dev/null; then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    log "installing erlang-base"
    "${sudo[@]}" apt-get update >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y erlang-base >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

erlc -o "$work" "$here/peers.erl"
otp=$(erl -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().')
# The default process table holds 262,144 processes; make room for K.
vm_args=()
if [ "$idle" -gt 200000 ]; then vm_args=(+P $((idle * 2))); fi
log "running Erlang/OTP $otp benchmarks"
erl -noshell "${vm_args[@]}" -pa "$work" -s peers main >"$work/erlang.jsonl"

# --- ESTA Logic -------------------------------------------------------------
# Let the machine settle after the Erlang VM (100,000 processes) exits:
# the host reclaiming its memory slowed the spawn figure that follows.
sleep 5
estactl() {
    if [ -n "${ESTACTL:-}" ]; then
        "$ESTACTL" "$@"
    else
        (cd "$root" && cargo run --release -q -p estactl -- "$@")
    fi
}
# `estactl bench` reports a benchmark that fails in its JSON and goes on;
# one that cannot run at all ends the comparison, saying so.
run_ours() {
    local status=0
    estactl bench --json --repeat "$runs" "$@" || status=$?
    if [ "$status" -ne 0 ]; then
        log "estactl bench failed (exit status $status); no comparison"
        exit 1
    fi
}
log "running estactl bench"
run_ours >"$work/ours.json"

# --- Paired rounds ----------------------------------------------------------
paired=ping_pong_round_trip_ns,ping_pong_4_pairs_round_trip_ns,handler_ping_pong_round_trip_ns
paired=$paired,handler_ping_pong_4_pairs_round_trip_ns,spawn_run_exit_ns,spawn_run_exit_single_ns
: >"$work/rounds.jsonl"
for round in $(seq 1 "$rounds"); do
    # Whoever goes second may find the machine warmer (or busier): the
    # order alternates so that neither side always has it.
    if [ $((round % 2)) -eq 1 ]; then
        log "paired round $round of $rounds: Erlang, then ours"
        erl -noshell -pa "$work" -s peers paired >"$work/erlang-round.jsonl"
        run_ours --only "$paired" >"$work/ours-round.json"
    else
        log "paired round $round of $rounds: ours, then Erlang"
        run_ours --only "$paired" >"$work/ours-round.json"
        erl -noshell -pa "$work" -s peers paired >"$work/erlang-round.jsonl"
    fi
    python3 - "$work/erlang-round.jsonl" "$work/ours-round.json" >>"$work/rounds.jsonl" <<'PY'
import json, sys
erlang = {}
for line in open(sys.argv[1]):
    if line.strip().startswith("{"):
        record = json.loads(line)
        erlang[record["bench"]] = record["value"]
ours = {}
for line in open(sys.argv[2]):
    if line.strip().startswith("{"):
        ours = json.loads(line)
print(json.dumps({"erlang": erlang, "ours": ours}))
PY
done

# --- Report ----------------------------------------------------------------
python3 - "$work/erlang.jsonl" "$work/ours.json" "$json" "$otp" "$runs" "$work/rounds.jsonl" <<'PY'
import json, statistics, sys

erlang_path, ours_path, as_json, otp, runs, rounds_path = sys.argv[1:]
rounds = [json.loads(line) for line in open(rounds_path) if line.strip()]

erlang = {}
for line in open(erlang_path):
    line = line.strip()
    if line.startswith("{"):
        record = json.loads(line)
        erlang[record["bench"]] = record["value"]

# estactl prints one JSON object; take the last line that looks like one.
ours = {}
for line in open(ours_path):
    if line.strip().startswith("{"):
        ours = json.loads(line)

def number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)

# Keys of estactl's object that are settings or reasons, not measurements.
SETTINGS = {"repeat", "quick", "errors"}
# BRIEF section 5: ours / Erlang must be at most this.
TARGETS = {
    "ping_pong_round_trip_ns": 0.5,
    "handler_ping_pong_round_trip_ns": 0.5,
    "ping_pong_4_pairs_round_trip_ns": 0.5,
    "handler_ping_pong_4_pairs_round_trip_ns": 0.5,
    "spawn_run_exit_ns": 1.0,
    "handler_spawn_run_exit_ns": 1.0,
    "spawn_run_exit_single_ns": 1.0,
}
# Our figures measured against an Erlang figure of another name: the same
# exchange or footprint, with our other process model (handler processes).
PEER = {
    "handler_ping_pong_round_trip_ns": "ping_pong_round_trip_ns",
    "handler_ping_pong_4_pairs_round_trip_ns": "ping_pong_4_pairs_round_trip_ns",
    "handler_spawn_run_exit_ns": "spawn_run_exit_ns",
    "idle_handler_process_bytes": "idle_process_bytes",
}
ORDER = [
    "ping_pong_round_trip_ns", "handler_ping_pong_round_trip_ns",
    "ping_pong_4_pairs_round_trip_ns", "handler_ping_pong_4_pairs_round_trip_ns",
    "spawn_run_exit_ns", "handler_spawn_run_exit_ns", "spawn_run_exit_single_ns",
    "idle_process_bytes", "idle_handler_process_bytes", "idle_spawn_ns",
]

names = [n for n in ORDER if n in ours or n in erlang]
# Every other benchmark either side reported, a failed one (null) too: its
# row says n/a, and its reason is printed under the table.
names += sorted(
    n for n in set(ours) | set(erlang)
    if n not in ORDER and n not in SETTINGS
)
# Why a benchmark of ours failed, in the full run or a paired round.
errors = dict(ours.get("errors") or {})
for record in rounds:
    for name, reason in (record["ours"].get("errors") or {}).items():
        errors.setdefault(name, reason)

def paired_ratios(name):
    """The ratio ours/Erlang of each paired round that measured `name`."""
    ratios = []
    for record in rounds:
        o = record["ours"].get(name)
        e = record["erlang"].get(PEER.get(name, name))
        if number(o) and number(e) and e:
            ratios.append(o / e)
    return ratios

rows = []
for name in names:
    o, e = ours.get(name), erlang.get(PEER.get(name, name))
    o = o if number(o) else None
    e = e if number(e) else None
    ratio = o / e if o is not None and e else None
    paired = paired_ratios(name)
    # The verdict uses the paired median where there is one: figures taken
    # moments apart, not a minute apart on a host whose speed drifts.
    verdict = statistics.median(paired) if paired else ratio
    target = TARGETS.get(name)
    met = None if verdict is None or target is None else verdict <= target
    rows.append(dict(bench=name, ours=o, erlang=e, ratio=ratio, paired=paired,
                     paired_median=statistics.median(paired) if paired else None,
                     target=target, met=met))

if as_json == "1":
    print(json.dumps({
        "erlang_otp_release": otp,
        "repeat": int(runs),
        "paired_rounds": len(rounds),
        "benches": {r.pop("bench"): r for r in rows},
        "errors": errors,
    }))
    sys.exit(1 if errors else 0)

def fmt(x, digits=1):
    return "n/a" if x is None else f"{x:,.{digits}f}"

def fmt_ours(name, x):
    # Ratios (preemption overhead, fairness) sit near 1: three decimals,
    # or 0.96 and 1.04 would both read 1.0.
    return fmt(x, 3 if name.endswith("_ratio") or name.startswith("fairness") else 1)

def fmt_paired(r):
    if not r["paired"]:
        return ""
    return f"{r['paired_median']:.2f} [{min(r['paired']):.2f}-{max(r['paired']):.2f}]"

table = [("bench", "ours", "erlang", "ours/erlang", "paired", "target", "met")]
for r in rows:
    table.append((
        r["bench"], fmt_ours(r["bench"], r["ours"]), fmt(r["erlang"]), fmt(r["ratio"], 2),
        fmt_paired(r),
        "" if r["target"] is None else f"<= {r['target']}",
        "" if r["met"] is None else ("yes" if r["met"] else "NO"),
    ))
widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
print(f"ESTA Logic vs Erlang/OTP {otp}: units as each name ends (ns, ms, bytes, ratio); times best of {runs} runs, bytes the median")
print(f"paired: median ours/erlang of {len(rounds)} back-to-back rounds [lowest-highest]; 'met' judges it where present")
for i, row in enumerate(table):
    cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
    print("  ".join(cells).rstrip())
    if i == 0:
        print("  ".join("-" * w for w in widths))
if errors:
    print()
    for name, reason in sorted(errors.items()):
        print(f"{name}: failed: {reason}")
    sys.exit(1)
PY
