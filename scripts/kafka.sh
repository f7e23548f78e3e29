#!/usr/bin/env bash
# Apache Kafka in KRaft mode on free loopback ports, from the jars that
# `scripts/ensure.sh kafka` copied from Maven Central. Every node is both
# broker and controller (combined mode): one node for the tests, three for
# the fault suite (a quorum of three controllers, so any one node may die).
#
#   scripts/kafka.sh prepare DIR NODES [key=value...]
#       writes DIR/node-<i>/server.properties for NODES nodes (1 or 3) on
#       free ports, formats each node's storage with Kafka's own storage
#       tool, and writes DIR/bootstrap (host:port,...) and DIR/node-<i>.port.
#       Extra key=value pairs go into every node's properties.
#   scripts/kafka.sh node DIR I
#       runs node I in the foreground (exec: the process is the JVM, so a
#       SIGKILL or SIGSTOP reaches the broker itself).
#   scripts/kafka.sh wait DIR [SECONDS]
#       waits until the cluster answers metadata with every node as a live
#       broker (default 120 s).
#   scripts/kafka.sh topic DIR NAME PARTITIONS
#       creates topic NAME unless it exists (Kafka's own topic tool), with
#       the nodes' default replication.
#   scripts/kafka.sh run DIR NODES [key=value...]
#       prepare, every node in the background, wait; prints the pids.
#
# KAFKA_HEAP (default 512m) bounds each node's heap. Sourcing scripts/lib.sh
# gives start_kafka, which runs this and stops the nodes on exit.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$root/deploy/kafka/pom.xml")"
libs="${KAFKA_LIBS:-$root/.run/kafka-$version/libs}"

java_cmd() { # main-class args...
  local main="$1"; shift
  exec_or=("${JAVA:-java}" "-Xmx${KAFKA_HEAP:-512m}" -Xss1m -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -Djava.awt.headless=true "-Dlog4j2.configurationFile=$root/deploy/kafka/log4j2.properties"
    -cp "$libs/*" "$main" "$@")
}

free_ports() { # count
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

prepare() { # dir nodes [key=value...]
  local dir="$1" nodes="$2"; shift 2
  [ -d "$libs" ] || { echo "no Kafka jars in $libs: run scripts/ensure.sh kafka" >&2; exit 1; }
  case "$nodes" in 1 | 3) ;; *) echo "scripts/kafka.sh: 1 or 3 nodes, not $nodes" >&2; exit 2 ;; esac
  mkdir -p "$dir"
  read -r -a ports <<<"$(free_ports $((nodes * 2)))"
  local voters=() bootstrap=() i
  for ((i = 1; i <= nodes; i++)); do
    voters+=("$i@127.0.0.1:${ports[$((nodes + i - 1))]}")
    bootstrap+=("127.0.0.1:${ports[$((i - 1))]}")
  done
  local replicas=$nodes min_isr=$((nodes > 1 ? 2 : 1))
  local id
  # A cluster id as Kafka's Uuid prints one: 16 random bytes in URL-safe
  # base64 without padding, not starting with "-".
  id="$(python3 -c 'import base64, os
while True:
    u = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    if not u.startswith("-"): print(u); break')"
  for ((i = 1; i <= nodes; i++)); do
    local node="$dir/node-$i" port="${ports[$((i - 1))]}" cport="${ports[$((nodes + i - 1))]}"
    mkdir -p "$node"
    {
      echo "process.roles=broker,controller"
      echo "node.id=$i"
      echo "controller.quorum.voters=$(IFS=,; echo "${voters[*]}")"
      echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
      echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port"
      echo "controller.listener.names=CONTROLLER"
      echo "inter.broker.listener.name=PLAINTEXT"
      echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
      echo "log.dirs=$node/data"
      echo "metadata.log.dir=$node/meta"
      # Durability: every partition on every node, a write acknowledged by
      # two, and never a replica that missed writes elected leader.
      echo "default.replication.factor=$replicas"
      echo "min.insync.replicas=$min_isr"
      echo "unclean.leader.election.enable=false"
      echo "offsets.topic.replication.factor=$replicas"
      echo "offsets.topic.num.partitions=3"
      echo "transaction.state.log.replication.factor=$replicas"
      echo "transaction.state.log.min.isr=$min_isr"
      echo "share.coordinator.state.topic.replication.factor=$replicas"
      echo "share.coordinator.state.topic.min.isr=$min_isr"
      echo "num.partitions=3"
      # Tests and benchmarks start groups often: no wait for more members.
      echo "group.initial.rebalance.delay.ms=0"
      echo "num.network.threads=2"
      echo "num.io.threads=4"
      echo "log.retention.hours=168"
      printf '%s\n' "$@"
    } >"$node/server.properties"
    java_cmd kafka.tools.StorageTool format --ignore-formatted -t "$id" -c "$node/server.properties"
    "${exec_or[@]}" >"$node/format.log" 2>&1 || { cat "$node/format.log" >&2; exit 1; }
    echo "$port" >"$dir/node-$i.port"
  done
  (IFS=,; echo "${bootstrap[*]}") >"$dir/bootstrap"
  echo "$nodes" >"$dir/nodes"
}

wait_ready() { # dir [seconds]
  local dir="$1" limit="${2:-120}" nodes first
  nodes="$(cat "$dir/nodes")"
  first="$(cut -d, -f1 "$dir/bootstrap")"
  local deadline=$((SECONDS + limit))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if python3 "$here/kafka-metadata.py" "$first" "$nodes" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "Kafka in $dir did not list $nodes live brokers within $limit s; its logs:" >&2
  tail -n 30 "$dir"/node-*.log >&2 2>/dev/null || true
  return 1
}

cmd="${1:-}"; shift || true
case "$cmd" in
  prepare) prepare "$@" ;;
  node)
    dir="$1" i="$2"
    java_cmd kafka.Kafka "$dir/node-$i/server.properties"
    exec "${exec_or[@]}" ;;
  wait) wait_ready "$@" ;;
  topic)
    dir="$1" name="$2" partitions="$3"
    java_cmd org.apache.kafka.tools.TopicCommand --bootstrap-server "$(cat "$dir/bootstrap")" \
      --create --if-not-exists --topic "$name" --partitions "$partitions"
    "${exec_or[@]}" >/dev/null ;;
  run)
    dir="$1" nodes="$2"
    prepare "$@"
    for ((i = 1; i <= nodes; i++)); do
      "$0" node "$dir" "$i" >"$dir/node-$i.log" 2>&1 &
      echo $!
    done
    wait_ready "$dir" ;;
  *) echo "usage: scripts/kafka.sh prepare|node|wait|topic|run DIR ..." >&2; exit 2 ;;
esac
