#!/usr/bin/env bash
# `make test`'s check of the HTTP/2 front (deploy/nginx): a chat-server and
# a publish-server (the debug builds, with KAFKA_BROKERS and REDIS_URL that
# `make test` starts) behind Debian's nginx on free ports, with a
# self-signed certificate. curl --http2 gets an answer and a stream through
# it, each event as it comes; then headless Chromium opens the UI and 8
# more streams in one page over it (HTTP/1.1 would stop at 6).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}/debug"
source scripts/lib.sh
scripts/ensure.sh nginx chromium web >/dev/null

run_id="nginx-test-$$-$(date +%s)"
export KAFKA_TOPIC="$run_id" REDIS_KEY_PREFIX="$run_id" PROJECTOR_GROUP="$run_id" RUST_LOG=warn
front="$(free_port)"; chat="$(free_port)"; publish="$(free_port)"
origin="https://127.0.0.1:$front"
CHAT_SERVER_LISTEN="127.0.0.1:$chat" PUBLIC_STREAM_URL="$origin" WEB_DIR="$root/web/dist" TRUSTED_PROXIES=127.0.0.1 \
  "$target/chat-server" >"$work/chat-server.log" 2>&1 &
pids+=($!)
PUBLISH_SERVER_LISTEN="127.0.0.1:$publish" CORS_ORIGINS="$origin" TRUSTED_PROXIES=127.0.0.1 \
  "$target/publish-server" >"$work/publish-server.log" 2>&1 &
pids+=($!)
wait_ready "$chat"
wait_ready "$publish" publish-server
NGINX_DIR="$work/nginx" CHAT_SERVER="127.0.0.1:$chat" PUBLISH_SERVER="127.0.0.1:$publish" \
  scripts/nginx.sh "$front" >"$work/nginx.log" 2>&1 &
pids+=($!)
wait_for_port nginx "$front"

failures=0
ok() { echo "ok   $1"; }
fail() { echo "FAIL $1"; failures=$((failures + 1)); }

version="$(curl --http2 -ks -o /dev/null -w '%{http_version} %{http_code}' "$origin/healthz")"
[ "$version" = "2 200" ] && ok "curl --http2: the API answers over HTTP/2 through nginx" \
  || fail "curl --http2 /healthz: got '$version', expected '2 200'"

# A stream of two chats; one message posted through the front must come
# out of the stream within a second (nothing buffered).
curl --http2 -ksN --max-time 8 -D "$work/stream.head" \
  "$origin/api/events?chat=h2-a&chat=h2-b" >"$work/stream.txt" 2>/dev/null &
stream=$!
for _ in $(seq 1 50); do grep -q 'event: subscribed' "$work/stream.txt" 2>/dev/null && break; sleep 0.1; done
curl --http2 -ks -o /dev/null -H 'content-type: application/json' \
  -d '{"userId":"h2","text":"through the front"}' "$origin/api/chats/h2-b/messages"
posted="$(date +%s%N)"
arrived=""
for _ in $(seq 1 40); do
  if grep -q 'through the front' "$work/stream.txt"; then arrived="$(date +%s%N)"; break; fi
  sleep 0.05
done
kill "$stream" 2>/dev/null || true
if grep -qi '^HTTP/2 200' "$work/stream.head" && grep -qi '^content-type: text/event-stream' "$work/stream.head"; then
  ok "curl --http2: /api/events streams over HTTP/2 through nginx"
else
  fail "the stream's head is not HTTP/2 200 text/event-stream: $(tr -d '\r' <"$work/stream.head" | head -3)"
fi
if [ -n "$arrived" ]; then
  ok "curl --http2: a message posted through nginx comes out of the stream in $(( (arrived - posted) / 1000000 )) ms"
else
  fail "the message never came out of the stream (buffered?): $(cat "$work/stream.txt")"
fi

node web/e2e/http2.e2e.mjs "$origin" || failures=$((failures + 1))
[ "$failures" -eq 0 ]
