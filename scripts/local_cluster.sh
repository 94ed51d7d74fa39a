#!/usr/bin/env bash
# A local two-node Ray cluster on one machine: a head node plus a second node on other ports.
#
#   eval "$(scripts/local_cluster.sh start)"  # sets RAY_ADDRESS=127.0.0.1:<port> RAY_AUTH_MODE=token
#   dvc repro                                  # the pipeline runs on the cluster
#   scripts/local_cluster.sh stop             # stops this cluster only
#   scripts/local_cluster.sh run -- dvc repro # start, run the command on it (RAY_ADDRESS set), stop
#
# Each node gets its own logical resource (node_head / node_second) so a test can see
# where work ran. Ports: GAN_RAY_PORT (default 6390) for the head, PORT+1..PORT+9 for the
# head's other servers, PORT+100..PORT+105 for the second node and 200 worker ports in
# 20000-29999 (see WORKER_PORTS); nodes use 127.0.0.1. GAN_RAY_CPUS_PER_NODE (default 2).
#
# The cluster lives in its own temp dir (GAN_RAY_TEMP_DIR, default /tmp/ray-gan-<port>),
# so that
#   - it never writes /tmp/ray/ray_current_cluster: a plain `ray.init()` elsewhere on this
#     machine keeps starting its own local Ray instead of joining this cluster;
#   - `stop` can find exactly its processes (every Ray daemon names the temp dir on its
#     command line; workers and agents are their children) and leave any other Ray on
#     the machine running. `ray stop` would kill every Ray process of every user.
set -euo pipefail
BIN="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin"
RAY="${RAY:-$BIN/ray}"
PORT="${GAN_RAY_PORT:-6390}"
CPUS="${GAN_RAY_CPUS_PER_NODE:-2}"
# 100 worker ports per node in 20000-29999, clear of Ray's defaults (6379, 8265, 10001,
# 10002-19999, 52365); two clusters collide only when their ports are equal modulo 50
WORKER_PORTS=$((20000 + (PORT % 50) * 200))
# short on purpose: Ray puts Unix sockets below it (socket paths are limited to 107 bytes)
TEMP_DIR="${GAN_RAY_TEMP_DIR:-/tmp/ray-gan-$PORT}"
export RAY_ENABLE_UV_RUN_RUNTIME_ENV=0
# Token authentication on both nodes and for every driver started by `run`: a node that
# joins without it is refused by a head that has it, and recent Ray turns it on for a
# head whenever ~/.ray/auth_token exists. RAY_AUTH_MODE=disabled opts out.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"

# PIDs of this cluster: processes whose command line names TEMP_DIR, plus all their
# descendants (raylet's workers and agents rename themselves to ray::..., so only the
# parent link ties them to this cluster).
cluster_pids() {
  # the directory goes through the environment, not awk's arguments, so awk never matches itself
  # -ww: full command lines, whatever COLUMNS says (ps cuts them to its width otherwise)
  ps -ww -eo pid=,ppid=,args= | GAN_DIR="$TEMP_DIR/" awk '
    { pid[NR] = $1; ppid[NR] = $2; if (index($0, ENVIRON["GAN_DIR"])) mine[$1] = 1 }
    END {
      grew = 1
      while (grew) {
        grew = 0
        for (i in pid) if (!(pid[i] in mine) && (ppid[i] in mine)) { mine[pid[i]] = 1; grew = 1 }
      }
      for (p in mine) print p
    }'
}

# The PIDs among "$@" that still run; a zombie (exited, not yet reaped by its parent) counts as gone.
alive() {
  [ $# -gt 0 ] || return 0
  ps -o pid=,stat= -p "$(echo "$@" | tr ' ' ',')" 2>/dev/null | awk '$2 !~ /^Z/ { printf "%s ", $1 }'
}

stop() {
  local pids left
  pids="$(cluster_pids | tr '\n' ' ')"
  [ -n "${pids// /}" ] || return 0
  # shellcheck disable=SC2086  # word splitting of the PID list is intended
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 1 50); do  # up to 10 s for a clean exit, then SIGKILL what is left
    # shellcheck disable=SC2086
    left="$(alive $pids)"
    [ -z "$left" ] && return 0
    sleep 0.2
  done
  # shellcheck disable=SC2086
  kill -KILL $left 2>/dev/null || true
}

start() {
  if [ -n "$(cluster_pids)" ]; then
    echo "error: a local cluster already runs in $TEMP_DIR (GAN_RAY_PORT=$PORT); run '$0 stop' first or choose another GAN_RAY_PORT." >&2
    exit 1
  fi
  mkdir -p "$TEMP_DIR"
  if [ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}" ] && [ -z "${RAY_AUTH_TOKEN_PATH:-}" ]; then
    "$RAY" get-auth-token --generate >/dev/null  # creates ~/.ray/auth_token only when missing
  fi
  local log="$TEMP_DIR/start.log"
  if ! "$RAY" start --head --node-ip-address=127.0.0.1 --port="$PORT" --num-cpus="$CPUS" \
      --temp-dir="$TEMP_DIR" --resources='{"node_head": 1}' --include-dashboard=false \
      --disable-usage-stats --dashboard-port=$((PORT + 1)) --node-manager-port=$((PORT + 2)) \
      --object-manager-port=$((PORT + 3)) --metrics-export-port=$((PORT + 4)) \
      --dashboard-agent-listen-port=$((PORT + 5)) --dashboard-agent-grpc-port=$((PORT + 6)) \
      --runtime-env-agent-port=$((PORT + 7)) \
      --min-worker-port="$WORKER_PORTS" --max-worker-port=$((WORKER_PORTS + 99)) >"$log" 2>&1 \
    || ! "$RAY" start --address="127.0.0.1:$PORT" --node-ip-address=127.0.0.1 --num-cpus="$CPUS" \
      --temp-dir="$TEMP_DIR" --resources='{"node_second": 1}' --disable-usage-stats \
      --node-manager-port=$((PORT + 100)) --object-manager-port=$((PORT + 101)) \
      --metrics-export-port=$((PORT + 102)) --dashboard-agent-listen-port=$((PORT + 103)) \
      --dashboard-agent-grpc-port=$((PORT + 104)) --runtime-env-agent-port=$((PORT + 105)) \
      --min-worker-port=$((WORKER_PORTS + 100)) --max-worker-port=$((WORKER_PORTS + 199)) >>"$log" 2>&1; then
    stop
    echo "error: the local cluster on port $PORT did not start; see $log (last line: $(grep -v '^\s*$' "$log" | tail -n 1))." >&2
    exit 1
  fi
  echo "export RAY_ADDRESS=127.0.0.1:$PORT RAY_AUTH_MODE=$RAY_AUTH_MODE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  run)
    shift; [ "${1:-}" = "--" ] && shift
    [ $# -gt 0 ] || { echo "usage: $0 run -- COMMAND [ARGS...]" >&2; exit 2; }
    trap stop EXIT
    trap 'exit 130' INT TERM  # runs the EXIT trap, so an interrupted run leaves no cluster behind
    start >/dev/null
    RAY_ADDRESS="127.0.0.1:$PORT" "$@"
    ;;
  *) echo "usage: $0 start|stop|run -- COMMAND" >&2; exit 2 ;;
esac
