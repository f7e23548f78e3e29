#!/usr/bin/env bash
# publish-server beside nchan (nginx), Pushpin and Centrifugo, under one SSE
# load generator (sse-bench) and the same load: N subscribers over K chats,
# P posts per second per chat of SIZE bytes for DURATION seconds, all on
# 127.0.0.1. Rows: publish-server with events produced straight to Apache
# Kafka (one node; with a plain Kafka consumer beside it timing the same
# posts: the floor Kafka sets), with posts through chat-server (the full
# path), and produced straight to librdkafka's mock broker (what `make run`
# embeds: the earlier figures' broker, as a baseline); nchan with posts to
# its publisher location; Pushpin with posts to its HTTP publish endpoint
# and subscribers held by a tiny GRIP backend; Centrifugo (memory engine)
# with posts to its HTTP API and subscribers on its unidirectional SSE
# transport. Installs the peers when absent (OS packages; Centrifugo with
# `go install`), writes their configurations into a temporary folder (ports
# of their own), starts and stops everything itself. Each configuration
# runs RUNS times; the report gives medians with min-max, and a chart
# (deliveries/s and p99 against N) goes to OUT.
#   NS="1000 10000 50000" KS="1 1000" RUNS=3 DURATION=10 SIZE=100 OUT=bench/results \
#   ROWS="kafka chat-server kafka-mock nchan pushpin centrifugo" scripts/bench-peers.sh
# ROWS may also name kafka3 and chat-server3: the same two rows on a
# 3-node Apache Kafka (replication 3, min.insync.replicas 2).
set -euo pipefail
cd "$(dirname "$0")/.."
NS="${NS:-1000 10000 50000}" KS="${KS:-1 1000}" RUNS="${RUNS:-3}" DURATION="${DURATION:-10}"
SIZE="${SIZE:-100}" OUT="${OUT:-bench/results}" ROWS="${ROWS:-kafka chat-server kafka-mock nchan pushpin centrifugo}"
# Posts per second per chat: one hot chat gets 10/s; of many quiet chats each gets 1/s.
rate_for() { if [ "$1" -eq 1 ]; then echo 10; else echo "$1"; fi; }
source scripts/bench-lib.sh
scripts/ensure.sh nchan pushpin gnuplot
centrifugo_bin="$PWD/.run/centrifugo-6.9.1/centrifugo"
case " $ROWS " in *" centrifugo "*) scripts/ensure.sh centrifugo ;; esac
cargo build --release -p chat-server -p publish-server -p bench --bins
ulimit -n "$(ulimit -Hn)"
fd_limit="$(ulimit -n)"
mkdir -p "$OUT"
trap 'stop_backbone; stop_all; rm -rf "$work"' EXIT

# Apache Kafka (one node, as the tests run it) once for the whole run, with
# the topic made; Redis and chat-server afresh for each publish-server run.
# The mock broker (the kafka-mock row) afresh for each run too: it keeps
# every message in memory and its fetches slow down as its log grows,
# within a few runs of 10,000 messages (publish_event_delay_seconds, the
# Kafka hop, showed p99 from 5 ms in a first run to 500 ms in a third).
# The kafka3 and chat-server3 rows: the same on three combined nodes
# (replication 3, min.insync.replicas 2, as the fault suite runs it), a
# cluster of their own, so a run that measures both holds four JVMs.
apache_brokers="" apache3_brokers=""
case " $ROWS " in
  *" kafka "*|*" chat-server "*)
    start_kafka 1
    scripts/kafka.sh topic "$kafka_dir" chat-events 3
    apache_brokers="$KAFKA_BROKERS" ;;
esac
case " $ROWS " in
  *" kafka3 "*|*" chat-server3 "*)
    start_kafka 3
    scripts/kafka.sh topic "$kafka_dir" chat-events 3
    apache3_brokers="$KAFKA_BROKERS" ;;
