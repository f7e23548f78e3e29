# Shared by the benchmark scripts: chat-server set-ups and wrk, on top of
# scripts/lib.sh (ports, services, cleanup). Source it.
# shellcheck shell=bash

source scripts/lib.sh
scripts/ensure.sh wrk redis

# Load generators post as one user and hold thousands of streams per
# address: the per-user and per-address limits would (rightly) stop them.
export USER_MESSAGES_PER_SEC=0 USER_REACTIONS_PER_SEC=0 MAX_STREAMS_PER_ADDRESS=0
# Starts the release chat-dev (embedded broker, its own redis-server,
# publish-server and scheduler) on free ports; sets $port. The hot-chat
# threshold is out of reach: these benchmarks measure the cold path, and
# their one-chat loads would otherwise (rightly) turn the chat hot.
start_embedded() { # workdir
  port="$(free_port)"
  CHAT_SERVER_LISTEN="127.0.0.1:$port" DEV_REDIS_PORT="$(free_port)" DEV_DATA_DIR="$1/dev" \
    PUBLISH_SERVER_LISTEN="127.0.0.1:$(free_port)" SCHEDULER_LISTEN="127.0.0.1:$(free_port)" \
    HOT_THRESHOLD=1000000000 RUST_LOG=warn ./target/release/chat-dev >"$1/embedded.log" 2>&1 &
  pids+=($!)
  wait_ready "$port"
}

# Starts redis-server, Apache Kafka (one node) and the release chat-server
# on free ports; sets $port.
start_on_kafka() { # workdir
  start_redis
  start_kafka 1
  port="$(free_port)"
  CHAT_SERVER_LISTEN="127.0.0.1:$port" RUST_LOG=warn ./target/release/chat-server >"$1/kafka-server.log" 2>&1 &
  pids+=($!)
  wait_ready "$port"
}

# Runs wrk once; prints "requests_per_second p50_ms p99_ms non_2xx".
run_wrk() { # url workdir [script]
  local script=()
  [ -n "${3:-}" ] && script=(-s "$3")
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "${script[@]}" "$1" >"$2/wrk.out"
  python3 - "$2/wrk.out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(label):
    m = re.search(r"^\s*%s\s+([\d.]+)(us|ms|s)\s*$" % label, text, re.M)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
print(f"{rps:.0f} {ms('50%'):.2f} {ms('99%'):.2f} {int(bad.group(1)) if bad else 0}")
PY
}

# Runs wrk $RUNS times, appending each line to $workdir/$label.runs.
bench() { # label url workdir [script]
  for i in $(seq 1 "$RUNS"); do
    local line
    line="$(run_wrk "$2" "$3" "${4:-}")"
    echo "  $1 run $i: $line (req/s p50_ms p99_ms non_2xx)" >&2
    echo "$line" >>"$3/$1.runs"
  done
}

# Prints a table of medians for the labels given, with req/s ratios to the first.
report() { # workdir title label=description...
  python3 - "$@" <<'PY'
import statistics, sys
work, title, *rows = sys.argv[1:]
def load(name):
    data = [[float(x) for x in l.split()[:4]] for l in open(f"{work}/{name}.runs")]
    cols = list(zip(*data))
    return [statistics.median(c) for c in cols[:3]] + [sum(cols[3])]
print(f"\n{title}")
print(f"{'':<34}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}{'req/s ratio':>13}")
base = None
for row in rows:
    name, label = row.split("=", 1)
    rps, p50, p99, bad = load(name)
    base = base or rps
    print(f"{label:<34}{rps:>10.0f}{p50:>10.2f}{p99:>10.2f}{bad:>10.0f}{rps / base:>13.2f}")
PY
}
