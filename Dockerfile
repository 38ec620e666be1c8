# Heart-disease risk prediction API.
#
#   docker build -t heart-api .
#   docker run --rm -p 8000:8000 -e HEART_API_KEY="$(openssl rand -hex 32)" heart-api
#   docker run --rm heart-api check      # validate configuration and model, then exit
#
# Two stages: "build" installs the package into a virtualenv and trains the
# default model, so the image always carries an artifact made by the code it
# serves; "runtime" gets only that virtualenv (without pip, scikit-learn or
# SciPy) and the artifact: no compilers, tests or training data. Any Debian-like
# image with python3 >= 3.11 and its venv module works as BASE_IMAGE; CI builds
# with a local Debian one.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# python3, not python: Debian's own python3 has no `python` alias. Everything
# after this uses the venv's interpreter, whichever base image provided it.
RUN python3 -m venv /opt/venv

WORKDIR /src

# Dependencies first, from pyproject.toml alone, so editing the code does not
# invalidate this (slowest) layer.
COPY pyproject.toml ./
RUN /opt/venv/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && /opt/venv/bin/python -m pip install --no-cache-dir -r /tmp/requirements.txt

COPY README.md LICENSE ./
COPY model/ model/
COPY training/ training/
COPY scoring/ scoring/
COPY app/ app/
RUN /opt/venv/bin/python -m pip install --no-cache-dir --no-deps .

# Train the default model from the source tree (training finds data/ next to
# itself), then prove that the installed package (-P: not the source tree in
# the working directory) loads what was written.
COPY data/ data/
RUN /opt/venv/bin/python -m training --output /opt/heart/model.joblib --quiet --no-plot \
    && /opt/venv/bin/python -P -c "import sys; from model.artifact import load_artifact; print('trained model', load_artifact(sys.argv[1]).model_version)" /opt/heart/model.joblib

# Serving needs NumPy, joblib and the web stack only: scikit-learn and SciPy
# (about 200 MB) are for training, pip and setuptools for installing. Drop them
# from the venv the runtime gets, then prove that the service still validates
# its configuration and loads the model without them (`heart-api check`).
RUN /opt/venv/bin/python -m pip uninstall --yes --quiet \
        scikit-learn scipy threadpoolctl narwhals pip setuptools wheel \
    && HEART_MODEL_PATH=/opt/heart/model.joblib /opt/venv/bin/heart-api check


FROM ${BASE_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="heart-risk-api" \
      org.opencontainers.image.description="Heart-disease risk prediction API (NumPy network on UCI Statlog Heart, FastAPI)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="MIT"

# A fixed numeric user, so Kubernetes can check runAsNonRoot without a passwd lookup.
RUN groupadd --gid 10001 heart \
    && useradd --no-log-init --uid 10001 --gid 10001 \
       --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin heart

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/heart/model.joblib /opt/heart/model.joblib
# The model is derived from UCI Statlog (Heart), CC BY 4.0: keep its attribution.
COPY --from=build /src/data/README.md /opt/heart/DATA.md

# Same variables as the service reads outside a container; override any with -e.
# Mount your own artifact and point HEART_MODEL_PATH at it to serve another model.
# The shutdown timeout stays under `docker stop`'s 10 s, so a stop drains
# in-flight requests instead of ending in SIGKILL.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HEART_MODEL_PATH=/opt/heart/model.joblib \
    HEART_HOST=0.0.0.0 \
    HEART_PORT=8000 \
    HEART_WORKERS=1 \
    HEART_LOG_LEVEL=info \
    HEART_SHUTDOWN_TIMEOUT=8

WORKDIR /opt/heart
USER 10001:10001
EXPOSE 8000

# Liveness, as the Kubernetes probe: /health answers while the process serves
# HTTP. (A model that fails to load stops the server at start, with a log line.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('HEART_PORT', '8000'), timeout=4)"]

# Exec form: the server is PID 1 and receives SIGTERM itself, drains in-flight
# requests and exits 0 (uvicorn's supervisor reaps its workers with HEART_WORKERS > 1).
STOPSIGNAL SIGTERM
ENTRYPOINT ["heart-api"]
CMD ["serve"]
