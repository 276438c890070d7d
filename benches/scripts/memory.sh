#!/usr/bin/env bash
# Peak RSS of a long run: is memory bounded by the window, not the history (issue 20)?
#
#   benches/scripts/memory.sh [BINARY] [SHORT] [LONG] [TEXT_BYTES]
#
# BINARY defaults to target/debug/retrace. Runs an agent of SHORT (default 1000) and LONG
# (default 100000) model steps, each reply carrying TEXT_BYTES (default 0) bytes of text
# and calling fs.list, then a final answer; once through `retrace run` and once submitted to
# `retrace serve` over its API (HTTP on the unix socket) and polled until it finishes.
# Prints the peak RSS of each (the CLI's from /usr/bin/time, the daemon's VmHWM) and
# LONG/SHORT; the target is at most 1.5.
#
# The model is the scripted provider. It holds its whole cassette in memory (~600 bytes a
# reply parsed, more while it is parsed: ~20 MiB for 30,000 replies), which is the harness,
# not the runtime; so both runs play cassettes of LONG + 1 replies, the short one answering
# at reply SHORT and never playing the rest, and the cassette's cost cancels out of the
# growth. `cassette` prints what a 1-step run with such a cassette peaks at, to read the
# ratio against. (An OpenAI-compatible loopback server would avoid the cassette, but a
# python http.server stalled runs after a few thousand steps here.) Needs python3 and curl.
set -euo pipefail

bin=$(realpath "${1:-target/debug/retrace}")
short=${2:-1000}
long=${3:-100000}
text_bytes=${4:-0}
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT

# agent ANSWER_AT: examples/tidy with a cassette of LONG + 1 replies, each calling fs.list
# except reply ANSWER_AT (0-based), the final answer; its directory goes into $agent_dir.
agent() {
    local d="$dir/agent-$1"
    mkdir -p "$d"
    cp -r "$root/examples/tidy/." "$d/"
    sed -i "s/^max_steps = .*/max_steps = $((long + 10))/; s/^loop_limit = .*/loop_limit = $((long + 10))/" \
        "$d/agent.toml"
    python3 - "$d/cassette.json" "$1" "$long" "$text_bytes" <<'PY'
import json, sys
path, at, long, text_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with open(path, "w") as f:
    f.write('{"replies": [\n')
    for i in range(long + 1):
        reply = {"text": "step %08d %s" % (i, "x" * text_bytes), "latency_ms": 0}
        if i != at:
            reply["tool_calls"] = [{"id": "call_%08d" % i, "name": "fs.list", "arguments": {}}]
        f.write(json.dumps(reply) + (",\n" if i < long else "\n"))
    f.write("]}\n")
PY
    agent_dir=$d
}
stop_model() { :; }

# cli STEPS: peak RSS in KiB of `retrace run` (which must succeed), into $rss.
cli() {
    local store="$dir/store-cli"
    agent "$1"
    rm -rf "$store"
    /usr/bin/time -f '%M' -o "$dir/rss" "$bin" --store "$store" run "$agent_dir/agent.toml" --input survey \
        >"$dir/out" 2>&1 || { tail -5 "$dir/out" >&2; exit 1; }
    stop_model
    rss=$(tail -1 "$dir/rss")
    grep '^usage:' "$dir/out" >"$dir/usage"
}

# served STEPS: peak RSS in KiB (VmHWM) of a `retrace serve` that drove the run, into $rss.
served() {
    local store="$dir/store-serve" sock run view serve_pid
    agent "$1"
    rm -rf "$store"
    mkdir -p "$store"
    "$bin" --store "$store" serve --workers 1 >"$dir/serve.log" 2>&1 &
    serve_pid=$!
    pids+=("$serve_pid")
    sock="$store/serve.sock"
    for _ in $(seq 300); do [ -S "$sock" ] && break; sleep 0.1; done
    api() { curl -sS --fail-with-body --unix-socket "$sock" -H 'Content-Type: application/json' "$@"; }
    run=$(api -X POST http://retrace/v1/runs \
        -d "{\"spec_path\": \"$agent_dir/agent.toml\", \"input\": \"survey\", \"new\": true}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["run"])')
    while :; do
        view=$(api "http://retrace/v1/runs/$run")
        python3 -c 'import json, sys; sys.exit(0 if json.loads(sys.argv[1])["finished"] else 1)' \
            "$view" && break
        sleep 1
    done
    python3 -c 'import json, sys; v = json.loads(sys.argv[1]); assert v["outcome"] == "succeeded", v' \
        "$view" >&2
    rss=$(awk '/^VmHWM:/ { print $2 }' "/proc/$serve_pid/status")
    kill -TERM "$serve_pid"
    wait "$serve_pid" || true
    unset 'pids[-1]'
    stop_model
}

mib() { echo "scale=1; $1 / 1024" | bc; }
report() { # NAME SHORT_KIB LONG_KIB
    printf '%-6s %8s MiB at %6d steps  %8s MiB at %6d steps  ratio %s\n' "$1" "$(mib "$2")" "$short" \
        "$(mib "$3")" "$long" "$(echo "scale=2; $3 / $2" | bc)"
}

echo "binary: $bin; replies of $text_bytes text bytes; cassettes of $((long + 1)) replies"
cli 0; echo "cassette: $(mib "$rss") MiB peak for a 1-step run with it"
cli "$short"; a=$rss; cli "$long"; report cli "$a" "$rss"
echo "       the long run's $(cat "$dir/usage")"
served "$short"; a=$rss; served "$long"; report serve "$a" "$rss"
