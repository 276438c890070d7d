#!/usr/bin/env bash
# Issue 20's long runs against a model server with a context window: the window server
# (tests/src/window_server.rs, binary `window-server`) answers every request with a call of
# fs.read on a ~7 KiB file, counts tokens its own way (ceil(JSON bytes of tools + messages
# / 4)) and refuses a request over its window with OpenAI's 400 context_length_exceeded.
#
#   benches/scripts/long_run.sh [RETRACE] [SERVER] [SCENARIO…]
#
# RETRACE defaults to target/release/retrace, SERVER to target/release/window-server (build
# both: `cargo build --release -p retrace-cli -p retrace-tests --bin retrace --bin
# window-server`). SCENARIOs are WINDOW:STEPS, default the issue's three:
#   32000:1000  128000:1000  128000:300
# Each runs `retrace run` to the end, then `retrace verify` and `retrace check`, and prints
# what the server saw: total input tokens, the share a prompt cache would serve, the largest
# request, refusals, and requests missing the task. Needs curl and jq.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$(realpath "${1:-$root/target/release/retrace}")
server_bin=$(realpath "${2:-$root/target/release/window-server}")
shift $(($# < 2 ? $# : 2))
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(32000:1000 128000:1000 128000:300)
key_env=RETRACE_TEST_API_KEY
export "$key_env=sk-window-server-bench"
task="Read file-0.txt to file-9.txt in turn with fs.read, again and again, and count the lines that mention a heron (run 7f3a-long)."

dir=$(mktemp -d)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

# ten files of ~7 KiB of varied lines
mkdir -p "$dir/ws"
words=(amber river heron lattice quiet copper meadow signal orbit harbor velvet granite
    lantern thistle cobalt ember willow pixel saffron tundra marble falcon juniper quartz
    ripple canyon mosaic nectar prism sable timber zephyr)
RANDOM=7
for f in $(seq 0 9); do
    line=1
    : >"$dir/ws/file-$f.txt"
    while [ "$(stat -c %s "$dir/ws/file-$f.txt")" -lt 7168 ]; do
        n=$((6 + RANDOM % 10)) text=
        for _ in $(seq "$n"); do text+="${words[RANDOM % 32]} "; done
        printf '%03d. file %d: %s(%d units).\n' "$line" "$f" "$text" $((RANDOM % 10000)) >>"$dir/ws/file-$f.txt"
        line=$((line + 1))
    done
done

for scenario in "${scenarios[@]}"; do
    window=${scenario%%:*} steps=${scenario##*:}
    "$server_bin" --window "$window" --steps "$steps" --task "$task" >"$dir/server.out" &
    server_pid=$!
    for _ in $(seq 100); do grep -q '^listening ' "$dir/server.out" && break; sleep 0.05; done
    url=$(sed -n 's/^listening //p' "$dir/server.out")
    cat >"$dir/agent.toml" <<EOF
name = "long-reader"
system = "You read files for the user with fs.read."
workspace = "ws"
[model]
provider = "openai"
name = "test-model"
base_url = "$url/v1"
api_key_env = "$key_env"
[tools]
allow = ["fs.read"]
[context]
window_tokens = $window
compaction = "summarize"
EOF
    rm -rf "$dir/store"
    start=$(date +%s.%N)
    status=0
    "$bin" --store "$dir/store" run "$dir/agent.toml" --input "$task" >"$dir/run.out" 2>&1 || status=$?
    secs=$(printf %.1f "$(echo "$(date +%s.%N) - $start" | bc)")
    stats=$(curl -sf "$url/stats")
    kill "$server_pid" && wait "$server_pid" 2>/dev/null || true
    server_pid=
    run=$(sed -n 's/^run \([^ ]*\).*/\1/p' "$dir/run.out" | head -1)
    verify=skipped check=skipped
    if [ -n "$run" ]; then
        "$bin" --store "$dir/store" verify "$run" >/dev/null 2>&1 && verify=ok || verify=FAILED
        "$bin" --store "$dir/store" check "$run" >/dev/null 2>&1 && check=ok || check=FAILED
    fi
    echo "== window $window tokens, $steps steps: exit $status in $secs s; verify $verify, check $check"
    [ "$status" -eq 0 ] || tail -5 "$dir/run.out" | sed 's/^/   | /'
    jq -r '"   requests \(.requests) (accepted \(.accepted), refused \(.refusals), summaries \(.summaries)), tool calls \(.tool_calls), finished \(.finished)",
           "   total input tokens \(.total_prompt_tokens) (\(.total_prompt_tokens / 1e6 * 100 | round / 100) M), cacheable prefix \(.cached_prompt_tokens) (\(if .total_prompt_tokens > 0 then (.cached_prompt_tokens * 1000 / .total_prompt_tokens | round / 10) else 0 end) %)",
           "   max request tokens \(.max_request_tokens) (accepted \(.max_accepted_tokens)), largest body \(.max_body_bytes) bytes",
           "   requests missing the task \(.missing_task)"' <<<"$stats"
done
