# shellcheck shell=bash
# What `make run` (run-dev.sh) and `make run-cluster` (run-cluster.sh) share: starting
# processes, stopping them in order on Ctrl-C, waiting for a port or a condition, and
# the NATS users' generated passwords. Sourced, never run.
#
# The sourcing script sets, before calling these:
#   commands_file  the banner's commands file (removed on stop)
#   cred_dir       where the users' password files are (<user>.password)
#   own_nats       non-empty when the script started NATS itself (then services connect
#                  as their own users of nats/auth.conf)
# and keeps what it started in `pids` / `names` (start and track do that). A `pids`
# entry `@FILE` is a process known by its pid file (a NATS node that can be killed and
# restarted from another terminal): it is stopped when its file names a live process.

pids=()
names=()
start() { # name, command…: runs it in the background and remembers it
  local name="$1"; shift
  # In its own session: a terminal's Ctrl-C reaches this script (and make) only, and
  # the script stops the processes in order (newest first, NATS last).
  setsid "$@" &
  pids+=($!)
  names+=("$name")
}
track() { # name, pid or @pid-file: remembers a process started otherwise
  names+=("$1")
  pids+=("$2")
}
alive() { # pid: running (not exited, not a zombie waiting to be reaped)
  local st
  st="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
  [[ -n "$st" && "$st" != Z* ]]
}
pid_in_file() { # pid file, program: its pid when that process runs PROGRAM; else fails
  local pid
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  [[ "$(ps -o args= -p "$pid" 2>/dev/null)" == *"$2"* ]] || return 1 # a reused pid
  echo "$pid"
}
stop_grace=15 # seconds a process gets after SIGTERM before SIGKILL
stop_one() { # name, pid
  local name="$1" pid="$2"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((stop_grace * 10))); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    kill -KILL "$pid" 2>/dev/null || true
    echo "killed $name (pid $pid): still running ${stop_grace}s after SIGTERM"
  fi
  wait "$pid" 2>/dev/null || true
  echo "stopped $name (pid $pid)"
}
stop_all() { # newest first, so NATS stops last
  # Keep stopping even if the terminal (or whoever read our output) is gone: echo then
  # fails instead of SIGPIPE ending the script with its children still running.
  set +e
  trap '' PIPE
  local i pid
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid="${pids[i]}"
    if [[ "$pid" == @* ]]; then
      if ! pid="$(pid_in_file "${pid#@}" nats-server)"; then
        echo "${names[i]} was not running"
        continue
      fi
    fi
    stop_one "${names[i]}" "$pid"
  done
  pids=()
  names=()
}
on_signal() {
  trap - INT TERM HUP
  set +e
  echo
  echo "stopping…"
  stop_all
  rm -f "$commands_file"
  echo "all stopped."
  exit 0
}
stop_on_signals() {
  trap on_signal INT TERM HUP # HUP: the terminal closed
  trap stop_all EXIT
}
wait_for_any_exit() { # returns when a started child ends by itself; then the script exits 1
  local dead="" status=0 children=() i
  for i in "${!pids[@]}"; do
    [[ "${pids[i]}" == @* ]] || children+=("${pids[i]}")
  done
  wait -n -p dead "${children[@]}" || status=$?
  # A stop signal runs on_signal (which exits 0) before this line; reaching it means a
  # process ended by itself.
  for i in "${!pids[@]}"; do
    if [ "${pids[i]}" = "$dead" ]; then
      echo "${names[i]} (pid $dead) exited on its own with status $status; stopping the rest" >&2
      unset 'pids[i]' 'names[i]'
      pids=("${pids[@]}")
      names=("${names[@]}")
      break
    fi
  done
  exit 1
}

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
refuse_busy() { # address, variable that moves it
  if answers "$1"; then
    echo "something already listens on $1 (another make run?); stop it or set $2" >&2
    exit 1
  fi
}
build_unless_skipped() { # $1: ZIRAAI_SKIP_BUILD's value
  if [ "$1" != 1 ]; then
    echo "building…"
    cargo build --quiet --locked --bins
  fi
}

# Credentials of the users in nats/auth.conf, one file each in $cred_dir.
nats_users=(gateway worker platform operator)
as_user() { # user: the variables that make a service connect as that user
  if [ -n "$own_nats" ]; then
    echo "ZIRAAI_NATS_USER=$1 ZIRAAI_NATS_PASSWORD_FILE=$cred_dir/$1.password"
  fi
}
new_passwords() { # fresh random passwords, readable by this user only
  local u
  rm -rf "$cred_dir"
  (umask 077 && mkdir -p "$cred_dir")
  for u in "${nats_users[@]}"; do
    (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$cred_dir/$u.password")
  done
}
exec_nats_server() { # nats-server, arguments…: execs it with each password in its environment only
  local u
  for u in "${nats_users[@]}"; do
    export "ZIRAAI_NATS_${u^^}_PASSWORD=$(cat "$cred_dir/$u.password")"
  done
  exec "$@"
}
provision_as_operator() { # applies nats/streams and nats/consumers (quiet unless it fails)
  # Our users authenticate with their own files, not with a credential set here.
  unset ZIRAAI_NATS_USER ZIRAAI_NATS_PASSWORD ZIRAAI_NATS_PASSWORD_FILE ZIRAAI_NATS_TOKEN \
    ZIRAAI_NATS_TOKEN_FILE ZIRAAI_NATS_CREDS_FILE
  # shellcheck disable=SC2046 # as_user prints variable assignments for env
  env $(as_user operator) "$bin_dir/ziraai-worker" provision >/dev/null
}

start_jobs_side() { # the development analyzer, the worker (until ready), the demo job submitter
  start "development analyzer (ziraai-worker dev-analyzer)" "$bin_dir/ziraai-worker" dev-analyzer
  # shellcheck disable=SC2046
  start "worker (ziraai-worker run)" env $(as_user worker) "$bin_dir/ziraai-worker" run
  wait_for "worker readiness" 30 curl -fs -o /dev/null "http://$ZIRAAI_WORKER_LISTEN/health/ready"
  # shellcheck disable=SC2046
  start "demo job submitter (ziraai-worker demo)" env $(as_user platform) "$bin_dir/ziraai-worker" demo
}

banner_commands() { # gateway (or load balancer) host:port, worker health host:port
  # Sets the commands both banners print: watch_cmd, submit_cmd, publish_cmd, admin_cmd,
  # operator_cmd, gateway_health_cmd, worker_health_cmd (for $user on $ZIRAAI_NATS_URL),
  # and gw.
  gw="$1"
  # The replicas the script provisioned, when not the default 1 (make run-cluster): a
  # producer given fewer would warn that the streams have more.
  local with_nats="ZIRAAI_NATS_URL=$ZIRAAI_NATS_URL${ZIRAAI_NATS_REPLICAS:+ ZIRAAI_NATS_REPLICAS=$ZIRAAI_NATS_REPLICAS}"
  watch_cmd="$bin_dir/ziraai-gateway watch --url ws://$gw/ws --user $user"
  # Job submitters connect as `platform`, producers as `worker` (the password stays in its file).
  submit_cmd="$with_nats $(as_user platform) $bin_dir/ziraai-worker submit --user $user --analysis 42"
  submit_cmd="${submit_cmd//  / }"
  publish_cmd="$with_nats $(as_user worker) $bin_dir/ziraai-worker publish --user $user --analysis 43 --result '{\"disease\":\"leaf rust\",\"confidence\":0.93}'"
  publish_cmd="${publish_cmd//  / }"
  operator_cmd="$with_nats $(as_user operator) $bin_dir/ziraai-gateway admin user $user --json"
  operator_cmd="${operator_cmd//  / }"
  admin_cmd="curl -fsS -H \"Authorization: Bearer \$($bin_dir/ziraai-gateway token --user ops --role Admin)\" 'http://$gw/api/v1/admin/deliveries?userId=$user'"
  gateway_health_cmd="curl -fsS http://$gw/health"
  worker_health_cmd="curl -fsS http://$2/health"
}
print_banner_commands() { # the banner lines both scripts show, from browser to health
  cat <<MSG
    Browser:  http://$gw/demo   (notifications for $user, a new one every $demo_interval)
    Watch:    $watch_cmd
    Submit:   $submit_cmd
    Publish:  $publish_cmd
    Admin:    $admin_cmd
    Operator: $operator_cmd
    Health:   $gateway_health_cmd
              $worker_health_cmd
MSG
}
write_commands() { # more commands…: the banner's commands, one per line, to $commands_file
  # Called after the banner, so whoever reads the file finds the banner printed.
  printf '%s\n' "$watch_cmd" "$submit_cmd" "$publish_cmd" "$admin_cmd" "$operator_cmd" \
    "$gateway_health_cmd" "$worker_health_cmd" "$@" >"$commands_file.tmp"
  mv "$commands_file.tmp" "$commands_file"
}
