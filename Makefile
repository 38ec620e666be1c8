# The two promised commands: `make run` (set up, train if needed, serve) and
# `make test` (set up, then lint, type-check and run the whole test suite).
# Both create their own virtualenv in .venv and install what they need.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARTIFACT ?= artifacts/model.joblib
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help run serve train test lint typecheck pytest system-deps openapi quality tune clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | sort

# Any virtualenv (the service's $(VENV), the comparison's $(KERAS_VENV)), with a current pip.
%/bin/python:
	$(PYTHON) -m venv $*
	$*/bin/python -m pip install --quiet --upgrade pip

# One stamp per install flavour, refreshed whenever pyproject.toml changes:
# $(call install,EXTRAS) installs the project with EXTRAS into the stamp's virtualenv.
comma := ,
define install
	$(dir $@)bin/python -m pip install --quiet -e '.[$(1)]'
	touch $@
endef

$(VENV)/.stamp-run: pyproject.toml | $(BIN)/python
	$(call install,plot)

$(VENV)/.stamp-dev: pyproject.toml | $(BIN)/python
	$(call install,dev)

$(ARTIFACT): | $(VENV)/.stamp-run
	@echo "No model at $(ARTIFACT): training the default one (about 3 minutes on 2 cores, once)."
	$(BIN)/python -m training --output $(ARTIFACT)

run: $(VENV)/.stamp-run $(ARTIFACT)  ## set up, train the default model if missing, serve on :8000
	HEART_MODEL_PATH=$${HEART_MODEL_PATH:-$(ARTIFACT)} $(BIN)/python -m app

train: $(VENV)/.stamp-run  ## (re)train the default model into $(ARTIFACT)
	$(BIN)/python -m training --output $(ARTIFACT)

system-deps:  ## Debian tools the tests use (curl, promtool, wrk, chromium); needs root, else prints how
	bash scripts/install-system-deps.sh

test: $(VENV)/.stamp-dev system-deps lint typecheck pytest  ## set up and run every check

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.stamp-dev
	$(BIN)/mypy

pytest: $(VENV)/.stamp-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

quality: $(VENV)/.stamp-dev  ## model quality benchmark (10x5 CV and the StatLog 9-fold protocol)
	$(BIN)/python -m bench.quality

BENCH_ARGS ?=

.PHONY: bench
bench: $(VENV)/.stamp-dev $(ARTIFACT) system-deps  ## speed benchmarks (predictor, wrk load with table uploads, heart-score files; BENCH_ARGS=--quick)
	$(BIN)/python -m bench.predictor_micro $(filter --quick,$(BENCH_ARGS))
	$(BIN)/python -m bench.load --artifact $(ARTIFACT) $(BENCH_ARGS)
	$(BIN)/python -m bench.scoring --artifact $(ARTIFACT) $(if $(filter --quick,$(BENCH_ARGS)),--rows 1000000 --rounds 1)

.PHONY: bench-hardening
bench-hardening: $(VENV)/.stamp-dev $(ARTIFACT)  ## issue 11: what the hardening costs on /predict, and /health at 2,000 connections
	$(BIN)/python -m bench.hardening --artifact $(ARTIFACT)

tune: $(VENV)/.stamp-dev  ## re-run the hyperparameter search behind the default configuration
	$(BIN)/python -m training.tune

clean:  ## remove the virtualenvs, caches, build outputs and trained artifacts (keeps .cache/, the container base image)
	rm -rf $(VENV) .venv-keras artifacts build .pytest_cache .mypy_cache .ruff_cache

# The comparison with scikit-learn and Keras (docs/comparison.md).
# Keras lives in its own virtualenv: the service's .venv never installs it.
KERAS_VENV ?= .venv-keras
KBIN := $(KERAS_VENV)/bin
COMPARE_CI_OUT ?= build/compare-ci
.PHONY: compare compare-ci

$(KERAS_VENV)/.stamp-keras: pyproject.toml | $(KBIN)/python
	$(call install,dev$(comma)keras)

compare: $(KERAS_VENV)/.stamp-keras  ## full comparison incl. Keras; rewrites results/ and the table of docs/comparison.md
	$(KBIN)/python -m training.compare --require-keras --readme docs/comparison.md

compare-ci: $(KERAS_VENV)/.stamp-keras  ## reduced comparison with Keras, as CI runs it (fails on any error)
	HEART_REQUIRE_KERAS=1 $(KBIN)/python -m pytest -q -p no:cacheprovider \
		tests/training/test_compare.py tests/training/test_compare_keras.py tests/training/test_compare_isolation.py
	$(KBIN)/python -m training.compare --quick --require-keras --output-dir $(COMPARE_CI_OUT)

.PHONY: spark-ci
$(VENV)/.stamp-spark: pyproject.toml | $(BIN)/python
	$(call install,dev$(comma)spark)

spark-ci: $(VENV)/.stamp-spark  ## score_frame under Spark in local mode, as CI runs it: installs Java (root) and pyspark
	bash scripts/install-java.sh
	HEART_REQUIRE_SPARK=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/scoring/test_spark.py

.PHONY: container-smoke
container-smoke: $(VENV)/.stamp-dev  ## build the image with podman, run it beside the source service and compare (root)
	VENV_PYTHON=$(abspath $(BIN))/python bash scripts/container-smoke.sh

.PHONY: container-image
container-image:  ## build the image with podman without a registry (root; base image from Debian's mirror)
	bash scripts/container-build.sh heart-api
