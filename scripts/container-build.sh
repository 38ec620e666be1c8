#!/usr/bin/env bash
# Build the heart-api image with podman on a machine that cannot reach a
# container registry (as root): the recipe `make container-smoke` uses, alone.
#
#   sudo scripts/container-build.sh [TAG]      # default TAG: heart-api
#
# The base image is made locally from the Debian mirror apt already uses
# (scripts/make-base-image.sh, cached in .cache/containers), then the
# Dockerfile is built on it with --pull=never. podman's storage is private to
# this checkout (.cache/containers): run podman through the same settings to use
# the image, e.g.
#   sudo bash -c 'source scripts/container-lib.sh; setup_podman_env; podman run --rm -p 8000:8000 heart-api'
# With a registry, the plain `docker build -t heart-api .` is all you need.
set -euo pipefail

# shellcheck source=scripts/container-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/container-lib.sh"

TAG="${1:-heart-api}"
require_root
ensure_container_packages
setup_podman_env
"$REPO_ROOT/scripts/make-base-image.sh"
cd "$REPO_ROOT"
log "building $TAG on $BASE_IMAGE_REF"
podman build --pull=never --format docker --isolation chroot --network host \
    --build-arg BASE_IMAGE="$BASE_IMAGE_REF" -t "$TAG" .
log "built $TAG: podman (with this checkout's settings) can run it now"
