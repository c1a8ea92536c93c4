# One place for the commands humans, CI and the README use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint protos descriptor clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("modelreg needs Python 3.11+") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

# `[dev]` is everything the tests and the linters need (the benchmarks the tests run too).
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-run

## run: install and start the server on the embedded default (Ctrl-C stops it)
run: $(VENV)/.installed-run
	$(BIN)/modelreg serve $(ARGS)

## test: install everything and run the whole test suite (starts its own Postgres, Redis, S3
## and Prometheus; scripts/test-services.sh installs Prometheus when it is missing)
test: $(VENV)/.installed-dev
	scripts/test-services.sh
	$(BIN)/python -m pytest

## lint: ruff, mypy --strict, buf lint, buf breaking (against the last release, else main)
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy
	PYTHON=$(BIN)/python scripts/buf.sh lint
	PYTHON=$(BIN)/python scripts/buf.sh breaking

## protos: regenerate src/modelreg/v1 from protos/
protos: $(VENV)/.installed-dev
	$(BIN)/python scripts/gen_protos.py

## descriptor: build/modelreg.binpb, the contract and every file it imports as one
## FileDescriptorSet (with comments), for clients in other languages
descriptor: build/modelreg.binpb

build/modelreg.binpb: buf.yaml $(wildcard protos/modelreg/v1/*.proto) $(VENV)/.installed-dev
	PYTHON=$(BIN)/python scripts/buf.sh descriptor $@

clean:
	rm -rf $(VENV) .build build tests/node/node_modules .pytest_cache .mypy_cache .ruff_cache
