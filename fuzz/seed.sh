#!/usr/bin/env bash
# Rebuild the seed corpus (fuzz/corpus/<target>/seed-*) from real files: a store the README's
# job and the coder example write, recorded provider streams and MCP answers, other agents'
# traces, the examples' specs and cassettes, and the golden event fixtures.
# Usage: bash fuzz/seed.sh [CASES]   (CASES: the shared cases folder, default ../shared/cases)
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-../shared/cases}"
out=fuzz/corpus
rm -f "$out"/*/seed-*
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

seed() { # TARGET FILE [PREFIX-HEX]: copy FILE as a seed of TARGET, after PREFIX's bytes
  local dir="$out/$1" tmp="$work/seed"
  mkdir -p "$dir"
  printf "${3:-}" > "$tmp"
  head -c 65536 "$2" >> "$tmp"
  cp "$tmp" "$dir/seed-$(sha256sum "$tmp" | cut -c1-16)"
}

cargo build -q -p retrace-cli -p retrace-fuzz --bins
retrace=target/debug/retrace
"$retrace" --store "$work/store" run examples/tidy/agent.toml --input "Summarise this project" >/dev/null
"$retrace" --store "$work/store" run examples/coder/agent.toml --input "Fix the failing test" >/dev/null || true
target/debug/fuzz-seeds "$work/store" "$out"

for f in crates/events/tests/golden/*.golden; do
  grep '^bytes: ' "$f" | cut -d' ' -f2 | xxd -r -p > "$work/event"
  seed event_codec "$work/event"
done
for f in examples/*/agent.toml examples/*/*.toml; do seed spec "$f"; done
for f in examples/*/cassette*.json examples/*/*/cassette*.json; do [ -f "$f" ] && seed cassette "$f"; done
for f in "$cases"/wire/openai-*.sse; do seed openai_sse "$f" '\x00\x00\x00'; seed openai_sse "$f" '\x00\x05\x11'; done
for f in "$cases"/wire/anthropic-*.sse; do seed anthropic_sse "$f" '\x00\x00\x00'; seed anthropic_sse "$f" '\x00\x07\x13'; done
for f in "$cases"/wire/mcp-*.jsonl; do
  # each answer's `result`, as the client takes it
  python3 -c 'import json,sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if "result" in m and "content" in json.dumps(m["result"]):
        print(json.dumps(m["result"]))' "$f" | while read -r line; do
    printf '%s' "$line" > "$work/mcp"; seed mcp_result "$work/mcp"
  done
done
i=0
for format in claude-code codex otel-genai mini-swe-agent; do
  for f in $(find "$cases/traces/$format" -type f ! -name README.md | sort | head -4); do
    seed import "$f" "\\x0$i"
  done
  i=$((i + 1))
done
for body in '{"input":"hi","spec_path":"agent.toml"}' '{"approve":true,"note":"ok","by":"ana"}' \
  '{"answer":"yes"}' '{"name":"user_message","payload":{"text":"go"}}' '{"reason":"stop"}' \
  '{"at":3,"edit":{"text":"x"}}' '{"error":{"code":"not_found","message":"no run"}}'; do
  printf '%s' "$body" > "$work/api"; seed api_json "$work/api"
done
ls "$out" | while read -r t; do echo "$t: $(ls "$out/$t" | wc -l) seeds"; done
