#!/usr/bin/env bash
# publish-server under load: SUBSCRIBERS SSE subscribers over CHATS chats,
# spread over SERVERS publish-server processes (each process here may hold
# at most `ulimit -Hn` file descriptors), RATE posts per second of SIZE bytes
# for DURATION seconds, once through chat-server (the full path through
# Kafka) and once produced straight to Kafka. The broker is BROKER=mock
# (librdkafka's mock cluster, the one `make run` embeds, in a process of its
# own) or BROKER=kafka (Apache Kafka 4.4.0, one node); without BROKER, the
# whole script runs once on each, the mock first; redis-server on a free
# port; release build; everything on 127.0.0.1 and on this machine's cores.
# Each row is the median of RUNS runs, each run with freshly started
# publish-servers (so RSS per connection starts from idle); "KiB after" is
# what the servers hold, together, AFTER_SECS (default 3) after the
# subscribers left.
# PUBLISH_SERVER_BIN measures another build of publish-server.
# Then, many chats per person (MANY_CHATS, default 10; 0: skip):
# MANY_SUBSCRIBERS people (10,000) each following MANY_CHATS chats, at
# MANY_RATE posts per second (100; 100,000 deliveries a second), once
# on one stream of them all (`/api/events`) and once on one stream per
# chat, beside one-chat streams (one chat per person) as the memory
# baseline; produced straight to Kafka. CASES=many runs only this part.
#   BROKER= SUBSCRIBERS=50000 CHATS=100 RATE=1000 SIZE=100 DURATION=20 SERVERS=3 WORKERS=4 RUNS=3 scripts/bench-sse.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SUBSCRIBERS="${SUBSCRIBERS:-50000}" CHATS="${CHATS:-100}" RATE="${RATE:-1000}" SIZE="${SIZE:-100}"
DURATION="${DURATION:-20}" SERVERS="${SERVERS:-3}" WORKERS="${WORKERS:-4}" RUNS="${RUNS:-3}"
SOURCE_ADDRS="${SOURCE_ADDRS:-8}"
# Without BROKER, one run of the whole script per broker, the mock first
# as the baseline: each prints its own table.
if [ -z "${BROKER:-}" ]; then
  for broker in mock kafka; do BROKER="$broker" "$0"; done
  exit 0
fi
# Another build of publish-server to measure (another allocator, say).
PUBLISH_SERVER_BIN="${PUBLISH_SERVER_BIN:-./target/release/publish-server}"
AFTER_SECS="${AFTER_SECS:-3}"
MANY_CHATS="${MANY_CHATS:-10}" MANY_SUBSCRIBERS="${MANY_SUBSCRIBERS:-10000}" MANY_RATE="${MANY_RATE:-100}"
CASES="${CASES:-all}"
source scripts/bench-lib.sh
cargo build --release -p chat-server -p publish-server -p bench --bins

# Every subscriber is a socket at both ends: raise the soft limit as far as allowed.
ulimit -n "$(ulimit -Hn)"
echo "file descriptor limit per process: $(ulimit -n)" >&2

start_redis
if [ "$BROKER" = kafka ]; then
  start_kafka 1
  brokers="$KAFKA_BROKERS"
else
  ./target/release/sse-bench mock-broker --topic chat-events --partitions 3 >"$work/mock.addr" 2>"$work/mock.log" &
  pids+=($!)
  for _ in $(seq 1 100); do [ -s "$work/mock.addr" ] && break; sleep 0.1; done
  brokers="$(head -n 1 "$work/mock.addr")"
  # The mock broker does not take CreateTopics requests; the topic exists.
  export KAFKA_CREATE_TOPIC=false
fi
echo "broker: $BROKER at $brokers" >&2
export KAFKA_BROKERS="$brokers" RUST_LOG=warn
chat_port="$(free_port)"
CHAT_SERVER_LISTEN="127.0.0.1:$chat_port" ./target/release/chat-server >"$work/chat-server.log" 2>&1 &
pids+=($!)
wait_ready "$chat_port"

