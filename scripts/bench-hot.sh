#!/usr/bin/env bash
# What a hot chat costs, in one run, on one release chat-server: the latest
# page of a hot chat (answered from its shared snapshot) fetched by 10,000
# members (a wrk script gives each request one of 10,000 userIds), beside
# the same server's cold-chat fetch and bare /healthz; what `mine` costs a
# cold fetch (userId given); and what counting fetches for hotness costs
# (a second chat-server with counting off, on the same read model). The
# Redis commands spent during the hot run are read from INFO commandstats
# before and after, and the snapshot's page reads from /metrics.
# wrk GET ...?limit=50 on chats of 300 messages with reactions; Apache Kafka (one node) and
# redis-server on free ports; client and servers share the machine's 2
# cores; medians of RUNS runs. Members' own budget is raised out of reach
# (HOT_CLIENT_RATE) so that the throughput of serving them is measured.
#   DURATION=15s CONNECTIONS=50 THREADS=2 RUNS=3 scripts/bench-hot.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-15s}" CONNECTIONS="${CONNECTIONS:-50}" THREADS="${THREADS:-2}" RUNS="${RUNS:-3}"
source scripts/bench-lib.sh
cargo build --release -p chat-server --bins

start_redis
start_kafka 1
export RUST_LOG=warn

start_server() { # name, then extra VAR=value settings; sets $port
  local name="$1"; shift
  port="$(free_port)"
  env CHAT_SERVER_LISTEN="127.0.0.1:$port" "$@" ./target/release/chat-server >"$work/$name.log" 2>&1 &
  pids+=($!)
  wait_ready "$port"
}

start_server main HOT_CLIENT_RATE=1000000 HOT_CLIENT_BURST=1000000
main="$port"
start_server uncounted COUNT_FETCHES=false PROJECTOR=false
uncounted="$port"

scripts/fetch-delay.py "http://127.0.0.1:$main" bench-cold 300 3 >/dev/null
scripts/fetch-delay.py "http://127.0.0.1:$main" bench-hot 300 3 >/dev/null
# Flag bench-hot hot for an hour, as the scheduler would.
# (Key: `Keys::hot_chats`; the server learns of it at its next resync.)
redis-cli -p "$redis_port" ZADD 'chat:{hot}:hotchats' "$(( ($(date +%s) + 3600) * 1000 ))" bench-hot >/dev/null
hot_url="http://127.0.0.1:$main/api/chats/bench-hot/messages?limit=50"
for _ in $(seq 1 300); do
  curl -fsSi "$hot_url&userId=probe" | grep -qi '^snapshot-age-ms:' && break
  sleep 0.1
done
if ! curl -fsSi "$hot_url&userId=probe" | grep -qi '^snapshot-age-ms:'; then
  echo "bench-hot is not answered from a snapshot after 30 s" >&2; exit 1
fi
cat >"$work/members.lua" <<'LUA'
-- Each request as one of 10,000 members.
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", wrk.path .. "&userId=member" .. (n % 10000))
end
LUA

# Redis calls in all, and calls of scripts, so far.
redis_calls() {
  redis-cli -p "$redis_port" INFO commandstats | python3 -c '
import re, sys
calls = {m.group(1): int(m.group(2)) for m in re.finditer(r"cmdstat_(\w+):calls=(\d+)", sys.stdin.read())}
print(sum(calls.values()), calls.get("evalsha", 0) + calls.get("eval", 0))'
}
snapshot_reads() {
  curl -fsS "http://127.0.0.1:$main/metrics" |
    awk '/^hot_page_reads_total/ && /kind="snapshot"/ { s += $2 } END { print s + 0 }'
}

for i in $(seq 1 "$RUNS"); do
  RUNS=1 bench healthz "http://127.0.0.1:$main/healthz" "$work"
  RUNS=1 bench cold "http://127.0.0.1:$main/api/chats/bench-cold/messages?limit=50" "$work"
  read -r calls_before scripts_before < <(redis_calls)
  reads_before="$(snapshot_reads)"
  started="$(date +%s.%N)"
  RUNS=1 bench hot "$hot_url" "$work" "$work/members.lua"
  ended="$(date +%s.%N)"
  read -r calls_after scripts_after < <(redis_calls)
  reads_after="$(snapshot_reads)"
  python3 -c "
secs = $ended - $started
print(f'{($calls_after - $calls_before) / secs:.1f} {($scripts_after - $scripts_before) / secs:.1f} {($reads_after - $reads_before) / secs:.1f}')" >>"$work/redis.runs"
  RUNS=1 bench mine "http://127.0.0.1:$main/api/chats/bench-cold/messages?limit=50&userId=user1" "$work"
  RUNS=1 bench off "http://127.0.0.1:$uncounted/api/chats/bench-cold/messages?limit=50" "$work"
done

report "$work" \
  "A hot chat's latest page for 10,000 members, same server, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $RUNS runs" \
  "cold=cold chat (one Redis read each)" "hot=hot chat (shared snapshot)" "healthz=bare /healthz"
report "$work" \
  "What mine costs a cold fetch (GET messages?limit=50, 3 emojis per message)" \
  "cold=without userId" "mine=with userId (mine read)"
report "$work" \
  "Fetch counting (distinct clients per chat and second), cold chat" \
  "off=counting off (COUNT_FETCHES=false)" "cold=counting on (the default)"
python3 - "$work" <<'PY'
import statistics, sys
work = sys.argv[1]
rows = [[float(x) for x in l.split()] for l in open(f"{work}/redis.runs")]
calls, scripts, reads = (statistics.median(c) for c in zip(*rows))
print(f"\nRedis during the hot runs, per second (median of {len(rows)}): {calls:.1f} commands in all,"
      f" {scripts:.1f} script calls, {reads:.1f} snapshot page reads")
PY
