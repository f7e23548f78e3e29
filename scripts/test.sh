#!/usr/bin/env bash
# `make test`: every check and test of the workspace, against a real Tansu
# broker and a real redis-server that this script starts on free ports and
# stops again, also when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-redis.sh
scripts/ensure-tansu.sh
scripts/ensure-chromium.sh
scripts/ensure-web.sh
scripts/ensure-jmeter.sh
scripts/ensure-moto.sh
tansu_bin="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"

work="$(mktemp -d -t chat-test.XXXXXX)"
pids=()
cleanup() {
  status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() { # name port
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "$1 did not start on port $2; its log:" >&2
  cat "$work/$1.log" >&2 || true
  return 1
}

redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$work" --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
wait_for_port redis "$redis_port"

kafka_port="$(free_port)"
"$tansu_bin" broker --listener-url "tcp://127.0.0.1:$kafka_port" \
  --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
  --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
pids+=($!)
wait_for_port tansu "$kafka_port"
# Tansu does not create topics on first use: create the default one.
"$tansu_bin" topic create chat-events --broker "tcp://127.0.0.1:$kafka_port" --partitions 3 >/dev/null

export KAFKA_BROKERS="127.0.0.1:$kafka_port"
export REDIS_URL="redis://127.0.0.1:$redis_port"
export TANSU_BIN="$tansu_bin"
echo "test services: Kafka (Tansu) $KAFKA_BROKERS, Redis $REDIS_URL"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The fault suite (faults/) runs the server binaries in processes of their own.
cargo build --workspace --bins
cargo test --workspace 2>&1 | tee "$work/cargo-test.log"
# A projector whose group Tansu left stalled after a member died rejoins.
scripts/tansu-group-stall.sh 2>&1 | tee "$work/group-stall.log"

# Every fuzz target for a few seconds (nightly, cargo-fuzz installed when absent).
FUZZ_SECONDS="${FUZZ_SECONDS:-10}" scripts/fuzz.sh 2>&1 | tee "$work/fuzz.log"

# The web UI: unit tests (Vitest), then end to end in headless Chromium
# against the binaries cargo test built.
(cd web && NO_COLOR=1 npx vitest run) 2>&1 | tee "$work/web-test.log"
node web/e2e/chat.e2e.mjs 2>&1 | tee "$work/web-e2e.log"

# The JMeter plans, each once at a tiny size under Debian's JMeter 2.13.
jmeter/test.sh 2>&1 | tee "$work/jmeter-test.log"

# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i - 1); if ($i ~ /^failed/) f += $(i - 1) } }
     /^ *Tests +[0-9]+ passed/ { p += $2 }
     /^ok   / { p += 1 } /^FAIL / { f += 1 }
     /^fuzz .*no crash$/ { p += 1 }
     END { printf "%d passed, %d failed\n", p, f }' "$work/cargo-test.log" "$work/web-test.log" "$work/web-e2e.log" "$work/jmeter-test.log" "$work/fuzz.log" "$work/group-stall.log"
