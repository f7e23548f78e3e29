#!/usr/bin/env bash
# How long the scheduler's tick holds Redis when many chats were fetched in
# one second: CHATS chats (default 100,000) in the second's counter, HOT of
# them over the threshold. Runs the tick script RUNS times (default 5) on a
# redis-server of its own and prints each run's time from Redis's SLOWLOG
# (microseconds inside Redis), then the median.
#   CHATS=100000 HOT=5 RUNS=5 scripts/bench-tick.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CHATS="${CHATS:-100000}" HOT="${HOT:-5}" RUNS="${RUNS:-5}"
scripts/ensure.sh redis
source scripts/lib.sh
start_redis
cli() { redis-cli -p "$redis_port" "$@"; }
python3 - "$CHATS" "$HOT" <<'PY' | cli --pipe >/dev/null
import sys
chats, hot = int(sys.argv[1]), int(sys.argv[2])
for i in range(chats):
    print(f"ZADD bench:fetches:1 {500 if i < hot else 3} chat-{i}")
PY
cli SET bench:lock me >/dev/null
cli CONFIG SET slowlog-log-slower-than 0 >/dev/null
now="$(date +%s%3N)"
for _ in $(seq 1 "$RUNS"); do
  cli DEL bench:hot >/dev/null
  cli SLOWLOG RESET >/dev/null
  cli EVAL "$(cat scheduler/src/lua/tick.lua)" 3 bench:lock bench:fetches:1 bench:hot \
    me 100 1 $((now + 60000)) "$now" bench:changes >/dev/null
  cli SLOWLOG GET 10 | awk '{ line[NR] = $0 } END { for (i = 2; i <= NR; i++) if (line[i] == "EVAL") { print line[i - 1]; exit } }'
done | tee "$work/runs"
echo "tick over $CHATS chats ($HOT hot): median $(sort -n "$work/runs" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }') µs inside Redis"
