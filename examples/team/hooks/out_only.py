"""A before_tool hook: refuse writes outside out/ (the call arrives as JSON on stdin)."""
import json
import sys

call = json.load(sys.stdin)
path = call["args"].get("path", "")
if path.startswith("out/") and ".." not in path.split("/"):
    print(json.dumps({"decision": "allow"}))
else:
    print(json.dumps({"decision": "deny", "reason": f"writes go under out/, not to {path!r}"}))
