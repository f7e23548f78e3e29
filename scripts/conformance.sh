#!/usr/bin/env bash
# `make test`'s check that chat-server's OpenAPI document tells the truth.
# Schemathesis (PyPI, installed by scripts/ensure.sh into a virtual
# environment of its own) generates requests from /api/openapi.json, ones
# the schema allows and ones it forbids, and calls them in sequences along
# the document's links. It fails on any 5xx, on any status the document
# does not list for the operation, and on any request the schema forbids
# that the server accepts. Against the debug chat-server, with the
# KAFKA_BROKERS and REDIS_URL that `make test` starts; bounded by
# CONFORMANCE_EXAMPLES per operation (default 200) and 10 minutes.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}/debug"
source scripts/lib.sh
scripts/ensure.sh schemathesis >/dev/null

run_id="conformance-$$-$(date +%s)"
port="$(free_port)"
# Write limits off, so that generated writes reach the handlers rather than
# stop at 429 (documented all the same); reactions on made-up ids give up
# waiting for the projector after 0.2 s.
CHAT_SERVER_LISTEN="127.0.0.1:$port" KAFKA_TOPIC="$run_id" REDIS_KEY_PREFIX="$run_id" \
  PROJECTOR_GROUP="$run_id" USER_MESSAGES_PER_SEC=0 USER_REACTIONS_PER_SEC=0 \
  REACTION_WAIT_MS=200 RUST_LOG=warn \
  "$target/chat-server" >"$work/chat-server.log" 2>&1 &
pids+=($!)
wait_ready "$port"

checks=not_a_server_error,status_code_conformance,negative_data_rejection
if timeout 600 .run/venv/schemathesis/bin/schemathesis run \
  "http://127.0.0.1:$port/api/openapi.json" --checks "$checks" \
  --max-examples "${CONFORMANCE_EXAMPLES:-200}" --request-timeout 10 \
  --report-dir "$work/report" >"$work/schemathesis.log" 2>&1; then
  cases="$(grep -Eo '[0-9]+ generated' "$work/schemathesis.log" | head -n 1)"
  echo "ok   conformance: chat-server answers as /api/openapi.json says ($cases cases; no 5xx, no undocumented status, nothing the schema forbids accepted)"
else
  cat "$work/schemathesis.log"
  echo "FAIL conformance: chat-server and /api/openapi.json disagree (above)"
  exit 1
fi
