# Developer entry points. Every target creates or refreshes .venv first, so each one
# works from a clean clone; the real work is done by `ratesctl` (cli/ratesctl).

PYTHON   ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
PACKAGES := core api cli ingest-job controller
STAMP    := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv up test migrate api demo-data bench-api

help:
	@echo "make up         local database + demo data + API on http://127.0.0.1:8000 (UP_ARGS=\"--port 8001\")"
	@echo "make test       the whole test suite (starts what it needs; TEST_WORKERS=2 processes, 0 for one)"
	@echo "make migrate    apply migrations to \$$DATABASE_URL"
	@echo "make demo-data  load the generated demo dataset into the empty database at \$$DATABASE_URL"
	@echo "make api        serve the API with gunicorn on \$$HOST:\$$PORT against \$$DATABASE_URL"
	@echo "make bench-api  API benchmark against a naive baseline (see bench/README.md)"
	@echo "make bench-ingest  ingest job against raw COPY and a naive baseline (see bench/README.md)"
	@echo "make bench-controller  uploads to Jobs, against raw Job creates (see bench/README.md)"
	@echo "make k8s-tools  pinned etcd, kube-apiserver, kubectl, helm, ... (TOOLS_ARGS=\"--tool skaffold\" or \"--all\" for terraform, tflint, skaffold, promtool, helm4)"

$(STAMP): requirements.txt requirements-dev.txt constraints-dev.txt $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
	@# pip last: a virtualenv cut off while ensurepip ran has python but no pip, and is made again
	@test -x $(BIN)/pip || $(PYTHON) -m venv $(VENV)
	@# The images run 3.11, and the image tests run this interpreter as theirs.
	@$(BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "$(VENV) has Python %d.%d; 3.11 is needed: rm -rf $(VENV) and make again with PYTHON=python3.11" % sys.version_info[:2])'
	$(BIN)/python -m pip install --quiet -c constraints-dev.txt --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints-dev.txt -r requirements-dev.txt $(foreach p,$(PACKAGES),-e ./$(p))
	@touch $@

venv: $(STAMP)

up: venv
	$(BIN)/ratesctl up $(UP_ARGS)

# Two worker processes, each with its own session (PostgreSQL, moto_server, control plane):
# most tests wait on a server, so two take about 0.6x the time on 2 cores. A test file stays on one
# worker, with its module fixtures. TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2

test: venv
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=20 $(PYTEST_ARGS)

migrate: venv
	$(BIN)/ratesctl migrate

api: venv
	$(BIN)/ratesctl serve

demo-data: venv
	$(BIN)/ratesctl demo-data $(DEMO_ARGS)

bench-api: venv
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python bench/api_bench.py $(BENCH_ARGS)

.PHONY: bench-ingest
bench-ingest: venv
	$(BIN)/python bench/ingest_bench.py $(BENCH_ARGS)

.PHONY: bench-controller
bench-controller: venv
	$(BIN)/python bench/controller_bench.py $(BENCH_ARGS)

# Pinned etcd, kube-apiserver, kube-controller-manager, kubectl, helm, kubeconform (versions.json):
# found via $KUBEBUILDER_ASSETS/PATH or built once into ~/.cache/rates-platform/k8s. `make test` does it too.
# terraform, tflint, skaffold, promtool and helm4 only when asked: TOOLS_ARGS="--tool terraform --tool tflint", or "--all".
.PHONY: k8s-tools
k8s-tools: venv
	$(BIN)/ratesctl k8s-tools $(TOOLS_ARGS)
