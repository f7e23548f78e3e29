#!/usr/bin/env bash
# `make test`'s check of the JMeter plans: each runs once at a tiny size
# under Debian's JMeter 2.13 (through the launcher) against a chat-server and
# a scheduler started here on free ports, with KAFKA_BROKERS and REDIS_URL
# (`make test` starts them), and its summary must show the expected
# statuses. Catches a plan that stops loading or a runner that breaks.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
target="${CARGO_TARGET_DIR:-$root/target}/debug"
source "$root/scripts/lib.sh"

run_id="jmeter-test-$$-$(date +%s)"
# A projector group of its own too: a dead member of a group shared on the
# test broker would stall this run's projector.
export KAFKA_TOPIC="$run_id" REDIS_KEY_PREFIX="$run_id" PROJECTOR_GROUP="$run_id" RUST_LOG=warn
port="$(free_port)"
CHAT_SERVER_LISTEN="127.0.0.1:$port" HOT_FETCH_BUDGET=5 HOT_FETCH_BURST=5 \
  "$target/chat-server" >"$work/chat-server.log" 2>&1 &
pids+=($!)
SCHEDULER_LISTEN="127.0.0.1:$(free_port)" HOT_THRESHOLD=20 COOL_DOWN=2 \
  "$target/scheduler" >"$work/scheduler.log" 2>&1 &
pids+=($!)
wait_ready "$port"

failures=0
expect() { # summary-file what pattern
  if grep -Eq "$3" "$1"; then
    echo "ok   $2"
  else
    echo "FAIL $2: no line matching '$3' in the summary:"
    cat "$1"
    failures=$((failures + 1))
  fi
}

OUT="$work/fetch" PORT="$port" "$here/run.sh" "$here/fetch-traffic.jmx" \
  -Jthreads=2 -Jloops=1 -Jchat=jmeter-room >/dev/null 2>"$work/fetch.err" || true
expect "$work/fetch/summary.txt" "fetch-traffic.jmx loads and runs under JMeter 2.13" '^  all +200: 2$'
expect "$work/fetch/summary.txt" "fetch-traffic.jmx: no errors" '^errors other than 429: none$'

OUT="$work/spike" PORT="$port" "$here/run.sh" "$here/hotchat-spike.jmx" \
  -Jbaseline_secs=1 -Jspike_secs=4 -Jafter_secs=1 -Jbaseline_threads=1 -Jbaseline_rpm=120 \
  -Jspike_threads=2 -Jspike_rpm=6000 -Jcold_rpm=120 >/dev/null 2>"$work/spike.err" || true
expect "$work/spike/summary.txt" "hotchat-spike.jmx: the spike turns the chat hot (answers from the snapshot)" '^  hot: answers from the snapshot from'
expect "$work/spike/summary.txt" "hotchat-spike.jmx: every member is served" '^  hot chat during the spike: ([0-9]+) of \1 served'
expect "$work/spike/summary.txt" "hotchat-spike.jmx: the cold chat is never answered from a snapshot" '^  cold quiet-room +[0-9]+ of [0-9]+ \([0-9.]+ %\) served, 0 from the snapshot$'
expect "$work/spike/summary.txt" "hotchat-spike.jmx: the cold chat is never throttled" 'cold chat: [0-9]+ responses, 0 throttled'
expect "$work/spike/summary.txt" "hotchat-spike.jmx: no errors" '^errors other than 429: none$'
if [ ! -s "$work/spike/timeline.png" ]; then
  echo "FAIL hotchat-spike.jmx: no timeline chart"
  failures=$((failures + 1))
else
  echo "ok   hotchat-spike.jmx: the timeline chart is drawn"
fi
[ "$failures" -eq 0 ]