esac
backbone=()
start_backbone() { # apache|apache3|mock
  local mock_addr="$work/mock.addr"
  start_redis
  backbone+=("${pids[-1]}")
  unset 'pids[-1]'
  if [ "$1" = mock ]; then
    : >"$mock_addr"
    ./target/release/sse-bench mock-broker --topic chat-events --partitions 3 >"$mock_addr" 2>"$work/mock.log" &
    backbone+=($!)
    for _ in $(seq 1 100); do [ -s "$mock_addr" ] && break; sleep 0.1; done
    KAFKA_BROKERS="$(head -n 1 "$mock_addr")"
  elif [ "$1" = apache3 ]; then
    KAFKA_BROKERS="$apache3_brokers"
  else
    KAFKA_BROKERS="$apache_brokers"
  fi
  export KAFKA_BROKERS RUST_LOG=warn KAFKA_CREATE_TOPIC=false
  chat_port="$(free_port)"
  CHAT_SERVER_LISTEN="127.0.0.1:$chat_port" ./target/release/chat-server >"$work/chat-server.log" 2>&1 &
  backbone+=($!)
  wait_ready "$chat_port"
}
stop_backbone() {
  for pid in "${backbone[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${backbone[@]}"; do wait "$pid" 2>/dev/null || true; done
  backbone=()
}

# How many server processes and client workers N needs under the file limit.
procs_for() { echo $(( ($1 + fd_limit - 2000) / (fd_limit - 1000) )); }

start_nginx() { # processes; sets nchan_port, server_pids
  nchan_port="$(free_port)"
  mkdir -p "$work/nginx"
  cat >"$work/nginx/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes $1;
worker_rlimit_nofile $fd_limit;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections $fd_limit; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server {
    listen 127.0.0.1:$nchan_port reuseport;
    location ~ ^/pub/([\\w-]+)\$ { nchan_publisher; nchan_channel_id \$1; nchan_message_buffer_length 100; }
    location ~ ^/sub/([\\w-]+)\$ { nchan_subscriber eventsource; nchan_channel_id \$1; }
  }
}
CONF
  nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g 'daemon off;' >"$work/nginx/out.log" 2>&1 &
  nginx_pid=$!
  for _ in $(seq 1 50); do curl -fsS -X POST -d warm "http://127.0.0.1:$nchan_port/pub/warm" >/dev/null 2>&1 && break; sleep 0.1; done
  server_pids="$nginx_pid,$(pgrep -P "$nginx_pid" | paste -sd, - || true)"
}

start_pushpin() { # sets pushpin_port, publish_port, server_pids
  # Its internal ports follow a random offset, which can collide: retry.
  local attempt
  for attempt in 1 2 3; do
    start_pushpin_once && return 0
    echo "  Pushpin did not start (attempt $attempt); retrying" >&2
    stop_pid "$pushpin_pid"; stop_pid "$backend_pid"
  done
  return 1
}

start_pushpin_once() {
  local dir="$work/pushpin" offset=$(( 20000 + RANDOM % 20000 ))
  rm -rf "$dir"; mkdir -p "$dir/run" "$dir/log"
  pushpin_port="$(free_port)" publish_port=$((5561 + offset))
  backend_port="$(free_port)"
  cat >"$dir/backend.py" <<'PY'
# A GRIP backend: every stream request is held by Pushpin on the channel
# named by the last path segment. asyncio, so bursts of thousands of
# subscribes are answered at once; one request per connection.
import asyncio, sys

async def answer(reader, writer):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode()
        channel = path.split("?")[0].rstrip("/").split("/")[-1]
        body = b": ok\n\n"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nGrip-Hold: stream\r\n"
            + f"Grip-Channel: {channel}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, IndexError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(answer, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    await server.serve_forever()

asyncio.run(main())
PY
  python3 "$dir/backend.py" "$backend_port" &
  backend_pid=$!
  # Debian's internal.conf points the proxy at a system zurl: run our own.
  sed -e "s#^rundir=.*#rundir=$dir/run#" -e "s#^logdir=.*#logdir=$dir/log#" \
      -e "s#^port_offset=.*#port_offset=$offset#" -e "s#^http_port=.*#http_port=127.0.0.1:$pushpin_port#" \
      -e "s#^routesfile=.*#routesfile=$dir/routes#" -e "s#^services=.*#services=condure,zurl,pushpin-proxy,pushpin-handler#" \
      -e "s#^client_maxconn=.*#client_maxconn=$fd_limit#" \
      -e "s#^message_rate=.*#message_rate=10000000#" -e "s#^message_hwm=.*#message_hwm=10000000#" \
      -e "s#^\[proxy\]#[proxy]\nzurl_out_specs=ipc://{rundir}/{ipc_prefix}zurl-in\nzurl_out_stream_specs=ipc://{rundir}/{ipc_prefix}zurl-in-stream\nzurl_in_specs=ipc://{rundir}/{ipc_prefix}zurl-out#" \
      /etc/pushpin/pushpin.conf >"$dir/pushpin.conf"
  echo "* 127.0.0.1:$backend_port" >"$dir/routes"
  pushpin --config "$dir/pushpin.conf" >"$dir/out.log" 2>&1 &
  pushpin_pid=$!
  local up=""
  for _ in $(seq 1 100); do
    curl -fsS -X POST -d '{"items":[]}' "http://127.0.0.1:$publish_port/publish/" >/dev/null 2>&1 && up=1 && break
    sleep 0.1
  done
  # Its proxy and handler finish connecting after the publish port opens.
  sleep 2
  server_pids="$(pgrep -P "$pushpin_pid" | paste -sd, - || true)"
  [ -n "$up" ] && [ -n "$server_pids" ] && kill -0 "$pushpin_pid" 2>/dev/null
}

