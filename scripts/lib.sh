# What the scripts share: free ports, starting redis-server and Apache Kafka on
# them, and stopping everything started, also when a step fails. Source it;
# it sets an EXIT trap that stops the processes in $pids and removes $work.
# shellcheck shell=bash

pids=()
work="$(mktemp -d -t chat.XXXXXX)"

# Stops every process this script started, newest last.
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}

cleanup() {
  local status=$?
  # A failed run against a Redis Cluster says what the cluster went through:
  # failovers, lost links, resyncs.
  if [ "$status" -ne 0 ]; then
    for log in "$work"/cluster-[0-9]*.log; do
      [ -f "$log" ] || continue
      echo "--- $(basename "$log"): failovers, lost links and resyncs" >&2
      grep -E 'FAIL|ailover|Cluster state changed|MASTER MODE|Connection with|PSYNC|resync' "$log" | tail -n 20 >&2 || true
    done
  fi
  stop_all
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A TCP port free on 127.0.0.1 now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A port free on 127.0.0.1 for a Redis Cluster node: its bus port, 10,000
# higher, must be free too and at most 65535.
free_cluster_port() {
  python3 -c '
import random, socket
while True:
    port = random.randint(20000, 55000)
    try:
        for p in (port, port + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", p)); s.close()
    except OSError:
        continue
    print(port)
    break'
}

# Waits until something listens on 127.0.0.1:port; prints $work/name.log if not.
wait_for_port() { # name port
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "$1 did not start on port $2; its log:" >&2
  cat "$work/$1.log" >&2 || true
  return 1
}

# Starts a redis-server of this script's own on a free port; sets
# $redis_port and exports REDIS_URL.
start_redis() {
  redis_port="$(free_port)"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work" --daemonize no >"$work/redis.log" 2>&1 &
  pids+=($!)
  wait_for_port redis "$redis_port"
  export REDIS_URL="redis://127.0.0.1:$redis_port"
}

# Starts a Redis Cluster of 3 masters and 3 replicas (on the six given
# ports, else on free ones), waits until every slot is served, and exports
# REDIS_CLUSTER_NODES (the masters' addresses) and sets $cluster_ports.
start_redis_cluster() { # [port x6]
  cluster_ports=("$@")
  if [ ${#cluster_ports[@]} -eq 0 ]; then
    for _ in 1 2 3 4 5 6; do cluster_ports+=("$(free_cluster_port)"); done
  fi
  local nodes=()
  for port in "${cluster_ports[@]}"; do
    mkdir -p "$work/cluster-$port"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "$work/cluster-$port/nodes.conf" --cluster-node-timeout 2000 \
      --save "" --appendonly no --dir "$work/cluster-$port" --daemonize no \
      >"$work/cluster-$port.log" 2>&1 &
    pids+=($!)
    wait_for_port "cluster-$port" "$port"
    nodes+=("127.0.0.1:$port")
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$work/cluster-create.log" 2>&1 \
    || { cat "$work/cluster-create.log" >&2; return 1; }
  for port in "${cluster_ports[@]}"; do
    for _ in $(seq 1 300); do
      if redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; then break; fi
      sleep 0.1
    done
  done
  # Every replica in sync: one that never finished its first sync cannot
  # take over.
  for _ in $(seq 1 600); do
    local in_sync=0
    for port in "${cluster_ports[@]}"; do
      if redis-cli -p "$port" info replication 2>/dev/null | grep -q '^master_link_status:up'; then
        in_sync=$((in_sync + 1))
      fi
    done
    [ "$in_sync" -eq 3 ] && break
    sleep 0.1
  done
  if [ "$in_sync" -ne 3 ]; then
    echo "Redis Cluster: only $in_sync of 3 replicas in sync with their master after 60 s" >&2
    return 1
  fi
  export REDIS_CLUSTER_NODES
  REDIS_CLUSTER_NODES="$(IFS=,; echo "${nodes[*]:0:3}")"
}

# Starts Apache Kafka in KRaft mode (scripts/kafka.sh: 1 node, or 3 for a
# replicated cluster) on free ports with its log under $work, after fetching
# its jars if they are absent; waits until every node is a live broker; sets
# $kafka_dir and exports KAFKA_BROKERS. The nodes stop with everything else.
start_kafka() { # [nodes] [key=value...]
  local nodes="${1:-1}"; shift || true
  "$(dirname "${BASH_SOURCE[0]}")/ensure.sh" kafka
  # A folder of its own each time: a second cluster in one script must
  # not find the first one's storage (formatting refuses another cluster id).
  kafka_dir="$(mktemp -d "$work/kafka.XXXXXX")"
  "$(dirname "${BASH_SOURCE[0]}")/kafka.sh" prepare "$kafka_dir" "$nodes" "$@"
  for ((i = 1; i <= nodes; i++)); do
    "$(dirname "${BASH_SOURCE[0]}")/kafka.sh" node "$kafka_dir" "$i" >"$kafka_dir/node-$i.log" 2>&1 &
    pids+=($!)
  done
  "$(dirname "${BASH_SOURCE[0]}")/kafka.sh" wait "$kafka_dir"
  export KAFKA_BROKERS
  KAFKA_BROKERS="$(cat "$kafka_dir/bootstrap")"
}

# Waits until chat-server (or any of ours) on port answers /readyz.
wait_ready() { # port [name]
  for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "${2:-chat-server} on port $1 did not become ready" >&2; return 1
}
