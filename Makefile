# nuro-ml-platform: `make demo` runs the end-to-end pipeline, `make test` runs every check.
# Both create the virtualenv (uv, locked) and the Terraform plugin mirror on first use.

SHELL := /bin/bash
# The interpreter itself, not a shim: uv rebuilds the venv when the interpreter path changes.
PYTHON ?= $(shell python3.11 -c 'import sys; print(sys.executable)' 2>/dev/null || python3 -c 'import sys; print(sys.executable)')
UV_VERSION := 0.13.8
VENV := .venv
UV := .uv/bin/uv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PLUGIN_MIRROR := .terraform-plugins

export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export RAY_USAGE_STATS_ENABLED := 0
# Spark and Ray start fresh Python workers; they must find compiled bytecode rather than recompile
# pandas and pyarrow on every start, so bytecode is compiled at install and never suppressed.
unexport PYTHONDONTWRITEBYTECODE

PYTEST_ARGS ?=
# The unit tier runs in a new random order each time (pytest-randomly), so a test that depends on
# another's leftovers fails where it is; the seed is printed at the top ("Using --randomly-seed=N")
# and UNIT_ORDER="-p randomly --randomly-seed=N" repeats that order (UNIT_ORDER= keeps file order).
# The other tiers keep file order (pyproject's addopts): they share expensive session services.
UNIT_ORDER ?= -p randomly

.PHONY: setup torch-cpu demo test test-backfill lint docs typecheck unit integration e2e browser bench clean airflow-home \
	provider-info \
	cluster-up cluster-down cluster-test

setup: $(STAMP)

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet uv==$(UV_VERSION)

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras --no-extra torch --compile-bytecode --python $(PYTHON)
	$(BIN)/python -m nuro_ml.terraform_support.plugins $(PLUGIN_MIRROR)
	touch $(STAMP)

# PyTorch for the torch workload, after the locked sync (which leaves it out: from the index the
# `torch` extra resolves to a multi-GB CUDA build). pip finds the CPU build where one is provided
# locally (find-links); elsewhere pass e.g. TORCH_PIP_ARGS="--index-url <PyTorch's CPU index>".
TORCH_VERSION := 2.13.0
TORCH_PIP_ARGS ?=

torch-cpu: setup
	@$(BIN)/python -c "import torch" 2>/dev/null || \
		$(PYTHON) -m pip --python $(BIN)/python install --quiet $(TORCH_PIP_ARGS) torch==$(TORCH_VERSION)

airflow-home: setup
	$(BIN)/nuro-ml airflow-home

demo: setup
	$(BIN)/nuro-ml demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

# The documentation site: warnings are errors and every reference of ours must resolve (nitpicky).
# Offline by design: other projects are plain links, no intersphinx inventory is fetched.
docs: setup
	@# -E: read every page afresh, or an incremental build would not repeat unchanged pages' warnings.
	$(BIN)/sphinx-build -E -W --keep-going -n -q -b html docs docs/_build/html

# tests/cluster run against the cluster of `make cluster-up`, only through `make cluster-test`.
test: setup torch-cpu lint docs
	$(BIN)/pytest -p no:cacheprovider $(UNIT_ORDER) --durations=10 tests/unit $(PYTEST_ARGS)
	$(BIN)/pytest -p no:cacheprovider --durations=25 --ignore=tests/cluster --ignore=tests/unit $(PYTEST_ARGS)

# Only the scheduler-driven backfill test (also part of `make test`).
test-backfill: setup
	$(BIN)/pytest -p no:cacheprovider tests/stack/backfill $(PYTEST_ARGS)

unit: setup torch-cpu
	$(BIN)/pytest $(UNIT_ORDER) tests/unit $(PYTEST_ARGS)

integration: setup torch-cpu
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

e2e: setup torch-cpu
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

browser: setup
	$(BIN)/pytest -p no:cacheprovider tests/stack/browser $(PYTEST_ARGS)

bench: setup torch-cpu
	$(BIN)/python -m benchmarks

provider-info: setup
	$(BIN)/python -m nuro_ml.provider_yaml

# The distributed topology as processes on loopback; state (PIDs, ports, passwords) in .cluster/.
# EXECUTOR=celery (default: two Celery workers, Redis broker, PostgreSQL results) or EXECUTOR=local.
EXECUTOR ?= celery
cluster-up: setup
	$(BIN)/python -m nuro_ml.local_cluster up --executor $(EXECUTOR)

cluster-down:
	$(BIN)/python -m nuro_ml.local_cluster down

cluster-test: setup
	$(BIN)/pytest -p no:cacheprovider -m cluster tests/cluster $(PYTEST_ARGS)

clean:
	rm -rf .nuro .airflow $(PLUGIN_MIRROR)