one_run() { # publish-mode run-number [label subscribers chats-per-stream path]
  local label="${3:-$1}" subscribers="${4:-$SUBSCRIBERS}" per_stream="${5:-1}"
  local one_chat='/api/chats/{chat}/events'
  local path="${6:-$one_chat}"
  local ps_pids=() urls=() port
  for s in $(seq 1 "$SERVERS"); do
    port="$(free_port)"
    PUBLISH_SERVER_LISTEN="127.0.0.1:$port" "$PUBLISH_SERVER_BIN" >"$work/publish-$s.log" 2>&1 &
    ps_pids+=($!)
    urls+=("http://127.0.0.1:$port$path")
    wait_ready "$port"
  done
  local pid_list url_list
  pid_list="$(IFS=,; echo "${ps_pids[*]}")"
  url_list="$(IFS=,; echo "${urls[*]}")"
  ./target/release/sse-bench run --json \
    --subscribe-url "$url_list" --server-pid "$pid_list" \
    --subscribers "$subscribers" --chats-per-stream "$per_stream" \
    --chats "$CHATS" --rate "$RATE" --size "$SIZE" --duration "$DURATION" \
    --workers "$WORKERS" --source-addrs "$SOURCE_ADDRS" --chat-prefix "bench-$label-$2" \
    --publish "$1" --post-url "http://127.0.0.1:$chat_port/api/chats/{chat}/messages" \
    --kafka-brokers "$KAFKA_BROKERS" --kafka-topic chat-events \
    | tee "$work/$label-$2.out" >&2
  tail -n 1 "$work/$label-$2.out" >>"$work/$label.runs"
  # The heap trims each server made in the run and after its subscribers
  # left (a trim waits for the closing to stop), and the time they took.
  sleep "$AFTER_SECS"
  for url in "${urls[@]}"; do
    curl -s "${url%/api/*}/metrics" | awk -v run="$label-$2" '
      /^publish_memory_trims_total/ { n += $NF }
      /^publish_memory_trim_seconds_sum/ { t += $NF }
      END { printf "%s: %d heap trims, %.1f ms in all\n", run, n, t * 1000 }' >&2
  done
  # What the servers still hold AFTER_SECS after the crowd left.
  local after=0
  for pid in "${ps_pids[@]}"; do
    after=$(( after + $(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status") ))
  done
  echo "$after" >>"$work/$label.after"
  for pid in "${ps_pids[@]}"; do kill "$pid"; done
  for pid in "${ps_pids[@]}"; do wait "$pid" || true; done
}

# A fresh broker's JVM is slower until it has compiled its hot paths: one
# small run first, not reported.
[ "$BROKER" = kafka ] && one_run kafka 0 warm-up 1000
if [ "$CASES" = all ]; then
for i in $(seq 1 "$RUNS"); do
  one_run kafka "$i"
  one_run chat-server "$i"
done

python3 - "$work" "$RUNS" "$SUBSCRIBERS" "$CHATS" "$RATE" "$SIZE" "$DURATION" "$SERVERS" "$BROKER" <<'PY'
import json, statistics, sys
work, runs, n, k, rate, size, duration, servers, broker = sys.argv[1:]
print(f"\nSSE fan-out: {n} subscribers over {k} chats on {servers} publish-server processes, "
      f"{rate} posts/s of {size} bytes for {duration} s, broker {broker}; median of {runs} runs")
cols = [("deliveries_per_s", "deliv/s", "{:.0f}"), ("p50_ms", "p50 ms", "{:.2f}"), ("p99_ms", "p99 ms", "{:.2f}"),
        ("max_ms", "max ms", "{:.2f}"), ("lost", "lost", "{:.0f}"), ("rss_per_connection_kib", "KiB/conn", "{:.2f}"),
        ("server_cpu_s", "srv CPU s", "{:.1f}"), ("rss_after_kib", "KiB after", "{:.0f}")]
print(f"{'path':<28}" + "".join(f"{h:>11}" for _, h, _ in cols) + f"{'deliv ratio':>13}")
rows = {}
for name, label in [("kafka", "produced straight to Kafka"), ("chat-server", "posted through chat-server")]:
    runs_ = [json.loads(l) for l in open(f"{work}/{name}.runs")]
    rows[name] = {c: statistics.median(r[c] for r in runs_) for c, _, _ in cols if c != "rss_after_kib"}
    rows[name]["all"] = runs_
    rows[name]["rss_after_kib"] = statistics.median(float(l) for l in open(f"{work}/{name}.after"))
for name, label in [("kafka", "produced straight to Kafka"), ("chat-server", "posted through chat-server")]:
    r = rows[name]
    ratio = r["deliveries_per_s"] / rows["kafka"]["deliveries_per_s"]
    print(f"{label:<28}" + "".join(f"{f.format(r[c]):>11}" for c, _, f in cols) + f"{ratio:>13.2f}")
for name in rows:
    print(f"runs ({name}): " + " | ".join(
        f"{r['deliveries_per_s']:.0f}/s p99 {r['p99_ms']:.2f} lost {r['lost']} {r['rss_per_connection_kib']:.2f} KiB/conn"
        for r in rows[name]["all"]))
PY
fi

[ "$MANY_CHATS" -gt 0 ] || exit 0
# Many chats per person: one stream of them all against one stream each.
RATE="$MANY_RATE"
for i in $(seq 1 "$RUNS"); do
  one_run kafka "$i" one "$MANY_SUBSCRIBERS" 1
  one_run kafka "$i" many "$MANY_SUBSCRIBERS" "$MANY_CHATS" "/api/events?{chats}"
  one_run kafka "$i" separate "$(( MANY_SUBSCRIBERS * MANY_CHATS ))" 1
done
python3 - "$work" "$RUNS" "$MANY_SUBSCRIBERS" "$MANY_CHATS" "$CHATS" "$RATE" "$SIZE" "$DURATION" "$SERVERS" <<'PY'
import json, statistics, sys
work, runs, people, k, chats, rate, size, duration, servers = sys.argv[1:]
people, k = int(people), int(k)
print(f"\nMany chats per person: {people} people, {rate} posts/s of {size} bytes over {chats} chats for "
      f"{duration} s, produced straight to Kafka, {servers} publish-server processes; median of {runs} runs")
print(f"{'case':<36}{'streams':>9}{'deliv/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'lost':>7}"
      f"{'KiB/person':>12}{'CPU µs/deliv':>14}")
rows = {}
for name, label in [("one", "1 chat per person, 1 stream"), ("many", f"{k} chats on 1 stream"),
                    ("separate", f"{k} chats on {k} streams")]:
    data = [json.loads(l) for l in open(f"{work}/{name}.runs")]
    med = lambda f: statistics.median(f(r) for r in data)
    row = {
        "streams": med(lambda r: r["subscribers"]),
        "deliv": med(lambda r: r["deliveries_per_s"]),
        "p50": med(lambda r: r["p50_ms"]), "p99": med(lambda r: r["p99_ms"]),
        "lost": sum(r["lost"] for r in data),
        "kib": med(lambda r: r["rss_per_connection_kib"] * r["subscribers"] / people),
        "cpu": med(lambda r: r["server_cpu_s"] / max(r["deliveries"], 1) * 1e6),
        "all": data,
    }
    rows[name] = row
    print(f"{label:<36}{row['streams']:>9.0f}{row['deliv']:>10.0f}{row['p50']:>9.2f}{row['p99']:>9.2f}"
          f"{row['lost']:>7}{row['kib']:>12.2f}{row['cpu']:>14.2f}")
print(f"memory: {k} chats on one stream hold {rows['many']['kib'] / rows['one']['kib']:.2f}x a one-chat stream"
      f" (target: at most 1.2x), {rows['many']['kib'] / rows['separate']['kib']:.2f}x {k} streams")
print(f"CPU per delivery: one stream of {k} chats {rows['many']['cpu'] / rows['separate']['cpu']:.2f}x {k} streams"
      " (target: at most 1.0x)")
for name, row in rows.items():
    print(f"runs ({name}): " + " | ".join(
        f"{r['deliveries_per_s']:.0f}/s lost {r['lost']} {r['rss_per_connection_kib'] * r['subscribers'] / people:.2f} KiB/person "
        f"{r['server_cpu_s'] / max(r['deliveries'], 1) * 1e6:.2f} µs/deliv" for r in row["all"]))
PY
