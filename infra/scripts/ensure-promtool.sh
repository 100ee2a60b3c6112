#!/usr/bin/env bash
# Provisions `promtool`, which checks infra/telemetry's Prometheus configuration and runs
# its alert-rule unit tests (tests/e2e/infra_configs.rs): Debian's `prometheus` package,
# from the system's own package registry. Idempotent: an installed promtool is reused.
# Needs root (or sudo) the first time. The package's service is not started by this.
set -euo pipefail
PROMTOOL="${ZIRAAI_TEST_PROMTOOL:-/usr/bin/promtool}"
if [ -x "$PROMTOOL" ]; then
  exit 0
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "promtool is missing and installing it needs root: apt-get install prometheus" >&2; exit 1; }
  as_root=(sudo)
fi
echo "installing Debian's prometheus (for promtool, the infra configuration test)" >&2
export DEBIAN_FRONTEND=noninteractive
# Another apt run may hold the lock briefly: wait for it instead of failing.
"${as_root[@]}" apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
"${as_root[@]}" apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends prometheus >&2
[ -x "$PROMTOOL" ] || { echo "apt-get installed prometheus but $PROMTOOL is missing" >&2; exit 1; }
