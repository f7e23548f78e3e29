# The chat backend's two commands: `make run` and `make test`.

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: run test check fuzz build bench-post bench-fetch bench-sse bench-hot bench-tick bench-peers fmt clippy

## Run the whole system locally: the web UI, chat-server, publish-server, scheduler (embedded Kafka unless KAFKA_BROKERS; KAFKA=local: Apache Kafka and Redis that keep their data under .run/; local redis-server unless REDIS_URL).
run:
	@if [ -z "$$REDIS_URL" ]; then scripts/ensure.sh redis; fi
	scripts/ensure.sh web
	$(CARGO) build -p chat-server -p publish-server -p scheduler --bins
	@if [ "$$KAFKA" = local ]; then exec scripts/run-local-kafka.sh; else exec ./target/debug/chat-dev; fi

## Run every check and test against Apache Kafka (from Maven Central) and redis-server (installed when absent).
test:
	scripts/test.sh

## The quick loop: formatting, lints and the Rust tests, against their own Apache Kafka and redis-server.
check:
	QUICK=1 scripts/test.sh

## Fuzz every decoder and validator that takes outside input, FUZZ_SECONDS per target (default 10).
fuzz:
	scripts/fuzz.sh

build:
	$(CARGO) build --workspace

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Measure POST throughput and latency (wrk) against the embedded broker and Apache Kafka.
bench-post:
	scripts/bench-post.sh

## Measure fetch throughput and latency (wrk) and the delay from a 201 to the message being fetchable.
bench-fetch:
	scripts/bench-fetch.sh

## Measure SSE fan-out: 50,000 subscribers, deliveries/s, post-to-receipt latency, losses, RSS per connection; then 10,000 people on 10 chats each, one stream against ten.
bench-sse:
	scripts/bench-sse.sh

## Measure a hot chat's snapshot for 10,000 members against the same server's cold fetch and /healthz, its Redis calls, what mine and counting cost.
bench-hot:
	scripts/bench-hot.sh

## How long the scheduler's tick holds Redis with 100,000 chats fetched in one second (CHATS, HOT, RUNS).
bench-tick:
	scripts/bench-tick.sh

## publish-server beside nchan and Pushpin under one SSE load (NS, KS, RUNS, DURATION, SIZE, OUT).
bench-peers:
	scripts/bench-peers.sh
