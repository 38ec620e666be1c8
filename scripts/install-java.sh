#!/usr/bin/env bash
# Install a Java runtime for Spark (`make spark-ci`): Debian's default-jre-headless
# (OpenJDK 17 on bookworm, what pyspark 4 needs). Idempotent; needs root.
set -euo pipefail

command -v java >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "no Java runtime; install one with: sudo apt-get install default-jre-headless" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Other developers' installs may hold the dpkg lock: wait for it, then retry once.
for attempt in 1 2; do
  if apt-get -o DPkg::Lock::Timeout=300 update -qq \
    && apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
      default-jre-headless >/dev/null; then
    break
  fi
  [ "$attempt" -eq 2 ] && exit 1
  sleep 10
done
java -version
