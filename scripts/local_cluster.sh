#!/usr/bin/env bash
# A local two-node Ray cluster on one machine: a head node plus a second node on other ports.
#
#   scripts/local_cluster.sh start            # prints: export RAY_ADDRESS=127.0.0.1:<port>
#   RAY_ADDRESS=127.0.0.1:<port> dvc repro    # the pipeline runs on the cluster
#   scripts/local_cluster.sh stop
#   scripts/local_cluster.sh run -- dvc repro # start, run the command on it, stop
#
# Each node gets its own logical resource (node:head / node:second) so a test can see
# where work ran. Ports: GAN_RAY_PORT (default 6390) and the ranges below; all bind
# to 127.0.0.1.
set -euo pipefail
BIN="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin"
RAY="${RAY:-$BIN/ray}"
PORT="${GAN_RAY_PORT:-6390}"
CPUS="${GAN_RAY_CPUS_PER_NODE:-2}"
export RAY_ENABLE_UV_RUN_RUNTIME_ENV=0

start() {
  "$RAY" start --head --node-ip-address=127.0.0.1 --port="$PORT" --num-cpus="$CPUS" \
    --resources='{"node_head": 1}' --include-dashboard=false --disable-usage-stats \
    --min-worker-port=21000 --max-worker-port=21999 >/dev/null
  "$RAY" start --address="127.0.0.1:$PORT" --node-ip-address=127.0.0.1 --num-cpus="$CPUS" \
    --resources='{"node_second": 1}' --disable-usage-stats \
    --node-manager-port=$((PORT + 100)) --object-manager-port=$((PORT + 101)) \
    --metrics-export-port=$((PORT + 102)) --dashboard-agent-listen-port=$((PORT + 103)) \
    --dashboard-agent-grpc-port=$((PORT + 104)) --runtime-env-agent-port=$((PORT + 105)) \
    --min-worker-port=22000 --max-worker-port=22999 >/dev/null
  echo "export RAY_ADDRESS=127.0.0.1:$PORT"
}

stop() { "$RAY" stop --force >/dev/null 2>&1 || true; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  run)
    shift; [ "${1:-}" = "--" ] && shift
    trap stop EXIT
    start >/dev/null
    RAY_ADDRESS="127.0.0.1:$PORT" "$@"
    ;;
  *) echo "usage: $0 start|stop|run -- COMMAND" >&2; exit 2 ;;
esac
