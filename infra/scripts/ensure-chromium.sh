#!/usr/bin/env bash
# Provisions the headless browser the demo-page test drives: Debian's `chromium`, from
# the system's own package registry (no browser download at test time). Idempotent: an
# installed /usr/bin/chromium is reused. Needs root (or sudo) the first time.
set -euo pipefail
CHROMIUM="${ZIRAAI_TEST_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "chromium is missing and installing it needs root: apt-get install chromium" >&2; exit 1; }
  as_root=(sudo)
fi
echo "installing Debian's chromium (for the demo-page browser test)" >&2
export DEBIAN_FRONTEND=noninteractive
# Another apt run may hold the lock briefly: wait for it instead of failing.
"${as_root[@]}" apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
"${as_root[@]}" apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends chromium >&2
[ -x "$CHROMIUM" ] || { echo "apt-get installed chromium but $CHROMIUM is missing" >&2; exit 1; }
