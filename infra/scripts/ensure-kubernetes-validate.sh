#!/usr/bin/env bash
# Provisions PyPI's kubernetes-validate (pinned, with its dependencies, from
# infra/scripts/kubernetes-validate.txt) into a virtualenv under .tools/ (git-ignored)
# and prints the path of its command. It bundles the Kubernetes JSON schemas, so the
# infra/k8s checks (tests/e2e/deploy) run offline once it is installed. Idempotent: a
# virtualenv with the pinned version is reused.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
requirements="$root/infra/scripts/kubernetes-validate.txt"
version="$(sed -n 's/^kubernetes-validate==//p' "$requirements")"
dir="$root/.tools/kubernetes-validate-$version"
bin="$dir/bin/kubernetes-validate"
if [ ! -x "$bin" ] || [ "$("$bin" --version 2>/dev/null)" != "$version" ]; then
  echo "provisioning kubernetes-validate $version into $dir" >&2
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    -r "$requirements" >&2
  [ "$("$bin" --version)" = "$version" ] || { echo "kubernetes-validate $version did not install" >&2; exit 1; }
fi
echo "$bin"
