#!/usr/bin/env bash
# `make run`: the whole pipeline on one machine, for development.
#   1. NATS: use ZIRAAI_NATS_URL if it answers; otherwise start the pinned nats-server
#      with nats/dev.conf on 127.0.0.1:4333 (not the system NATS on 4222) and a
#      git-ignored store in .run/.
#   2. One gateway (ziraai-gateway), the worker consuming jobs (ziraai-worker run), a
#      development analyzer with sample results (ziraai-worker dev-analyzer), and the
#      demo job submitter (ziraai-worker demo).
#   3. Prints where to watch; Ctrl-C stops everything it started.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
mkdir -p .run

export ZIRAAI_ENV="${ZIRAAI_ENV:-development}"
export ZIRAAI_NATS_URL="${ZIRAAI_NATS_URL:-nats://127.0.0.1:4333}"
export ZIRAAI_GATEWAY_LISTEN="${ZIRAAI_GATEWAY_LISTEN:-127.0.0.1:8080}"
export ZIRAAI_DEMO_USER="${ZIRAAI_DEMO_USER:-demo-farmer}"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "stopping…"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped."
}
trap cleanup EXIT
trap 'exit 0' INT TERM

answers() { # host:port
  local host="${1%:*}" port="${1##*:}"
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}
first_hostport() { # first URL of a comma-separated list, without scheme and credentials
  local u="${1%%,*}"
  u="${u#*://}"; u="${u##*@}"; u="${u%%/*}"
  echo "$u"
}
wait_for() { # what, seconds, command…
  local what="$1" secs="$2"; shift 2
  for _ in $(seq 1 $((secs * 10))); do
    if "$@"; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $what" >&2
  return 1
}

echo "building…"
cargo build --quiet --bins

nats_addr="$(first_hostport "$ZIRAAI_NATS_URL")"
if answers "$nats_addr"; then
  echo "NATS: using the server that answers at $ZIRAAI_NATS_URL"
else
  bin="$(infra/scripts/ensure-nats-server.sh)"
  echo "NATS: starting $("$bin" --version) on $nats_addr (store .run/nats-store, log .run/nats.log)"
  "$bin" -c nats/dev.conf -a "${nats_addr%:*}" -p "${nats_addr##*:}" -sd .run/nats-store >.run/nats.log 2>&1 &
  pids+=($!)
  wait_for "nats-server" 10 answers "$nats_addr"
fi

if answers "$ZIRAAI_GATEWAY_LISTEN"; then
  echo "something already listens on $ZIRAAI_GATEWAY_LISTEN (another make run?); stop it or set ZIRAAI_GATEWAY_LISTEN" >&2
  exit 1
fi
target/debug/ziraai-gateway &
pids+=($!)
wait_for "gateway readiness" 30 curl -fs -o /dev/null "http://$ZIRAAI_GATEWAY_LISTEN/health/ready"

export ZIRAAI_WORKER_LISTEN="${ZIRAAI_WORKER_LISTEN:-127.0.0.1:8081}"
export ZIRAAI_DEV_ANALYZER_LISTEN="${ZIRAAI_DEV_ANALYZER_LISTEN:-127.0.0.1:8082}"
export ZIRAAI_ANALYZER_URL="${ZIRAAI_ANALYZER_URL:-http://$ZIRAAI_DEV_ANALYZER_LISTEN/analyze}"
for addr in "$ZIRAAI_WORKER_LISTEN" "$ZIRAAI_DEV_ANALYZER_LISTEN"; do
  if answers "$addr"; then
    echo "something already listens on $addr; stop it or set ZIRAAI_WORKER_LISTEN / ZIRAAI_DEV_ANALYZER_LISTEN" >&2
    exit 1
  fi
done
target/debug/ziraai-worker dev-analyzer &
pids+=($!)
target/debug/ziraai-worker run &
pids+=($!)
wait_for "worker readiness" 30 curl -fs -o /dev/null "http://$ZIRAAI_WORKER_LISTEN/health/ready"
target/debug/ziraai-worker demo &
pids+=($!)

cat <<MSG

  ZiraAI Realtime is running (development).
    Browser:   http://$ZIRAAI_GATEWAY_LISTEN/demo    (notifications for $ZIRAAI_DEMO_USER arrive every few seconds)
    Terminal:  target/debug/ziraai-gateway watch --url ws://$ZIRAAI_GATEWAY_LISTEN/ws --user $ZIRAAI_DEMO_USER
    Submit:    ZIRAAI_NATS_URL=$ZIRAAI_NATS_URL target/debug/ziraai-worker submit --user $ZIRAAI_DEMO_USER --analysis 42
    Publish:   ZIRAAI_NATS_URL=$ZIRAAI_NATS_URL target/debug/ziraai-worker publish --user $ZIRAAI_DEMO_USER --analysis 43 --result '{"disease":"rust"}'
    Health:    curl http://$ZIRAAI_GATEWAY_LISTEN/health    curl http://$ZIRAAI_WORKER_LISTEN/health
  Pipeline:  demo submits a job to JOBS → worker calls the development analyzer (sample
             results only) → publishes to NOTIFY → gateway pushes to the socket.
  Ctrl-C stops everything.

MSG
wait -n "${pids[@]}" || true
echo "a process exited on its own; stopping the rest" >&2
exit 1
