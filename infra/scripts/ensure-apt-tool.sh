#!/usr/bin/env bash
# Provisions a test tool from Debian's own package registry (nothing downloaded at test
# time): `ensure-apt-tool.sh BINARY PACKAGE WHY`. Idempotent: an installed BINARY is
# reused. Needs root (or sudo) the first time. Used for `chromium` (the demo-page
# browser test; ZIRAAI_TEST_CHROMIUM overrides the path) and `promtool` from
# `prometheus` (infra/telemetry checks; ZIRAAI_TEST_PROMTOOL; its service is not
# started by this), `systemd-analyze` from `systemd` (infra/systemd checks;
# ZIRAAI_TEST_SYSTEMD_ANALYZE), and `haproxy` (make run-cluster's load balancer and its
# tests; ZIRAAI_TEST_HAPROXY; under systemd the package also starts
# its service, whose default /etc/haproxy/haproxy.cfg listens on no port).
set -euo pipefail
binary="$1" package="$2" why="$3"
if [ -x "$binary" ]; then
  exit 0
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "$binary is missing and installing it needs root: apt-get install $package" >&2; exit 1; }
  as_root=(sudo -n)
fi
echo "installing Debian's $package ($why)" >&2
export DEBIAN_FRONTEND=noninteractive
# Another apt run may hold the lock briefly: wait for it instead of failing.
"${as_root[@]}" apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
"${as_root[@]}" apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$package" >&2
[ -x "$binary" ] || { echo "apt-get installed $package but $binary is missing" >&2; exit 1; }
