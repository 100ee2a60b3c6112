#!/usr/bin/env bash
# `make run-cluster`: the pipeline on a 3-node JetStream cluster, on one machine.
#   1. Three pinned nats-servers with nats/cluster/n1.conf … n3.conf (server names n1..n3,
#      clients 4341-4343, monitoring 8341-8343, routes 6341-6343, all on loopback),
#      enforcing nats/auth.conf with fresh random passwords in .run/cluster/nats/, stores in
#      .run/cluster/nN/store, logs in .run/cluster/nN.log, pid files .run/cluster/nN.pid.
#      The operator provisions the streams with ZIRAAI_NATS_REPLICAS=3 (every service gets
#      it too, and all three URLs in ZIRAAI_NATS_URL).
#   2. Two gateways (127.0.0.1:8091 and :8092), HAProxy in front of them on
#      127.0.0.1:8090 (infra/haproxy/haproxy.cfg, log .run/cluster/haproxy.log), the
#      development analyzer (:8094), the worker (health :8093) and the demo job submitter.
#   3. Prints commands for a second terminal (watch through HAProxy, crash a node,
#      restart it…) and writes them, one per line, to .run/cluster/commands.txt
#      (tests/e2e/cluster_run.rs runs each).
#   4. Ctrl-C stops everything like `make run` (nodes last, a node that is down is
#      named). A node dying does not stop the rest: that is what the cluster is for.
#
# `run-cluster.sh restart nN` starts a stopped node again with its saved command line
# (same ports, same store) and returns once it has caught up with the cluster.
#
# Knobs (read here, not passed on to the services):
#   ZIRAAI_RUN_DIR                 stores, logs, pid files, commands.txt (default .run/cluster)
#   ZIRAAI_BIN_DIR, ZIRAAI_SKIP_BUILD=1, ZIRAAI_NATS_SERVER_BIN   as for run-dev.sh
#   ZIRAAI_HAPROXY_BIN             haproxy binary (default /usr/sbin/haproxy, `make haproxy`)
#   ZIRAAI_CLUSTER_CLIENT_PORTS    the nodes' client ports (default 4341,4342,4343)
#   ZIRAAI_CLUSTER_MONITOR_PORTS   their monitoring ports (default 8341,8342,8343)
#   ZIRAAI_CLUSTER_ROUTE_PORTS     their route ports (default 6341,6342,6343)
#   ZIRAAI_CLUSTER_LB_LISTEN       HAProxy's address (default 127.0.0.1:8090)
#   ZIRAAI_CLUSTER_GATEWAYS        the gateways' addresses (default 127.0.0.1:8091,127.0.0.1:8092)
# and the services' own: ZIRAAI_WORKER_LISTEN, ZIRAAI_DEV_ANALYZER_LISTEN,
# ZIRAAI_DEMO_USER, ZIRAAI_DEMO_INTERVAL, ZIRAAI_NATS_REPLICAS (default 3 here).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

default_run_dir=.run/cluster
run_dir="${ZIRAAI_RUN_DIR:-$default_run_dir}"
cred_dir="$run_dir/nats"
commands_file="$run_dir/commands.txt"
own_nats=1
# shellcheck source=infra/scripts/run-lib.sh
source infra/scripts/run-lib.sh

