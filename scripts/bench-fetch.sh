#!/usr/bin/env bash
# Fetch API throughput and latency (wrk, GET ...?limit=50 on a cold chat of
# 300 messages with reactions) beside GET /healthz as the baseline of bare
# HTTP, and the delay from a POST's 201 to the message being fetchable, with
# the embedded broker and with Tansu. Release build; client and server share
# the machine's 2 cores; every figure is a median of RUNS runs.
#   DURATION=15s CONNECTIONS=50 THREADS=2 RUNS=3 DELAY_POSTS=300 scripts/bench-fetch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-15s}" CONNECTIONS="${CONNECTIONS:-50}" THREADS="${THREADS:-2}" RUNS="${RUNS:-3}"
DELAY_POSTS="${DELAY_POSTS:-300}"
source scripts/bench-lib.sh
cargo build --release -p chat-server -p publish-server -p scheduler --bins


start_embedded "$work"
scripts/fetch-delay.py "http://127.0.0.1:$port" bench-cold 300 3 >/dev/null
bench healthz "http://127.0.0.1:$port/healthz" "$work"
bench fetch "http://127.0.0.1:$port/api/chats/bench-cold/messages?limit=50" "$work"
for i in $(seq 1 "$RUNS"); do
  scripts/fetch-delay.py "http://127.0.0.1:$port" "delay-$i" "$DELAY_POSTS" | tee -a "$work/delay-embedded.runs" >&2
done
stop_all
start_on_tansu "$work"
for i in $(seq 1 "$RUNS"); do
  scripts/fetch-delay.py "http://127.0.0.1:$port" "delay-$i" "$DELAY_POSTS" | tee -a "$work/delay-tansu.runs" >&2
done
stop_all

report "$work" \
  "GET, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $RUNS runs, release build, 2 cores shared by client and server" \
  "healthz=GET /healthz (bare HTTP)" "fetch=GET messages?limit=50 (cold)"
python3 - "$work" "$RUNS" "$DELAY_POSTS" <<'PY'
import statistics, sys
work, runs, posts = sys.argv[1:]
print(f"\nPOST 201 to fetchable, {posts} sequential posts per run, median of {runs} runs (ms)")
print(f"{'broker':<24}{'p50':>8}{'p99':>8}{'max':>8}")
for name, label in [("embedded", "embedded mock broker"), ("tansu", "Tansu 0.6.0 (memory)")]:
    rows = [[float(x) for x in l.split()] for l in open(f"{work}/delay-{name}.runs")]
    p50, p99, mx = (statistics.median(c) for c in zip(*rows))
    print(f"{label:<24}{p50:>8.2f}{p99:>8.2f}{mx:>8.2f}")
PY
