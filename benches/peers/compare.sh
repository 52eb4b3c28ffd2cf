#!/usr/bin/env bash
# Peer comparison: ESTA Logic (`estactl bench --json`) against Erlang/OTP
# (peers.erl, next to this script) on the same machine, in one run.
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
            echo "compare.sh: unknown argument: $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
runs=${PEERS_R:-5}
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
log "running estactl bench"
if [ -n "${ESTACTL:-}" ]; then
    "$ESTACTL" bench --json --repeat "$runs" >"$work/ours.json"
else
    (cd "$root" && cargo run --release -q -p estactl -- bench --json --repeat "$runs") >"$work/ours.json"
fi

# --- Report ----------------------------------------------------------------
python3 - "$work/erlang.jsonl" "$work/ours.json" "$json" "$otp" "$runs" <<'PY'
import json, sys

erlang_path, ours_path, as_json, otp, runs = sys.argv[1:]

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

# Keys of estactl's object that are settings, not measurements.
SETTINGS = {"repeat"}
# BRIEF section 5: ours / Erlang must be at most this.
TARGETS = {
    "ping_pong_round_trip_ns": 0.5,
    "handler_ping_pong_round_trip_ns": 0.5,
    "spawn_run_exit_ns": 1.0,
    "handler_spawn_run_exit_ns": 1.0,
}
# Our figures measured against an Erlang figure of another name: the same
# exchange or footprint, with our other process model (handler processes).
PEER = {
    "handler_ping_pong_round_trip_ns": "ping_pong_round_trip_ns",
    "handler_spawn_run_exit_ns": "spawn_run_exit_ns",
    "idle_handler_process_bytes": "idle_process_bytes",
}
ORDER = [
    "ping_pong_round_trip_ns", "handler_ping_pong_round_trip_ns",
    "spawn_run_exit_ns", "handler_spawn_run_exit_ns",
    "idle_process_bytes", "idle_handler_process_bytes", "idle_spawn_ns",
]

names = [n for n in ORDER if n in ours or n in erlang]
names += sorted(
    n for n in set(ours) | set(erlang)
    if n not in ORDER and n not in SETTINGS and number(ours.get(n, erlang.get(n)))
)

rows = []
for name in names:
    o, e = ours.get(name), erlang.get(PEER.get(name, name))
    o = o if number(o) else None
    e = e if number(e) else None
    ratio = o / e if o is not None and e else None
    target = TARGETS.get(name)
    met = None if ratio is None or target is None else ratio <= target
    rows.append(dict(bench=name, ours=o, erlang=e, ratio=ratio, target=target, met=met))

if as_json == "1":
    print(json.dumps({
        "erlang_otp_release": otp,
        "repeat": int(runs),
        "benches": {r.pop("bench"): r for r in rows},
    }))
    sys.exit(0)

def fmt(x, digits=1):
    return "n/a" if x is None else f"{x:,.{digits}f}"

table = [("bench", "ours", "erlang", "ours/erlang", "target", "met")]
for r in rows:
    table.append((
        r["bench"], fmt(r["ours"]), fmt(r["erlang"]), fmt(r["ratio"], 2),
        "" if r["target"] is None else f"<= {r['target']}",
        "" if r["met"] is None else ("yes" if r["met"] else "NO"),
    ))
widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
print(f"ESTA Logic vs Erlang/OTP {otp}: ns unless the name says bytes; times best of {runs} runs, bytes the median")
for i, row in enumerate(table):
    cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
    print("  ".join(cells).rstrip())
    if i == 0:
        print("  ".join("-" * w for w in widths))
PY