start_centrifugo() { # sets centrifugo_port, centrifugo_pid, server_pids
  # One node, memory engine; clients connect without a token (benchmark
  # only) and name their channel in the uni_sse connect request; history
  # and presence off (their defaults), no connection limits.
  local dir="$work/centrifugo"
  centrifugo_port="$(free_port)"
  mkdir -p "$dir"
  cat >"$dir/config.json" <<JSON
{
  "http_server": {"address": "127.0.0.1", "port": $centrifugo_port},
  "log": {"level": "error"},
  "usage_stats": {"disabled": true},
  "client": {"insecure": true, "connection_limit": 0, "connection_rate_limit": 0},
  "channel": {"without_namespace": {"presence": false, "join_leave": false, "history_size": 0}},
  "websocket": {"disabled": true},
  "uni_sse": {"enabled": true},
  "http_api": {"key": "bench"}
}
JSON
  "$centrifugo_bin" -c "$dir/config.json" >"$dir/out.log" 2>&1 &
  centrifugo_pid=$!
  for _ in $(seq 1 100); do
    curl -fsS -X POST -H 'X-API-Key: bench' -d '{"channel":"warm","data":{}}' \
      "http://127.0.0.1:$centrifugo_port/api/publish" >/dev/null 2>&1 && break
    sleep 0.1
  done
  server_pids="$centrifugo_pid"
}

stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
failed_run() { echo "{\"row\":\"$1\",\"n\":$2,\"k\":$3,\"failed\":true}" >>"$OUT/peers.jsonl"; } # row n k

