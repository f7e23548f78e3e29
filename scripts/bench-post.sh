#!/usr/bin/env bash
# POST throughput and latency of chat-server (release build), measured with
# wrk on 127.0.0.1, against the embedded mock broker and against Tansu.
# Each setup runs RUNS times; the medians are printed, and Tansu's figures as
# a ratio to the embedded broker's. Client and server share the machine.
#   DURATION=15s CONNECTIONS=50 THREADS=2 RUNS=3 scripts/bench-post.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-15s}"
CONNECTIONS="${CONNECTIONS:-50}"
THREADS="${THREADS:-2}"
RUNS="${RUNS:-3}"

if ! command -v wrk >/dev/null; then
  echo "installing wrk with apt-get" >&2
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >/dev/null
fi
scripts/ensure-redis.sh
scripts/ensure-tansu.sh
tansu_bin="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
cargo build --release -p chat-server --bins

work="$(mktemp -d -t chat-bench.XXXXXX)"
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_ready() { # port
  for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "chat-server on port $1 did not become ready" >&2; return 1
}

# Prints "requests_per_second p50_ms p99_ms non_2xx" for one wrk run.
run_wrk() { # port
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s scripts/post.lua \
    "http://127.0.0.1:$1" >"$work/wrk.out"
  python3 - "$work/wrk.out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(label):
    m = re.search(r"^\s*%s\s+([\d.]+)(us|ms|s)\s*$" % label, text, re.M)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
errors = re.search(r"Socket errors:.*", text)
print(f"{rps:.0f} {ms('50%'):.2f} {ms('99%'):.2f} {int(bad.group(1)) if bad else 0}{' ' + errors.group(0) if errors else ''}")
PY
}

bench() { # label port
  for i in $(seq 1 "$RUNS"); do
    line="$(run_wrk "$2")"
    echo "  $1 run $i: $line (req/s p50_ms p99_ms non_2xx)" >&2
    echo "$line" >>"$work/$1.runs"
  done
}

# Setup 1: the embedded mock broker (chat-dev), its own redis-server.
port="$(free_port)"
CHAT_SERVER_LISTEN="127.0.0.1:$port" DEV_REDIS_PORT="$(free_port)" DEV_DATA_DIR="$work/dev" \
  RUST_LOG=warn ./target/release/chat-dev >"$work/embedded.log" 2>&1 &
pids+=($!)
wait_ready "$port"
bench embedded "$port"
stop_all

# Setup 2: Tansu (memory storage) and redis-server, out of process.
redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
pids+=($!)
kafka_port="$(free_port)"
"$tansu_bin" broker --listener-url "tcp://127.0.0.1:$kafka_port" --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
  --storage-engine memory://tansu/ --silent >"$work/tansu.log" 2>&1 &
pids+=($!)
sleep 1
port="$(free_port)"
CHAT_SERVER_LISTEN="127.0.0.1:$port" KAFKA_BROKERS="127.0.0.1:$kafka_port" REDIS_URL="redis://127.0.0.1:$redis_port" \
  RUST_LOG=warn ./target/release/chat-server >"$work/tansu-server.log" 2>&1 &
pids+=($!)
wait_ready "$port"
bench tansu "$port"
stop_all

python3 - "$work" "$RUNS" "$DURATION" "$CONNECTIONS" "$THREADS" <<'PY'
import statistics, sys
work, runs, duration, conns, threads = sys.argv[1:]
def load(name):
    rows = [l.split()[:4] for l in open(f"{work}/{name}.runs")]
    cols = list(zip(*[[float(x) for x in r] for r in rows]))
    return [statistics.median(c) for c in cols[:3]] + [sum(cols[3])]
base = load("embedded")
print(f"\nPOST /api/chats/{{chat}}/messages, wrk -t{threads} -c{conns} -d{duration}, median of {runs} runs, release build, 2 cores shared by client and server")
print(f"{'broker':<22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}{'req/s ratio':>13}")
for name, label in [("embedded", "embedded mock broker"), ("tansu", "Tansu 0.6.0 (memory)")]:
    rps, p50, p99, bad = load(name)
    print(f"{label:<22}{rps:>10.0f}{p50:>10.2f}{p99:>10.2f}{bad:>10.0f}{rps / base[0]:>13.2f}")
PY
