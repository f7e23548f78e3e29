#!/usr/bin/env bash
# Fetch API throughput and latency (wrk, GET ...?limit=50 on a cold chat of
# 300 messages with reactions) beside GET /healthz as the baseline of bare
# HTTP, and the delay from a POST's 201 to the message being fetchable, with
# the embedded broker and with Apache Kafka (one node). Then cold fetches spread over CHATS
# chats on one redis-server and on a Redis Cluster of 3 masters (and 3
# replicas), with the hot-chat snapshot off and on. Release build; client
# and server share the machine's 2 cores; every figure is a median of RUNS
# runs.
#   DURATION=15s CONNECTIONS=50 THREADS=2 RUNS=3 DELAY_POSTS=300 CHATS=64 scripts/bench-fetch.sh
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
start_on_kafka "$work"
for i in $(seq 1 "$RUNS"); do
  scripts/fetch-delay.py "http://127.0.0.1:$port" "delay-$i" "$DELAY_POSTS" | tee -a "$work/delay-kafka.runs" >&2
done
stop_all

# One redis-server beside a Redis Cluster, one chat-server on each in turn.
export CHATS="${CHATS:-64}"
start_redis
start_kafka 1
start_redis_cluster
single_redis="$REDIS_URL" cluster_nodes="$REDIS_CLUSTER_NODES"
unset REDIS_CLUSTER_NODES
for store in single cluster; do
  for snapshot in 0 250; do
    port="$(free_port)"
    nodes=""; [ "$store" = cluster ] && nodes="$cluster_nodes"
    CHAT_SERVER_LISTEN="127.0.0.1:$port" REDIS_URL="$single_redis" REDIS_CLUSTER_NODES="$nodes" \
      REDIS_KEY_PREFIX="bench-$store-$snapshot" KAFKA_TOPIC="bench-$store-$snapshot" \
      PROJECTOR_GROUP="bench-$store-$snapshot" HOT_SNAPSHOT_MS="$snapshot" RUST_LOG=warn \
      ./target/release/chat-server >"$work/chat-$store-$snapshot.log" 2>&1 &
    server=$!
    pids+=("$server")
    wait_ready "$port"
    for c in $(seq 0 $((CHATS - 1))); do
      scripts/fetch-delay.py "http://127.0.0.1:$port" "bench-$c" 10 >/dev/null
    done
    bench "$store-$snapshot" "http://127.0.0.1:$port" "$work" scripts/chats.lua
    kill "$server"; wait "$server" 2>/dev/null || true
  done
done

report "$work" \
  "GET, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $RUNS runs, release build, 2 cores shared by client and server" \
  "healthz=GET /healthz (bare HTTP)" "fetch=GET messages?limit=50 (cold)"
report "$work" \
  "Cold GET messages?limit=50 over $CHATS chats of 10 messages, one Redis and a Redis Cluster (3 masters, 3 replicas, same machine), median of $RUNS runs" \
  "single-0=1 Redis, snapshot off" "single-250=1 Redis, snapshot on" \
  "cluster-0=Cluster, snapshot off" "cluster-250=Cluster, snapshot on"
python3 - "$work" "$RUNS" "$DELAY_POSTS" <<'PY'
import statistics, sys
work, runs, posts = sys.argv[1:]
print(f"\nPOST 201 to fetchable, {posts} sequential posts per run, median of {runs} runs (ms)")
print(f"{'broker':<24}{'p50':>8}{'p99':>8}{'max':>8}")
for name, label in [("embedded", "embedded mock broker"), ("kafka", "Apache Kafka 4.4.0 (one node)")]:
    rows = [[float(x) for x in l.split()] for l in open(f"{work}/delay-{name}.runs")]
    p50, p99, mx = (statistics.median(c) for c in zip(*rows))
    print(f"{label:<24}{p50:>8.2f}{p99:>8.2f}{mx:>8.2f}")
PY
