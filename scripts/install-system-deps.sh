#!/usr/bin/env bash
# Install the Debian tools the test suite drives: curl (the README's examples are
# executed as written), promtool (from the `prometheus` package, to validate
# the /metrics exposition) and wrk (the load benchmark's smoke test).
# Idempotent; does nothing when they are present.
set -euo pipefail

need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[ "${#need[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing tools: ${need[*]}; install them with: sudo apt-get install ${need[*]}" >&2
  echo "(tests that need them are skipped outside CI)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
