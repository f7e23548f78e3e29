#!/usr/bin/env bash
# `make test`: every check and test of the workspace, against Apache Kafka
# (one node; the fault suite starts 3-node clusters of its own) and a real
# redis-server that this script starts on free ports and
# stops again, also when a step fails. With QUICK=1 (`make check`): only
# formatting, lints and the Rust tests.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK="${QUICK:-0}"

if [ "$QUICK" = 1 ]; then
  scripts/ensure.sh redis kafka
else
  scripts/ensure.sh redis kafka chromium web jmeter jmeter5 schemathesis
fi
source scripts/lib.sh
start_redis
start_kafka 1
echo "test services: Apache Kafka $KAFKA_BROKERS, Redis $REDIS_URL"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The fault suite (faults/) runs the server binaries in processes of their own.
cargo build --workspace --bins
cargo test --workspace 2>&1 | tee "$work/cargo-test.log"
[ "$QUICK" = 1 ] && exit 0
# The servers' integration tests again, against a Redis Cluster of 3
# masters and 3 replicas (the tests that kill a Redis of their own keep
# their single one).
start_redis_cluster
echo "test services: Redis Cluster $REDIS_CLUSTER_NODES"
REDIS_CLUSTER_NODES="$REDIS_CLUSTER_NODES" cargo test -p chat-server -p publish-server -p scheduler 2>&1 \
  | tee "$work/cargo-test-cluster.log"
unset REDIS_CLUSTER_NODES

# Every fuzz target for a few seconds (nightly, cargo-fuzz installed when absent).
FUZZ_SECONDS="${FUZZ_SECONDS:-10}" scripts/fuzz.sh 2>&1 | tee "$work/fuzz.log"

# The API description against the server: property-based, every operation.
scripts/conformance.sh 2>&1 | tee "$work/conformance.log"

# The web UI: unit tests (Vitest), then end to end in headless Chromium
# against the binaries cargo test built.
(cd web && NO_COLOR=1 npx vitest run) 2>&1 | tee "$work/web-test.log"
node web/e2e/chat.e2e.mjs 2>&1 | tee "$work/web-e2e.log"

# The HTTP/2 front (deploy/nginx): curl --http2 and Chromium through it.
scripts/nginx-test.sh 2>&1 | tee "$work/nginx-test.log"

# The JMeter plans, each once at a tiny size under Debian's JMeter 2.13 and
# under Apache JMeter 5.6.3 from Maven Central.
jmeter/test.sh 2>&1 | tee "$work/jmeter-test.log"

# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i - 1); if ($i ~ /^failed/) f += $(i - 1) } }
     /^ *Tests +[0-9]+ passed/ { p += $2 }
     /^ok   / { p += 1 } /^FAIL / { f += 1 }
     /^fuzz .*no crash$/ { p += 1 }
     END { printf "%d passed, %d failed\n", p, f }' "$work/cargo-test.log" "$work/cargo-test-cluster.log" "$work/web-test.log" "$work/web-e2e.log" "$work/jmeter-test.log" "$work/nginx-test.log" "$work/fuzz.log" "$work/conformance.log"