bench_row() { # row n k run
  local row="$1" n="$2" k="$3" i="$4" procs workers urls=() ps_pids=() port publish_args=()
  procs="$(procs_for "$n")"; workers=$(( procs + 1 ))
  local rate=$(( $(rate_for "$k") ))
  case "$row" in
    kafka|chat-server|kafka3|chat-server3|kafka-mock)
      for _ in $(seq 1 "$procs"); do
        port="$(free_port)"
        PUBLISH_SERVER_LISTEN="127.0.0.1:$port" ./target/release/publish-server >>"$work/publish.log" 2>&1 &
        ps_pids+=($!); urls+=("http://127.0.0.1:$port/api/chats/{chat}/events")
        wait_ready "$port"
      done
      server_pids="$(IFS=,; echo "${ps_pids[*]}")"
      # publish-server's own histograms over the posting: the bucket bound
      # holding the 99th percentile of the Kafka hop (producer to reader,
      # publish_event_delay_seconds) and of its own share (hub to socket,
      # publish_fanout_delay_seconds), over all its processes.
      local metrics_urls; metrics_urls="$(printf '%s\n' "${urls[@]}" | sed 's#/api/.*##' | paste -sd, -)"
      publish_args=(--metrics-url "$metrics_urls" --post-url "http://127.0.0.1:$chat_port/api/chats/{chat}/messages"
        --kafka-brokers "$KAFKA_BROKERS" --kafka-topic chat-events)
      if [ "$row" = chat-server ] || [ "$row" = chat-server3 ]; then publish_args+=(--publish chat-server)
      else publish_args+=(--publish kafka --floor --floor-fetch-wait-ms "${KAFKA_FETCH_WAIT_MS:-10}"); fi ;;
    centrifugo)
      start_centrifugo
      urls=("http://127.0.0.1:$centrifugo_port/connection/uni_sse?cf_connect=%7B%22subs%22%3A%7B%22{chat}%22%3A%7B%7D%7D%7D")
      publish_args=(--publish centrifugo --publish-url "http://127.0.0.1:$centrifugo_port/api/publish"
        --publish-api-key bench) ;;
    nchan)
      start_nginx "$procs"
      urls=("http://127.0.0.1:$nchan_port/sub/{chat}")
      publish_args=(--publish nchan --publish-url "http://127.0.0.1:$nchan_port/pub/{chat}") ;;
    pushpin)
      if ! start_pushpin; then failed_run pushpin "$n" "$k"; return 0; fi
      urls=("http://127.0.0.1:$pushpin_port/stream/{chat}")
      # Its handler answers 500 to a few of 200 subscribes opened at once.
      publish_args=(--publish pushpin --publish-url "http://127.0.0.1:$publish_port/publish/" --connect-concurrency 50) ;;
  esac
  local url_list; url_list="$(IFS=,; echo "${urls[*]}")"
  echo "== $row N=$n K=$k run $i" >&2
  if ./target/release/sse-bench run --json --subscribe-url "$url_list" --server-pid "$server_pids" \
      --subscribers "$n" --chats "$k" --rate "$(( rate ))" --size "$SIZE" --duration "$DURATION" \
      --workers "$workers" --source-addrs 8 --chat-prefix "peers-$row-$n-$k-$i" "${publish_args[@]}" \
      >"$work/out.json" 2>"$work/bench.err"; then
    tail -n 1 "$work/out.json" | python3 -c "import json,sys; d=json.load(sys.stdin); d.update(row='$row', n=$n, k=$k); print(json.dumps(d))" >>"$OUT/peers.jsonl"
  else
    echo "  failed: $(tail -n 3 "$work/bench.err" | tr '\n' ' ')" >&2
    failed_run "$row" "$n" "$k"
  fi
  case "$row" in
    kafka|chat-server|kafka3|chat-server3|kafka-mock) for pid in "${ps_pids[@]}"; do stop_pid "$pid"; done ;;
    centrifugo) stop_pid "$centrifugo_pid" ;;
    nchan) stop_pid "$nginx_pid" ;;
    pushpin) stop_pid "$pushpin_pid"; stop_pid "$backend_pid" ;;
  esac
}

: >"$OUT/peers.jsonl"
# A broker whose JVM has not compiled its hot paths yet is slower for its
# first tens of thousands of records (p99 among quiet chats was 26-28 ms in runs after
# a warm-up of 100 records, 13.5 ms late in the whole table's run): two
# runs of 10,000 records first, not recorded.
warm_up() { # backbone row
  echo "== warming Apache Kafka ($1) up (not recorded)" >&2
  recorded="$OUT"; OUT="$work/warm-up"; mkdir -p "$OUT"
  start_backbone "$1"
  bench_row "$2" 1000 1000 0
  bench_row "$2" 1000 1000 00
  stop_backbone
  OUT="$recorded"
}
if [ -n "$apache_brokers" ]; then warm_up apache kafka; fi
if [ -n "$apache3_brokers" ]; then warm_up apache3 kafka3; fi
for n in $NS; do
  for k in $KS; do
    for i in $(seq 1 "$RUNS"); do
      for row in $ROWS; do
        if [ "$row" = pushpin ] && [ "$n" -gt $(( fd_limit - 1000 )) ]; then
          echo "{\"row\":\"pushpin\",\"n\":$n,\"k\":$k,\"skipped\":\"condure is one process; $fd_limit file descriptors per process\"}" >>"$OUT/peers.jsonl"
          continue
        fi
        # One node of the memory engine is one process: several would need
        # a broker between them (Redis, NATS), which is not what is measured.
        if [ "$row" = centrifugo ] && [ "$n" -gt $(( fd_limit - 1000 )) ]; then
          echo "{\"row\":\"centrifugo\",\"n\":$n,\"k\":$k,\"skipped\":\"one node is one process; $fd_limit file descriptors per process\"}" >>"$OUT/peers.jsonl"
          continue
        fi
        case "$row" in
          kafka|chat-server) start_backbone apache ;;
          kafka3|chat-server3) start_backbone apache3 ;;
          kafka-mock) start_backbone mock ;;
        esac
        bench_row "$row" "$n" "$k" "$i"
        stop_backbone
      done
    done
  done
done
python3 scripts/peers-report.py "$OUT/peers.jsonl" "$OUT/peers.png"
