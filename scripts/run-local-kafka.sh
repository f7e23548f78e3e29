#!/usr/bin/env bash
# `KAFKA=local make run`: the whole system on Apache Kafka (one node, the
# version the tests use) with its log under .run/kafka-local, and a local
# redis-server that keeps its data under .run/redis (append-only file), so
# that stopping and starting again keeps every chat. The node's ports are
# chosen free the first time and kept in its properties; the node stops
# with chat-dev. Delete .run/kafka-local and .run/redis to start afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.run/kafka-local
scripts/ensure.sh kafka
if [ ! -f "$dir/node-1/server.properties" ]; then
  rm -rf "$dir" .run/redis
  scripts/kafka.sh prepare "$PWD/$dir" 1
fi
scripts/kafka.sh node "$PWD/$dir" 1 >>"$dir/node-1.log" 2>&1 &
kafka_pid=$!
trap 'kill "$kafka_pid" 2>/dev/null; wait "$kafka_pid" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM
if ! scripts/kafka.sh wait "$PWD/$dir" 120; then
  echo "Apache Kafka did not start; its log is $dir/node-1.log" >&2
  exit 1
fi
# publish-server, which chat-dev starts first, waits for the topic.
scripts/kafka.sh topic "$PWD/$dir" "${KAFKA_TOPIC:-chat-events}" "${KAFKA_TOPIC_PARTITIONS:-3}"
export KAFKA_BROKERS
KAFKA_BROKERS="$(cat "$dir/bootstrap")"
echo "Apache Kafka on $KAFKA_BROKERS, its log in $dir (kept across runs)" >&2
DEV_REDIS_KEEP=true ./target/debug/chat-dev
