#!/usr/bin/env bash
# `make run`: the whole pipeline on one machine, for development.
#   1. NATS: use ZIRAAI_NATS_URL if it answers; otherwise start the pinned nats-server
#      with nats/dev.conf on 127.0.0.1:4333 (not the system NATS on 4222) and a
#      git-ignored store in .run/. That server enforces nats/auth.conf: fresh random
#      passwords are written to .run/nats/<user>.password (never printed), the
#      operator provisions the streams (ziraai-worker provision), and each service
#      connects as its own user (ZIRAAI_NATS_USER + ZIRAAI_NATS_PASSWORD_FILE).
#   2. One gateway (ziraai-gateway), the worker consuming jobs (ziraai-worker run), a
#      development analyzer with sample results (ziraai-worker dev-analyzer), and the
#      demo job submitter (ziraai-worker demo).
#   3. Prints commands to paste into a second terminal at the repo root, and writes
#      them, one per line, to .run/commands.txt (tests/e2e/banner.rs runs each).
#   4. Ctrl-C (or SIGTERM, or closing the terminal) stops everything it started, says what it stopped, exits 0.
#      A process that dies on its own is named, the rest are stopped, exit status 1.
# What it shares with run-cluster.sh (starting, stopping, passwords) is in run-lib.sh.
#
# Knobs (read here, not passed on to the services):
#   ZIRAAI_RUN_DIR             store, logs and commands.txt (default .run)
#   ZIRAAI_BIN_DIR             where the binaries are (default target/debug)
#   ZIRAAI_SKIP_BUILD=1        do not run cargo build (the binaries exist)
#   ZIRAAI_NATS_SERVER_BIN     nats-server binary to start (default: the pinned one)
#   ZIRAAI_NATS_MONITOR_PORT   its monitoring port (default 8333, from nats/dev.conf)
# and the services' own: ZIRAAI_NATS_URL, ZIRAAI_GATEWAY_LISTEN, ZIRAAI_WORKER_LISTEN,
# ZIRAAI_DEV_ANALYZER_LISTEN, ZIRAAI_DEMO_USER, ZIRAAI_DEMO_INTERVAL.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

run_dir="${ZIRAAI_RUN_DIR:-.run}"
bin_dir="${ZIRAAI_BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}"
bin_dir="${bin_dir#"$root"/}" # printed commands stay short when it is under the repo
skip_build="${ZIRAAI_SKIP_BUILD:-0}"
nats_bin="${ZIRAAI_NATS_SERVER_BIN:-}"
nats_monitor_port="${ZIRAAI_NATS_MONITOR_PORT:-8333}"
unset ZIRAAI_RUN_DIR ZIRAAI_BIN_DIR ZIRAAI_SKIP_BUILD ZIRAAI_NATS_SERVER_BIN ZIRAAI_NATS_MONITOR_PORT
mkdir -p "$run_dir"
commands_file="$run_dir/commands.txt"
rm -f "$commands_file"

export ZIRAAI_ENV="${ZIRAAI_ENV:-development}"
export ZIRAAI_NATS_URL="${ZIRAAI_NATS_URL:-nats://127.0.0.1:4333}"
export ZIRAAI_GATEWAY_LISTEN="${ZIRAAI_GATEWAY_LISTEN:-127.0.0.1:8080}"
export ZIRAAI_WORKER_LISTEN="${ZIRAAI_WORKER_LISTEN:-127.0.0.1:8081}"
export ZIRAAI_DEV_ANALYZER_LISTEN="${ZIRAAI_DEV_ANALYZER_LISTEN:-127.0.0.1:8082}"
export ZIRAAI_ANALYZER_URL="${ZIRAAI_ANALYZER_URL:-http://$ZIRAAI_DEV_ANALYZER_LISTEN/analyze}"
export ZIRAAI_DEMO_USER="${ZIRAAI_DEMO_USER:-demo-farmer}"
demo_interval="${ZIRAAI_DEMO_INTERVAL:-5s}"

# shellcheck source=infra/scripts/run-lib.sh
source infra/scripts/run-lib.sh
stop_on_signals

build_unless_skipped "$skip_build"

# Credentials of the users in nats/auth.conf, one file each; empty when the server is
# not ours (then the services use whatever ZIRAAI_NATS_* says).
cred_dir="$run_dir/nats"
start_nats() { # like start, with each password in nats-server's environment only
  (exec_nats_server "$nats_bin" -c nats/dev.conf -a "${nats_addr%:*}" -p "${nats_addr##*:}" \
    -m "$nats_monitor_port" -sd "$run_dir/nats-store") >"$run_dir/nats.log" 2>&1 &
  track nats-server $!
}

own_nats=""
nats_addr="$(first_hostport "$ZIRAAI_NATS_URL")"
if answers "$nats_addr"; then
  echo "NATS: using the server that answers at $ZIRAAI_NATS_URL"
else
  own_nats=1
  nats_bin="$(ZIRAAI_NATS_SERVER_BIN="$nats_bin" infra/scripts/ensure-nats-server.sh)"
  echo "NATS: starting $("$nats_bin" --version) on $nats_addr with nats/auth.conf (store $run_dir/nats-store, log $run_dir/nats.log, passwords $cred_dir/)"
  new_passwords
  start_nats
  wait_for "nats-server" 10 answers "$nats_addr"
  provision_as_operator
fi

refuse_busy "$ZIRAAI_GATEWAY_LISTEN" ZIRAAI_GATEWAY_LISTEN
refuse_busy "$ZIRAAI_WORKER_LISTEN" ZIRAAI_WORKER_LISTEN
refuse_busy "$ZIRAAI_DEV_ANALYZER_LISTEN" ZIRAAI_DEV_ANALYZER_LISTEN
# shellcheck disable=SC2046 # as_user prints variable assignments for env
start "gateway (ziraai-gateway)" env $(as_user gateway) "$bin_dir/ziraai-gateway"
wait_for "gateway readiness" 30 curl -fs -o /dev/null "http://$ZIRAAI_GATEWAY_LISTEN/health/ready"
start_jobs_side

user="$ZIRAAI_DEMO_USER"
banner_commands "$ZIRAAI_GATEWAY_LISTEN" "$ZIRAAI_WORKER_LISTEN"
echo
echo "  ZiraAI Realtime is running (development). In a second terminal, at the repo root:"
print_banner_commands
cat <<MSG
  Pipeline: demo submits a job to JOBS → worker calls the development analyzer (sample
            results only) → publishes to NOTIFY → gateway pushes to the sockets.
  These commands, one per line: $commands_file.   Ctrl-C stops everything.

MSG
write_commands

wait_for_any_exit
