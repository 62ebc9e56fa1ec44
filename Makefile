# osteohooks: everything a bare machine with python3 (3.11 or 3.12) needs.
# `make test` and `make run` create .venv and install on first use; later runs
# reuse it (the stamp is rebuilt only when pyproject.toml changes).

VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8080

# durable-rules 2.0.28 builds on CPython 3.11 and 3.12 only: pick one of those.
PYTHON ?= $(shell for p in python3.12 python3.11 python3; do \
	  if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(not ((3,11) <= sys.version_info[:2] <= (3,12)))' 2>/dev/null; then \
	    echo $$p; break; fi; done)

.PHONY: bench-peers all install install-locked lock test lint typecheck unit run golden docs bench soak clean

all: test

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: need python3.11 or python3.12 on PATH (durable-rules 2.0.28 does not build on 3.13)" >&2; exit 2; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# Reproducible install: exactly the versions and hashes of requirements.lock (made by
# `make lock` with pip-tools), then the project itself without dependencies.
install-locked:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

lock: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check pip-tools
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --extra test --strip-extras \
	  --no-emit-index-url --no-emit-find-links \
	  --output-file requirements.lock pyproject.toml

lint: $(STAMP)
	$(BIN)/ruff check cds tests benchmarks tools
	$(BIN)/ruff format --check cds tests benchmarks tools
	$(BIN)/lint-imports --no-cache

# mypy strict on cds/ and on tests/ (the files of [tool.mypy] in pyproject.toml)
typecheck: $(STAMP)
	$(BIN)/mypy

# The coverage floor (percent of cds/ lines run by the tests; subprocess tests not counted).
COVERAGE_FLOOR ?= 90

unit: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --cov=cds --cov-report=term:skip-covered \
	  --cov-fail-under=$(COVERAGE_FLOOR)

test: lint typecheck unit

# Start the CDS Hooks service with the bundled rules, without JWT auth, on loopback.
run: $(STAMP)
	@echo "Try:  curl -s http://$(HOST):$(PORT)/cds-services | python3 -m json.tool"
	@echo "A full curl session (patient-view call, feedback, JWT): docs/ehr-integration.md"
	OSTEOHOOKS_AUTH=none $(BIN)/cds serve --host $(HOST) --port $(PORT)

# After an intended rule change: regenerate every golden the tests check (the compiled
# rules, docs/rules.md, the editor schema, the story results), then review the diff
# (docs/rule-authoring.md).
STORIES_AS_OF := 2026-11-23
golden: $(STAMP)
	$(BIN)/cds rules compile rules --out tests/golden/rules
	$(BIN)/cds rules docs rules --out docs/rules.md
	$(BIN)/cds rules schema rules --out cds/rules/rules.schema.json
	$(BIN)/cds replay tests/fixtures/stories --as-of $(STORIES_AS_OF) --rules rules \
	  --expect tests/golden/stories --update-expect --workers 0 --no-progress --out /dev/null

docs: $(STAMP)
	$(BIN)/cds rules docs rules

bench: $(STAMP)
	$(BIN)/python benchmarks/engine_bench.py

# The peer of benchmarks/http_bench.py (--healthchain): HealthChain in a venv of its own.
bench-peers:
	@test -x .bench-venv/healthchain/bin/python || $(PYTHON) -m venv .bench-venv/healthchain
	.bench-venv/healthchain/bin/python -m pip install --quiet --disable-pip-version-check healthchain uvicorn
	$(BIN)/python benchmarks/http_bench.py --requests 1000 --healthchain .bench-venv/healthchain/bin/python

soak: $(STAMP)
	$(BIN)/python benchmarks/engine_soak.py --cases 1000000

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
