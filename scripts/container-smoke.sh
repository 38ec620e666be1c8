#!/usr/bin/env bash
# Build the image with podman, run it, and prove it serves like the source does.
#
#   sudo scripts/container-smoke.sh          # what CI runs (as root)
#
# Steps: install podman & co. if missing; build the local base image (rootfs
# cached in .cache/containers); build heart-api:test from the Dockerfile; check
# the runtime image is lean; run it the way the Kubernetes manifests do
# (non-root, read-only root fs, no capabilities) and, side by side, the service
# from source (.venv) with the same model; compare the docs' curl examples,
# /metrics in both formats, the user id, the HEALTHCHECK; run it again with a
# mounted artifact and an API key; finally SIGTERM and check a clean exit 0
# within the grace period. Every container and server is removed on exit.
#
# Environment: IMAGE (default heart-api:test), STOP_TIMEOUT (default 20),
# VENV_PYTHON (the interpreter of the source service, default .venv/bin/python),
# NO_CACHE=1 (rebuild every layer, to time a full build), HEART_STORAGE_DRIVER
# (overlay|vfs), HEART_CONTAINER_DIR (cache and storage).
set -euo pipefail

# shellcheck source=scripts/container-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/container-lib.sh"
cd "$REPO_ROOT"

IMAGE="${IMAGE:-heart-api:test}"
STOP_TIMEOUT="${STOP_TIMEOUT:-20}"
NO_CACHE="${NO_CACHE:-0}"
VENV_PYTHON="${VENV_PYTHON:-$REPO_ROOT/.venv/bin/python}"
NAME="heart-smoke-$$"
WORK="$(mktemp -d)"
SOURCE_PID=""
CONTAINERS=()

cleanup() {
    local status=$?
    local c
    for c in "${CONTAINERS[@]}"; do
        podman rm --force --time 0 "$c" >/dev/null 2>&1 || true
    done
    if [[ -n "$SOURCE_PID" ]] && kill -0 "$SOURCE_PID" 2>/dev/null; then
        kill "$SOURCE_PID" 2>/dev/null || true
        wait "$SOURCE_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    if ((status != 0)); then
        log "container smoke test FAILED (exit $status)"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# podman --health-* flags print systemd errors here (no systemd to run timers);
# the healthcheck itself is run on demand below.
podman_quiet() { podman "$@" 2> >(grep -v 'unable to get systemd connection' >&2); }

show_logs() { podman logs --tail 40 "$1" >&2 2>&1 || true; }

require_root
ensure_container_packages
command -v curl >/dev/null || die "curl is needed to run the docs' examples"
[[ -x "$VENV_PYTHON" ]] || die "no .venv: run 'make test' (or pip install -e '.[dev]') first"
setup_podman_env

# --- build ------------------------------------------------------------------
t0=$SECONDS
"$REPO_ROOT/scripts/make-base-image.sh"
base_seconds=$((SECONDS - t0))

VERSION="$("$VENV_PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
cache_flag=()
[[ "$NO_CACHE" == 1 ]] && cache_flag=(--no-cache)
log "building $IMAGE (version $VERSION, revision ${REVISION:0:12}${cache_flag:+, no layer cache})"
t0=$SECONDS
podman build --pull=never --format docker --isolation chroot --network host \
    --build-arg BASE_IMAGE="$BASE_IMAGE_REF" \
    --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" \
    "${cache_flag[@]}" -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
    || { tail -n 40 "$WORK/build.log" >&2; die "podman build failed"; }
build_seconds=$((SECONDS - t0))
image_bytes="$(podman image inspect --format '{{.Size}}' "$IMAGE")"
image_mb="$(awk -v b="$image_bytes" 'BEGIN { printf "%.0f", b / 1e6 }')"
base_mb="$(podman image inspect --format '{{.Size}}' "$BASE_IMAGE_REF" | awk '{ printf "%.0f", $1 / 1e6 }')"
log "built $IMAGE: $image_mb MB (base $base_mb MB) in ${build_seconds}s"

healthcheck="$(podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE")"
[[ "$healthcheck" == *"/health"* ]] || die "image has no HEALTHCHECK (built with --format docker?): $healthcheck"

# --- the runtime image is lean -----------------------------------------------
podman_quiet run --rm --network host --entrypoint /opt/venv/bin/python "$IMAGE" -c '
import importlib.util, shutil, sys
unwanted = [m for m in ("pip", "setuptools", "pytest", "hypothesis", "mypy", "ruff", "keras",
                        "tensorflow", "matplotlib", "httpx", "schemathesis",
                        "pyarrow", "pandas", "dask")
            if importlib.util.find_spec(m)]
tools = [t for t in ("gcc", "cc", "make", "curl", "wget") if shutil.which(t)]
missing = [p for p in ("/opt/heart/model.joblib",) if not __import__("os").path.isfile(p)]
for path in ("/src", "/opt/heart/tests", "/opt/heart/data"):
    if __import__("os").path.exists(path):
        missing.append("unexpected " + path)
if unwanted or tools or missing:
    sys.exit(f"not lean: modules {unwanted}, tools {tools}, files {missing}")
' || die "runtime image carries what it should not"
log "runtime image is lean: no pip, test or training-only packages, no compilers or curl"

# --- the image's model, served from source as the reference -----------------
podman create --name "$NAME-cp" "$IMAGE" >/dev/null
CONTAINERS+=("$NAME-cp")
podman cp "$NAME-cp:/opt/heart/model.joblib" "$WORK/model.joblib"
podman_quiet rm "$NAME-cp" >/dev/null

