#!/usr/bin/env bash
# The cost of `retrace run`'s live output: write syscalls and wall time per step, with
# stdout into a pipe and (if `script` is installed) into a pty.
#
#   benches/scripts/live_output.sh [BINARY] [STEPS]
#
# BINARY defaults to target/debug/retrace; STEPS (default 200) is the number of scripted
# replies, each streaming 60 words (60 text deltas, no latency) and calling fs.list, then
# a final answer. Needs strace; hyperfine is used for timing when present.
set -euo pipefail

bin=$(realpath "${1:-target/debug/retrace}")
steps=${2:-200}
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

cp -r "$root/examples/tidy/." "$dir/"
sed -i "s/^max_steps = .*/max_steps = $((steps + 10))/; s/^loop_limit = .*/loop_limit = $((steps + 10))/" \
    "$dir/agent.toml"
words=$(for i in $(seq 60); do printf 'word%d ' "$i"; done)
{
    echo '{"replies": ['
    for i in $(seq "$steps"); do
        printf '{"text": "%s", "tool_calls": [{"id": "call_%d", "name": "fs.list", "arguments": {}}], "latency_ms": 0},\n' \
            "$words" "$i"
    done
    echo '{"text": "Done.", "latency_ms": 0}]}'
} >"$dir/cassette.json"

run() { rm -rf "$dir/store"; "$bin" --store "$dir/store" run "$dir/agent.toml" --input "survey"; }
traced() { rm -rf "$dir/store"; strace -f -e trace=write -o "$dir/strace" "$bin" --store "$dir/store" run "$dir/agent.toml" --input "survey"; }
export -f run traced
export bin dir

# write(2) calls on stdout (fd 1) by retrace itself; the store's writes are not counted.
count() {
    awk '/ write\(1, / { n++ } END { print n + 0 }' "$dir/strace"
}
traced | cat >/dev/null
lines=$(run | wc -l)
pipe_writes=$(count)
echo "output: $lines lines; exit and last line: $(run | tail -1)"
echo "pipe: $pipe_writes writes to stdout, $(echo "scale=1; $pipe_writes / $steps" | bc) per step"
if command -v script >/dev/null; then
    script -qec 'bash -c traced' /dev/null >/dev/null
    pty_writes=$(count)
    echo "pty:  $pty_writes writes to stdout, $(echo "scale=1; $pty_writes / $steps" | bc) per step"
fi

# Wall time per run; divide by STEPS for ms/step.
if command -v hyperfine >/dev/null; then
    hyperfine -N --warmup 1 --runs 10 "bash -c 'run | cat >/dev/null'"
    command -v script >/dev/null && hyperfine -N --warmup 1 --runs 10 "script -qec 'bash -c run' /dev/null"
else
    for _ in 1 2 3; do /usr/bin/time -f '%e s' bash -c 'run | cat >/dev/null'; done
fi
