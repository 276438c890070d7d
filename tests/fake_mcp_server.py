#!/usr/bin/env python3
"""A fake MCP server over stdio that replays what a real one wrote.

Usage: fake_mcp_server.py CASE.jsonl [LOG]

CASE.jsonl holds one JSON-RPC response per line, as a server wrote them (the format of
`shared/cases/wire/mcp-*.jsonl`). Each line is of one kind, told by its `result`:
`protocolVersion` answers `initialize`, `tools` answers `tools/list`, anything else answers
`tools/call`. The N-th request of a kind gets the N-th line of that kind (the last one again
when there are fewer lines than requests), with the id the client sent. Notifications get
nothing; any other request gets an empty result. Each request received is appended to LOG
(one JSON line) when given. Messages are newline-delimited JSON (MCP 2025-06-18, stdio
transport).
"""

import json
import sys


def kind_of(line):
    result = line.get("result", {})
    if "protocolVersion" in result:
        return "initialize"
    if "tools" in result:
        return "tools/list"
    return "tools/call"


def main():
    lines = {}
    with open(sys.argv[1], encoding="utf-8") as case:
        for text in case:
            if text.strip():
                line = json.loads(text)
                lines.setdefault(kind_of(line), []).append(line)
    log = open(sys.argv[2], "a", encoding="utf-8") if len(sys.argv) > 2 else None
    served = {}
    for text in sys.stdin:
        if not text.strip():
            continue
        request = json.loads(text)
        if log:
            log.write(json.dumps(request) + "\n")
            log.flush()
        if "id" not in request or "method" not in request:
            continue  # a notification, or a response to us
        method = request["method"]
        if method in lines:
            n = served.get(method, 0)
            served[method] = n + 1
            answer = dict(lines[method][min(n, len(lines[method]) - 1)])
        else:
            answer = {"jsonrpc": "2.0", "result": {}}
        answer["id"] = request["id"]
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