SOURCE_PORT="$(free_port)"
log "starting the service from source on port $SOURCE_PORT"
env -u HEART_API_KEY HEART_MODEL_PATH="$WORK/model.joblib" HEART_PORT="$SOURCE_PORT" \
    HEART_HOST=127.0.0.1 HEART_WORKERS=1 HEART_LOG_LEVEL=warning \
    "$VENV_PYTHON" -m app >"$WORK/source.log" 2>&1 &
SOURCE_PID=$!

# --- run it as Kubernetes would ----------------------------------------------
PORT="$(free_port)"
log "starting $IMAGE on port $PORT (read-only root, no capabilities, non-root)"
podman_quiet run -d --name "$NAME" --network host \
    --read-only --tmpfs /tmp:rw,size=16m --cap-drop ALL --security-opt no-new-privileges \
    -e HEART_PORT="$PORT" "$IMAGE" >/dev/null
CONTAINERS+=("$NAME")

if ! python3 scripts/container-check.py \
    --container "http://127.0.0.1:$PORT" --source "http://127.0.0.1:$SOURCE_PORT"; then
    show_logs "$NAME"
    tail -n 20 "$WORK/source.log" >&2
    die "the container does not serve like the source"
fi

# The image is the core install: columnar bodies must get the 415 that names the extra.
table_answer="$(curl -s -o "$WORK/table.json" -w '%{http_code}' -X POST \
    -H 'Content-Type: text/csv' --data-binary $'age\n54\n' "http://127.0.0.1:$PORT/predict/table")"
if [[ "$table_answer" != 415 ]] || ! grep -q 'bulk' "$WORK/table.json"; then
    die "POST /predict/table without pyarrow: HTTP $table_answer, $(cat "$WORK/table.json")"
fi
log "/predict/table answers 415 naming the bulk extra (the image has no pyarrow)"

uid="$(podman exec "$NAME" id -u)"
pid1_user="$(podman top "$NAME" user | awk 'NR == 2 { print $1 }')"
[[ "$uid" != 0 && "$pid1_user" != root && "$pid1_user" != 0 ]] \
    || die "container runs as root (id -u: $uid, podman top: $pid1_user)"
log "server runs as uid $uid (podman top: user $pid1_user)"

podman_quiet healthcheck run "$NAME" >/dev/null || die "podman healthcheck run: unhealthy"
health="$(podman inspect --format '{{.State.Health.Status}}' "$NAME")"
[[ "$health" == healthy ]] || die "health status after a passing check: $health"
# ...and the same command must fail when nothing answers on its port.
mapfile -t health_cmd < <(python3 -c 'import json, sys; test = json.loads(sys.argv[1])["Test"]; assert test[0] == "CMD"; print("\n".join(test[1:]))' "$healthcheck")
if podman exec -e HEART_PORT="$(free_port)" "$NAME" "${health_cmd[@]}" >/dev/null 2>&1; then
    die "the HEALTHCHECK command passes even with no server on its port"
fi
log "HEALTHCHECK: $health (and it fails when the server does not answer)"

# --- a user's own artifact and an API key --------------------------------------
log "training a small model to mount as a user's artifact"
"$VENV_PYTHON" -m training --output "$WORK/custom/model.joblib" --quiet --no-plot \
    --hidden-units 4 --cv-folds 0 >/dev/null
custom_version="$("$VENV_PYTHON" -c 'import sys; from model.artifact import load_artifact; print(load_artifact(sys.argv[1]).model_version)' "$WORK/custom/model.joblib")"
readme_key="$(sed -n 's/.*HEART_API_KEY=\([^ ]*\) heart-api serve.*/\1/p' docs/api.md | head -n1)"
[[ -n "$readme_key" ]] || die "docs/api.md shows no 'HEART_API_KEY=... heart-api serve' example"
PORT2="$(free_port)"
podman_quiet run -d --name "$NAME-custom" --network host --read-only --cap-drop ALL \
    -v "$WORK/custom:/models:ro" -e HEART_MODEL_PATH=/models/model.joblib \
    -e HEART_PORT="$PORT2" -e HEART_API_KEY="$readme_key" "$IMAGE" >/dev/null
CONTAINERS+=("$NAME-custom")
python3 scripts/container-check.py --container "http://127.0.0.1:$PORT2" \
    --keyed --expect-model-version "$custom_version" \
    || { show_logs "$NAME-custom"; die "the mounted artifact or the API key did not work"; }
podman rm --force --time 0 "$NAME-custom" >/dev/null 2>&1

# --- graceful stop -------------------------------------------------------------
log "podman stop -t $STOP_TIMEOUT (SIGTERM, then SIGKILL after the grace period)"
t0=$(date +%s.%N)
podman_quiet stop --time "$STOP_TIMEOUT" "$NAME" >/dev/null
stop_seconds="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
exit_code="$(podman inspect --format '{{.State.ExitCode}}' "$NAME")"
if [[ "$exit_code" != 0 ]] || awk -v s="$stop_seconds" -v t="$STOP_TIMEOUT" 'BEGIN { exit !(s >= t) }'; then
    show_logs "$NAME"
    die "stop was not graceful: exit code $exit_code after ${stop_seconds}s (grace ${STOP_TIMEOUT}s)"
fi
log "stopped on SIGTERM in ${stop_seconds}s with exit code 0"

# Build-cache images older than a day are dead weight in .cache/containers.
podman image prune --force --filter until=24h >/dev/null 2>&1 || true

cat <<EOF

container smoke test passed
  image:       $IMAGE, $image_mb MB (base image $BASE_IMAGE_REF: $base_mb MB)
  base image:  ${base_seconds}s (debootstrap + import, or cache check)
  image build: ${build_seconds}s
  stop:        ${stop_seconds}s after SIGTERM, exit code 0
EOF
