# ragc — run `make help` for the targets.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export UV_LINK_MODE := copy
export UV_COMPILE_BYTECODE := 1
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON ?= python3.11
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
RUN := $(UV) run --frozen --no-sync

.PHONY: help install demo test test-slow lint fmt bench clean

help: ## Show this help.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

install: $(UV) ## Install the pinned toolchain and the locked environment into .venv.
	$(UV) sync --frozen

demo: install ## Compile examples, serve it, and ask it questions.
	$(RUN) bash scripts/demo.sh

test: install ## Lint, type-check and run the test suite (one pytest-xdist worker per core).
	$(MAKE) --no-print-directory lint
	$(RUN) pytest -n auto --dist loadscope

test-slow: install ## The tests marked slow (CI's second step).
	$(RUN) pytest -m slow

lint: ## ruff (lint + format check) and mypy strict.
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) mypy tests

fmt: ## Format and autofix.
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

clean: ## Remove the environment, caches and the demo store.
	rm -rf .venv $(TOOLS) .ragc .pytest_cache .mypy_cache .ruff_cache