nodes=(n1 n2 n3)
saved_args() { echo "$run_dir/$1.args"; } # node: its nats-server command line, one word a line
arg_after() { # flag, words…: the word after the flag
  local flag="$1"; shift
  while [ $# -gt 1 ]; do
    if [ "$1" = "$flag" ]; then echo "$2"; return 0; fi
    shift
  done
  return 1
}
launch_node() { # node: starts it from its saved command line, in its own session
  local args=()
  mapfile -t args <"$(saved_args "$1")"
  rm -f "$run_dir/$1.pid"
  (exec_nats_server setsid "${args[@]}") </dev/null >>"$run_dir/$1.log" 2>&1 &
}
node_healthy() { # monitor port: JetStream on that node is current with the cluster
  curl -fs -o /dev/null "http://127.0.0.1:$1/healthz"
}

if [ "${1:-}" = restart ]; then
  node="${2:-}"
  if [[ ! " ${nodes[*]} " == *" $node "* ]]; then
    echo "usage: run-cluster.sh restart n1|n2|n3" >&2
    exit 2
  fi
  if [ ! -f "$(saved_args "$node")" ]; then
    echo "no cluster was started in $run_dir (make run-cluster)" >&2
    exit 1
  fi
  if pid="$(pid_in_file "$run_dir/$node.pid" nats-server)"; then
    echo "$node is running (pid $pid); stop it first: kill \$(cat $run_dir/$node.pid)" >&2
    exit 1
  fi
  mapfile -t words <"$(saved_args "$node")"
  launch_node "$node"
  wait_for "$node to rejoin the cluster" 60 node_healthy "$(arg_after -m "${words[@]}")"
  echo "restarted $node (pid $(cat "$run_dir/$node.pid")), caught up with the cluster (log $run_dir/$node.log)"
  exit 0
fi

bin_dir="${ZIRAAI_BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}"
bin_dir="${bin_dir#"$root"/}" # printed commands stay short when it is under the repo
skip_build="${ZIRAAI_SKIP_BUILD:-0}"
nats_bin="${ZIRAAI_NATS_SERVER_BIN:-}"
haproxy_bin="${ZIRAAI_HAPROXY_BIN:-/usr/sbin/haproxy}"
IFS=, read -r -a client_ports <<<"${ZIRAAI_CLUSTER_CLIENT_PORTS:-4341,4342,4343}"
IFS=, read -r -a monitor_ports <<<"${ZIRAAI_CLUSTER_MONITOR_PORTS:-8341,8342,8343}"
IFS=, read -r -a route_ports <<<"${ZIRAAI_CLUSTER_ROUTE_PORTS:-6341,6342,6343}"
lb="${ZIRAAI_CLUSTER_LB_LISTEN:-127.0.0.1:8090}"
IFS=, read -r -a gateways <<<"${ZIRAAI_CLUSTER_GATEWAYS:-127.0.0.1:8091,127.0.0.1:8092}"
unset ZIRAAI_RUN_DIR ZIRAAI_BIN_DIR ZIRAAI_SKIP_BUILD ZIRAAI_NATS_SERVER_BIN ZIRAAI_HAPROXY_BIN \
  ZIRAAI_CLUSTER_CLIENT_PORTS ZIRAAI_CLUSTER_MONITOR_PORTS ZIRAAI_CLUSTER_ROUTE_PORTS \
  ZIRAAI_CLUSTER_LB_LISTEN ZIRAAI_CLUSTER_GATEWAYS
three() { # variable, its words…
  local var="$1"; shift
  [ $# = 3 ] || { echo "$var: three entries are needed, got: $*" >&2; exit 2; }
}
three ZIRAAI_CLUSTER_CLIENT_PORTS "${client_ports[@]}"
three ZIRAAI_CLUSTER_MONITOR_PORTS "${monitor_ports[@]}"
three ZIRAAI_CLUSTER_ROUTE_PORTS "${route_ports[@]}"
[ "${#gateways[@]}" = 2 ] || { echo "ZIRAAI_CLUSTER_GATEWAYS: two addresses are needed, got: ${gateways[*]}" >&2; exit 2; }
mkdir -p "$run_dir"
rm -f "$commands_file"

export ZIRAAI_ENV="${ZIRAAI_ENV:-development}"
export ZIRAAI_NATS_REPLICAS="${ZIRAAI_NATS_REPLICAS:-3}"
urls=()
for p in "${client_ports[@]}"; do urls+=("nats://127.0.0.1:$p"); done
ZIRAAI_NATS_URL="$(IFS=,; echo "${urls[*]}")"
export ZIRAAI_NATS_URL
export ZIRAAI_WORKER_LISTEN="${ZIRAAI_WORKER_LISTEN:-127.0.0.1:8093}"
export ZIRAAI_DEV_ANALYZER_LISTEN="${ZIRAAI_DEV_ANALYZER_LISTEN:-127.0.0.1:8094}"
export ZIRAAI_ANALYZER_URL="${ZIRAAI_ANALYZER_URL:-http://$ZIRAAI_DEV_ANALYZER_LISTEN/analyze}"
export ZIRAAI_DEMO_USER="${ZIRAAI_DEMO_USER:-demo-farmer}"
demo_interval="${ZIRAAI_DEMO_INTERVAL:-5s}"

stop_on_signals
build_unless_skipped "$skip_build"
[ -x "$haproxy_bin" ] || infra/scripts/ensure-apt-tool.sh "$haproxy_bin" haproxy "make run-cluster's load balancer"

for i in 0 1 2; do
  refuse_busy "127.0.0.1:${client_ports[i]}" ZIRAAI_CLUSTER_CLIENT_PORTS
  refuse_busy "127.0.0.1:${monitor_ports[i]}" ZIRAAI_CLUSTER_MONITOR_PORTS
  refuse_busy "127.0.0.1:${route_ports[i]}" ZIRAAI_CLUSTER_ROUTE_PORTS
done
refuse_busy "$lb" ZIRAAI_CLUSTER_LB_LISTEN
refuse_busy "${gateways[0]}" ZIRAAI_CLUSTER_GATEWAYS
refuse_busy "${gateways[1]}" ZIRAAI_CLUSTER_GATEWAYS
refuse_busy "$ZIRAAI_WORKER_LISTEN" ZIRAAI_WORKER_LISTEN
refuse_busy "$ZIRAAI_DEV_ANALYZER_LISTEN" ZIRAAI_DEV_ANALYZER_LISTEN

nats_bin="$(ZIRAAI_NATS_SERVER_BIN="$nats_bin" infra/scripts/ensure-nats-server.sh)"
echo "NATS: starting 3 × $("$nats_bin" --version) (nats/cluster/, clients ${client_ports[*]}, logs and stores in $run_dir/, passwords $cred_dir/)"
new_passwords
routes="nats-route://127.0.0.1:${route_ports[0]},nats-route://127.0.0.1:${route_ports[1]},nats-route://127.0.0.1:${route_ports[2]}"
for i in 0 1 2; do
  node="${nodes[i]}"
  # The ports are those of nN.conf unless overridden; given here so that a restart
  # (from the saved command line) uses the same ones.
  printf '%s\n' "$nats_bin" -c "nats/cluster/$node.conf" -a 127.0.0.1 -p "${client_ports[i]}" \
    -m "${monitor_ports[i]}" --cluster "nats-route://127.0.0.1:${route_ports[i]}" \
    --routes "$routes" -sd "$run_dir/$node/store" -P "$run_dir/$node.pid" >"$(saved_args "$node")"
  launch_node "$node"
  track "nats $node" "@$run_dir/$node.pid"
done
for i in 0 1 2; do
  wait_for "nats ${nodes[i]} to join the cluster" 30 node_healthy "${monitor_ports[i]}"
done
provision_as_operator

for i in 0 1; do
  # shellcheck disable=SC2046 # as_user prints variable assignments for env
  start "gateway $((i + 1)) (ziraai-gateway, ${gateways[i]})" env ZIRAAI_GATEWAY_LISTEN="${gateways[i]}" \
    ZIRAAI_TRUSTED_PROXIES=127.0.0.1 $(as_user gateway) "$bin_dir/ziraai-gateway"
  wait_for "gateway $((i + 1)) readiness" 30 curl -fs -o /dev/null "http://${gateways[i]}/health/ready"
done
start "load balancer (haproxy, $lb)" env ZIRAAI_LB_LISTEN="$lb" ZIRAAI_LB_GATEWAY1="${gateways[0]}" \
  ZIRAAI_LB_GATEWAY2="${gateways[1]}" "$haproxy_bin" -db -f infra/haproxy/haproxy.cfg \
  >"$run_dir/haproxy.log" 2>&1
wait_for "haproxy" 30 curl -fs -o /dev/null "http://$lb/health/ready"
start_jobs_side

user="$ZIRAAI_DEMO_USER"
banner_commands "$lb" "$ZIRAAI_WORKER_LISTEN"
node_health_cmd="curl -fsS http://127.0.0.1:${monitor_ports[0]}/healthz"
crash_cmd="kill -KILL \$(cat $run_dir/n2.pid)"
restart_cmd="infra/scripts/run-cluster.sh restart n2"
if [ "$run_dir" != "$default_run_dir" ]; then
  restart_cmd="ZIRAAI_RUN_DIR=$run_dir $restart_cmd"
fi
cat <<MSG

  ZiraAI Realtime is running on a 3-node JetStream cluster (development): nodes n1-n3
  (clients ${client_ports[*]}, monitoring ${monitor_ports[*]}), gateways ${gateways[*]},
  HAProxy on $lb in front of them. In a second terminal, at the repo root:
MSG
print_banner_commands
cat <<MSG
              $node_health_cmd   (n1; n2, n3 on ${monitor_ports[1]}, ${monitor_ports[2]})
    Crash n2: $crash_cmd   (the watch keeps printing events)
    Restart:  $restart_cmd
  These commands, one per line: $commands_file.   Ctrl-C stops everything.

MSG
write_commands "$node_health_cmd" "$crash_cmd" "$restart_cmd"

wait_for_any_exit
