# zfjl developer entry points.  Needs Python 3.11+ (override with `make PYTHON=python3.12 ...`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Worker processes for the test suite (pytest-xdist); 0 runs it in this process.
PYTEST_WORKERS ?= 2

.DEFAULT_GOAL := test
.PHONY: venv demo test lint bench bench-ledger bench-portal bench-scale clean distclean

## venv: create .venv and install the project with dev extras (re-runs only when pyproject.toml changes)
venv: $(STAMP)

$(STAMP): pyproject.toml setup.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "zfjl needs Python 3.11+, $(PYTHON) is " + sys.version.split()[0])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

## demo: run the end-to-end demo
demo: $(STAMP)
	$(PY) scripts/demo.py

## test: run the test suite in PYTEST_WORKERS processes; extra pytest arguments with PYTEST_ARGS="-k broker"
test: $(STAMP)
	@echo "$(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)"
	@rc=0; $(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc

## lint: ruff over the repo, strict mypy on protocol, edge_agent, zfjl_common and server, import contracts
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy protocol edge_agent zfjl_common zfjl_verify server
	$(VENV)/bin/lint-imports

## bench: ingest throughput benchmark
bench: $(STAMP)
	$(PY) bench/ingest.py

## bench-ledger: ledger Merkle tree appends and proofs (1,000,000 leaves)
bench-ledger: $(STAMP)
	$(PY) bench/ledger.py

## bench-portal: portal search on 1,000,000 published items (PostgreSQL on 127.0.0.1:5432)
bench-portal: $(STAMP)
	$(PY) bench/portal.py

## bench-scale: ingest processes and broker engines (Mosquitto, NATS, RabbitMQ's MQTT plugin), see docs/scaling.md
bench-scale: $(STAMP)
	$(PY) bench/scale.py

## clean: remove caches and build artefacts (keeps .venv; see distclean)
clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +

## distclean: clean and also remove the virtualenv
distclean: clean
	rm -rf $(VENV)
