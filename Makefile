# paygate: two commands for a newcomer — `make demo` and `make test`.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install assets services lint typecheck unit integration e2e protos bench chaos clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# The console's front-end libraries (Apache ECharts) from the npm registry, exactly as package-lock.json
# pins them; copied into a git-ignored directory the gateway serves. Nothing is committed, no CDN.
ASSETS := gateway/console/static/vendor
ASSETS_STAMP := $(ASSETS)/.installed
$(ASSETS_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	mkdir -p $(ASSETS)
	cp node_modules/echarts/dist/echarts.min.js node_modules/echarts/LICENSE $(ASSETS)/
	@touch $(ASSETS_STAMP)

assets: $(ASSETS_STAMP)

services: install
	@bash scripts/ensure_services.sh

protos: install
	PYTHON=$(BIN)/python scripts/gen_protos.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

test: install assets services lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=25 tests

demo: install assets services
	$(BIN)/paygate demo

bench: install services
	$(BIN)/python -m bench.run

chaos: install services
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache build *.egg-info node_modules $(ASSETS)
