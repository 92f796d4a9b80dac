# fleetpulse: every target installs what it needs first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test test-unit demo bench bench-all lint fmt clean kafka-jars

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 (or run make PYTHON=python3)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[all,dev]"
	touch $(STAMP)

# fetch the Apache Kafka jars once (dev up and the tests do this on demand too)
kafka-jars: setup
	$(BIN)/fleetpulse dev fetch

# two workers, a whole module each (a module's fixtures are built once), longest modules first
# (tests/conftest.py): on 2 cores this halves the wall time, most of which is waiting
PYTEST_WORKERS ?= 2
test: setup kafka-jars
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-unit: setup
	$(BIN)/pytest -q tests/unit

demo: setup
	$(BIN)/fleetpulse demo

# the end-to-end benchmark: every process on this machine against Kafka's own perf tools
bench: setup kafka-jars
	$(BIN)/python bench/e2e.py

# every benchmark, one after the other (about 20 minutes)
bench-all: setup kafka-jars
	$(BIN)/python bench/run_all.py

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	# layers import downward only, no cycles ([tool.importlinter]; tests/unit/test_layers.py too)
	$(BIN)/lint-imports

fmt: setup
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean:
	rm -rf $(VENV) .fleetpulse .pytest_cache .mypy_cache .ruff_cache
