#!/usr/bin/env bash
# What hot-chat support costs a fetch, in one run: cold-chat fetch
# throughput with fetch counting on and off (two chat-servers on the same
# read model, measured in turns), and a hot chat's fetch, which passes the
# Redis throttle (a budget too large to refuse anything), beside a cold
# chat's on the same server. wrk GET ...?limit=50 on chats of 300 messages
# with reactions; Tansu and redis-server on free ports; release build;
# client and servers share the machine's 2 cores; medians of RUNS runs.
#   DURATION=15s CONNECTIONS=50 THREADS=2 RUNS=3 scripts/bench-hot.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-15s}" CONNECTIONS="${CONNECTIONS:-50}" THREADS="${THREADS:-2}" RUNS="${RUNS:-3}"
source scripts/bench-lib.sh
cargo build --release -p chat-server --bins

start_redis
start_tansu 3
export RUST_LOG=warn

start_server() { # name, then extra VAR=value settings; sets $port
  local name="$1"; shift
  port="$(free_port)"
  env CHAT_SERVER_LISTEN="127.0.0.1:$port" "$@" ./target/release/chat-server >"$work/$name.log" 2>&1 &
  pids+=($!)
  wait_ready "$port"
}

start_server counting
counting="$port"
start_server uncounted COUNT_FETCHES=false PROJECTOR=false
uncounted="$port"
start_server unlimited PROJECTOR=false HOT_FETCH_BUDGET=1000000 HOT_FETCH_BURST=1000000
unlimited="$port"

scripts/fetch-delay.py "http://127.0.0.1:$counting" bench-cold 300 3 >/dev/null
scripts/fetch-delay.py "http://127.0.0.1:$counting" bench-hot 300 3 >/dev/null
# Flag bench-hot hot for an hour, as the scheduler would.
redis-cli -p "$redis_port" ZADD chat:hotchats "$(( ($(date +%s) + 3600) * 1000 ))" bench-hot >/dev/null
sleep 2
hot_url="http://127.0.0.1:$unlimited/api/chats/bench-hot/messages?limit=50"
if ! curl -fsSi "$hot_url" | grep -qi '^ratelimit-limit:'; then
  echo "bench-hot is not treated as hot" >&2; exit 1
fi

for i in $(seq 1 "$RUNS"); do
  RUNS=1 bench off "http://127.0.0.1:$uncounted/api/chats/bench-cold/messages?limit=50" "$work"
  RUNS=1 bench on "http://127.0.0.1:$counting/api/chats/bench-cold/messages?limit=50" "$work"
  RUNS=1 bench cold "http://127.0.0.1:$unlimited/api/chats/bench-cold/messages?limit=50" "$work"
  RUNS=1 bench hot "$hot_url" "$work"
done
refused="$(curl -fsS "http://127.0.0.1:$unlimited/metrics" | awk '/^hot_fetches_total/ && /throttled/ { s += $2 } END { print s + 0 }')"

report "$work" \
  "Fetch counting, GET messages?limit=50 on a cold chat, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $RUNS runs" \
  "off=counting off (COUNT_FETCHES=false)" "on=counting on (the default)"
report "$work" \
  "The throttle on a hot chat (budget never reached: $refused refused), same server, same content" \
  "cold=cold chat (no throttle)" "hot=hot chat (GCRA script, then fetch)"
python3 - "$work" <<'PY'
import statistics, sys
work = sys.argv[1]
def med(name, col):
    return statistics.median(float(l.split()[col]) for l in open(f"{work}/{name}.runs"))
print(f"\ncounting overhead: {100 * (1 - med('on', 0) / med('off', 0)):.1f} % of cold-fetch throughput")
print(f"throttle decision adds {med('hot', 1) - med('cold', 1):.2f} ms at p50 and {med('hot', 2) - med('cold', 2):.2f} ms at p99")
PY
