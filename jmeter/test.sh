#!/usr/bin/env bash
# `make test`'s check of the JMeter plans: each runs once at a tiny size
# under each JMeter the runner knows, Debian's 2.13 (through the launcher)
# and Apache JMeter 5.6.3 from Maven Central (JMETERS="2.13 5" names which),
# against a chat-server and a scheduler started here on free ports, with
# KAFKA_BROKERS and REDIS_URL (`make test` starts them), and its summary must
# show the expected statuses. Catches a plan that stops loading on either
# JMeter or a runner that breaks.
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

# The run's summary, or when the run stopped before summarizing, what it
# printed: the FAIL lines show that instead.
summary_of() { # folder err-file
  mkdir -p "$1"
  [ -f "$1/summary.txt" ] || cp "$2" "$1/summary.txt" 2>/dev/null || : >"$1/summary.txt"
  echo "$1/summary.txt"
}

jmeter5="JMeter $(sed -n 's:.*<jmeter.version>\(.*\)</jmeter.version>.*:\1:p' "$root/deploy/jmeter/pom.xml")"
# Each JMeter fetches chats of its own: the next run must not start on a chat
# that the last one left hot.
for jmeter in ${JMETERS:-2.13 5}; do
  tag="${jmeter%%.*}" under="JMeter $jmeter"
  if [ "$jmeter" = 5 ]; then under="$jmeter5"; fi
  JMETER="$jmeter" OUT="$work/fetch-$tag" PORT="$port" "$here/run.sh" "$here/fetch-traffic.jmx" \
    -Jthreads=2 -Jloops=1 -Jchat="jmeter-room-$tag" >/dev/null 2>"$work/fetch-$tag.err" || true
  summary="$(summary_of "$work/fetch-$tag" "$work/fetch-$tag.err")"
  expect "$summary" "fetch-traffic.jmx loads and runs under $under" '^  all +200: 2$'
  expect "$summary" "fetch-traffic.jmx under $under: no errors" '^errors other than 429: none$'

  JMETER="$jmeter" OUT="$work/spike-$tag" PORT="$port" "$here/run.sh" "$here/hotchat-spike.jmx" \
    -Jhot_chat="hot-room-$tag" -Jcold_chat="quiet-room-$tag" \
    -Jbaseline_secs=1 -Jspike_secs=4 -Jafter_secs=1 -Jbaseline_threads=1 -Jbaseline_rpm=120 \
    -Jspike_threads=2 -Jspike_rpm=6000 -Jcold_rpm=120 >/dev/null 2>"$work/spike-$tag.err" || true
  summary="$(summary_of "$work/spike-$tag" "$work/spike-$tag.err")"
  expect "$summary" "hotchat-spike.jmx under $under: the spike turns the chat hot (answers from the snapshot)" '^  hot: answers from the snapshot from'
  expect "$summary" "hotchat-spike.jmx under $under: every member is served" '^  hot chat during the spike: ([0-9]+) of \1 served'
  expect "$summary" "hotchat-spike.jmx under $under: the cold chat is never answered from a snapshot" "^  cold quiet-room-$tag +[0-9]+ of [0-9]+ \\([0-9.]+ %\\) served, 0 from the snapshot\$"
  expect "$summary" "hotchat-spike.jmx under $under: the cold chat is never throttled" 'cold chat: [0-9]+ responses, 0 throttled'
  expect "$summary" "hotchat-spike.jmx under $under: no errors" '^errors other than 429: none$'
  if [ ! -s "$work/spike-$tag/timeline.png" ]; then
    echo "FAIL hotchat-spike.jmx under $under: no timeline chart"
    failures=$((failures + 1))
  else
    echo "ok   hotchat-spike.jmx under $under: the timeline chart is drawn"
  fi
done
[ "$failures" -eq 0 ]
