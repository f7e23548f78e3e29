# Shared by the benchmark scripts: ports, services, wrk. Source it.
# shellcheck shell=bash

pids=()

# Load generators post as one user and hold thousands of streams per
# address: the per-user and per-address limits would (rightly) stop them.
export USER_MESSAGES_PER_SEC=0 USER_REACTIONS_PER_SEC=0 MAX_STREAMS_PER_ADDRESS=0
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_ready() { # port
  for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "chat-server on port $1 did not become ready" >&2; return 1
}

ensure_wrk() {
  if ! command -v wrk >/dev/null; then
    echo "installing wrk with apt-get" >&2
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >/dev/null
  fi
}

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

# Starts redis-server, Tansu (memory storage) and the release chat-server
# on free ports; sets $port.
start_tansu() { # workdir
  local tansu_bin="${CARGO_HOME:-$HOME/.cargo}/bin/tansu" redis_port kafka_port
  redis_port="$(free_port)"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$1" >/dev/null 2>&1 &
  pids+=($!)
  kafka_port="$(free_port)"
  "$tansu_bin" broker --listener-url "tcp://127.0.0.1:$kafka_port" --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
    --storage-engine memory://tansu/ --silent >"$1/tansu.log" 2>&1 &
  pids+=($!)
  sleep 1
  port="$(free_port)"
  CHAT_SERVER_LISTEN="127.0.0.1:$port" KAFKA_BROKERS="127.0.0.1:$kafka_port" REDIS_URL="redis://127.0.0.1:$redis_port" \
    RUST_LOG=warn ./target/release/chat-server >"$1/tansu-server.log" 2>&1 &
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
