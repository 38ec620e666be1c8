#!/usr/bin/env bash
# Install the Debian tools the test suite drives: curl (the README's examples are
# executed as written), promtool (from the `prometheus` package, to validate
# the /metrics exposition), wrk (the load benchmark's smoke test) and chromium
# (headless, to prove /docs and /redoc render offline; Playwright drives this
# Debian build, it never downloads a browser) and Node.js with npm (a generated
# TypeScript client and the OpenAPI linters; the machine's apt sources decide
# the version, and those tools need Node 20.19 or later).
# Idempotent; does nothing when they are present.
set -euo pipefail

need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
[ "${#need[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing tools: ${need[*]}; install them with: sudo apt-get install ${need[*]}" >&2
  echo "(tests that need them are skipped outside CI)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# Other developers' installs may hold the dpkg lock: wait for it instead of failing.
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# NodeSource's nodejs carries npm; Debian's does not.
if ! command -v npm >/dev/null 2>&1; then
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends npm >/dev/null
fi
