#!/usr/bin/env python3
"""Posts N messages one at a time and measures, for each, the delay from its
201 to the fetch API showing it (polled every millisecond). Prints
"p50_ms p99_ms max_ms" over the N. Also seeds a chat for fetch benchmarks.

usage: fetch-delay.py BASE_URL CHAT N [REACTIONS_PER_MESSAGE]
"""
import json
import statistics
import sys
import time
import urllib.request

base, chat, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
reactions = int(sys.argv[4]) if len(sys.argv) > 4 else 0


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, json.load(resp)


delays = []
for i in range(n):
    status, message = call("POST", f"/api/chats/{chat}/messages",
                           {"userId": f"user{i % 7}", "text": f"message {i} " + "x" * 40})
    assert status == 201, status
    acked = time.perf_counter()
    deadline = acked + 10
    while True:
        _, page = call("GET", f"/api/chats/{chat}/messages?limit=1")
        if page["messages"] and page["messages"][-1]["id"] == message["id"]:
            delays.append((time.perf_counter() - acked) * 1000)
            break
        if time.perf_counter() > deadline:
            sys.exit(f"message {message['id']} not fetchable within 10 s")
        time.sleep(0.001)
    for r in range(reactions):
        call("POST", f"/api/chats/{chat}/messages/{message['id']}/reactions",
             {"userId": f"fan{r}", "emoji": "👍"})

delays.sort()
p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
print(f"{statistics.median(delays):.2f} {p99:.2f} {delays[-1]:.2f}")
