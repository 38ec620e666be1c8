#!/usr/bin/env bash
# Build the local base image localhost/pybase:bookworm that CI uses instead of
# python:3.12-slim: there is no registry to pull from here, only Debian's mirror.
#
# A Debian bookworm "minbase" rootfs with python3, venv, pip and CA certificates,
# plus this machine's extra CA certificates (outgoing TLS is intercepted by a
# local CA, so pip inside the image build fails without them). The rootfs
# tarball is cached in $HEART_CONTAINER_DIR and rebuilt only when its inputs
# change (mirror, package list, CA certificates, this script).
#
# Usage: scripts/make-base-image.sh [--force]
set -euo pipefail

# shellcheck source=scripts/container-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/container-lib.sh"

FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

SUITE=bookworm
INCLUDE=python3,python3-venv,python3-pip,ca-certificates
TARBALL="$HEART_CONTAINER_DIR/pybase-$SUITE.tar"
KEY_FILE="$TARBALL.key"

require_root
ensure_container_packages
setup_podman_env

MIRROR="$(debian_mirror)"
shopt -s nullglob
EXTRA_CAS=(/usr/local/share/ca-certificates/*.crt)
shopt -u nullglob

# Everything that changes the rootfs goes into the cache key.
cache_key() {
    {
        echo "$SUITE $INCLUDE $MIRROR"
        sha256sum "${BASH_SOURCE[0]}"
        ((${#EXTRA_CAS[@]})) && sha256sum "${EXTRA_CAS[@]}"
    } | sha256sum | cut -c1-16
}
KEY="$(cache_key)"

build_rootfs() {
    local rootfs="$HEART_CONTAINER_DIR/rootfs.tmp"
    rm -rf "$rootfs"
    mkdir -p "$rootfs"
    log "debootstrap $SUITE (minbase + $INCLUDE) from $MIRROR"
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$rootfs" "$MIRROR" \
        >"$HEART_CONTAINER_DIR/debootstrap.log" 2>&1 \
        || { tail -n 30 "$HEART_CONTAINER_DIR/debootstrap.log" >&2; die "debootstrap failed"; }

    if ((${#EXTRA_CAS[@]})); then
        log "adding ${#EXTRA_CAS[@]} extra CA certificate(s) from /usr/local/share/ca-certificates"
        mkdir -p "$rootfs/usr/local/share/ca-certificates"
        cp "${EXTRA_CAS[@]}" "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >>"$HEART_CONTAINER_DIR/debootstrap.log" 2>&1
    fi
    # pip inside the venv reads this too, so it trusts the same store as the system.
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\ndisable-pip-version-check = true\n' \
        >"$rootfs/etc/pip.conf"

    # Package lists and archives are only dead weight in an image.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log "$rootfs"/debootstrap

    log "packing rootfs into $TARBALL"
    tar --numeric-owner -C "$rootfs" -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
    echo "$KEY" >"$KEY_FILE"
    rm -rf "$rootfs"
}

if ((FORCE)) || [[ ! -f "$TARBALL" || "$(cat "$KEY_FILE" 2>/dev/null)" != "$KEY" ]]; then
    build_rootfs
else
    log "rootfs cache hit: $TARBALL (key $KEY)"
fi

current="$(podman image inspect --format '{{ index .Config.Labels "org.heart-risk.rootfs-key" }}' \
    "$BASE_IMAGE_REF" 2>/dev/null || true)"
if ((FORCE)) || [[ "$current" != "$KEY" ]]; then
    log "importing $TARBALL as $BASE_IMAGE_REF"
    podman import \
        --change "LABEL org.heart-risk.rootfs-key=$KEY" \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/usr/bin/python3"]' \
        "$TARBALL" "$BASE_IMAGE_REF" >/dev/null
else
    log "$BASE_IMAGE_REF is up to date (key $KEY)"
fi
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$BASE_IMAGE_REF"
