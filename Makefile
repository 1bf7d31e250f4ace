# paygate: two commands for a newcomer — `make demo` and `make test`.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install services lint typecheck unit integration e2e protos bench chaos clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

services: install
	@bash scripts/ensure_services.sh

protos: install
	PYTHON=$(BIN)/python scripts/gen_protos.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

test: install services lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

demo: install services
	$(BIN)/paygate demo

bench: install services
	$(BIN)/python -m bench.run

chaos: install services
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache build *.egg-info
