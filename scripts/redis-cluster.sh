#!/usr/bin/env bash
# Starts a local Redis Cluster of 3 masters and 3 replicas on 127.0.0.1, in
# the foreground until Ctrl-C (then it stops them all):
#   scripts/redis-cluster.sh [FIRST_PORT]      # ports FIRST_PORT..FIRST_PORT+5, default 7000
# Then, in another terminal:
#   REDIS_CLUSTER_NODES=127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002 make run
# Its files go to .run/redis-cluster (nothing is kept on disk: no AOF, no RDB).
# `make test` starts one of its own on free ports (scripts/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure.sh redis
source scripts/lib.sh
first="${1:-7000}"
ports=()
for i in 0 1 2 3 4 5; do ports+=($((first + i))); done
start_redis_cluster "${ports[@]}"
echo "Redis Cluster up: REDIS_CLUSTER_NODES=$REDIS_CLUSTER_NODES (Ctrl-C stops it)"
wait
