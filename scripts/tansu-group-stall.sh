#!/usr/bin/env bash
# A Tansu 0.6.0 consumer-group stall and the projector's way out of it: a
# chat-server is killed (SIGKILL) and another joins the projector's group;
# Tansu gives the newcomer no partitions, so nothing would be projected
# until a member joins afresh. The projector rejoins by itself once its
# group has left the log unread for 30 s. Passes ("ok") when a message
# posted to the newcomer becomes fetchable within WAIT seconds (default
# 90). With REJOIN=1 the stalled chat-server is restarted after 10 s
# instead. `make test` runs it. Needs a build (`cargo build --bins`) and
# Tansu (scripts/ensure.sh tansu).
set -uo pipefail
cd "$(dirname "$0")/.."
WAIT="${WAIT:-90}" REJOIN="${REJOIN:-0}"
source scripts/lib.sh
start_redis
start_tansu 3
export KAFKA_TOPIC=stall REDIS_KEY_PREFIX=stall PROJECTOR_GROUP=stall RUST_LOG=warn
start_chat() { # port
  CHAT_SERVER_LISTEN="127.0.0.1:$1" "${CARGO_TARGET_DIR:-target}/debug/chat-server" >>"$work/chat.log" 2>&1 &
  pids+=($!); chat_pid=$!
  wait_ready "$1"
}
first="$(free_port)"; start_chat "$first"; sleep 3
kill -9 "$chat_pid"; echo "chat-server 1 killed (SIGKILL); chat-server 2 joins the group"
second="$(free_port)"; start_chat "$second"
started=$(date +%s)
curl -fsS -o /dev/null -X POST -H 'content-type: application/json' -d '{"userId":"u","text":"stall-probe"}' \
  "http://127.0.0.1:$second/api/chats/c/messages" || { echo "the post failed"; exit 1; }
port="$second"
while [ $(( $(date +%s) - started )) -lt "$WAIT" ]; do
  if curl -fs "http://127.0.0.1:$port/api/chats/c/messages" | grep -q stall-probe; then
    echo "ok   projector group stall: the post fetchable $(( $(date +%s) - started )) s after it was made"
    grep -q rejoining "$work/chat.log" && echo "     (the projector rejoined its stalled group)"
    exit 0
  fi
  if [ "$REJOIN" = 1 ] && [ "$port" = "$second" ] && [ $(( $(date +%s) - started )) -ge 10 ]; then
    kill "$chat_pid"; wait "$chat_pid" 2>/dev/null
    echo "chat-server 2 restarted after 10 s"
    port="$(free_port)"; start_chat "$port"
  fi
  sleep 0.25
done
echo "FAIL projector group stall: the post not fetchable within $WAIT s"
exit 1
