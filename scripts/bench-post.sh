#!/usr/bin/env bash
# POST throughput and latency of chat-server (release build), measured with
# wrk on 127.0.0.1, against the embedded mock broker and against Apache Kafka (one node).
# Each setup runs RUNS times; the medians are printed, and Kafka's figures as
# a ratio to the embedded broker's. Client and server share the machine.
#   DURATION=15s CONNECTIONS=50 THREADS=2 RUNS=3 scripts/bench-post.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-15s}" CONNECTIONS="${CONNECTIONS:-50}" THREADS="${THREADS:-2}" RUNS="${RUNS:-3}"
source scripts/bench-lib.sh
cargo build --release -p chat-server -p publish-server -p scheduler --bins


start_embedded "$work"
bench embedded "http://127.0.0.1:$port" "$work" scripts/post.lua
stop_all
start_on_kafka "$work"
# A fresh broker's JVM is slower until it has compiled its hot paths (runs
# of 3,387, 5,326 and 7,193 req/s one after another): one run first, not
# recorded.
run_wrk "http://127.0.0.1:$port" "$work" scripts/post.lua >/dev/null
bench kafka "http://127.0.0.1:$port" "$work" scripts/post.lua
stop_all

report "$work" \
  "POST /api/chats/{chat}/messages, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $RUNS runs, release build, 2 cores shared by client and server" \
  "embedded=embedded mock broker" "kafka=Apache Kafka 4.4.0 (one node)"
