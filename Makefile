# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test lint bench-import bench-search

setup: $(VENV)/.installed

# Quiet: one line, then pip's errors if any. setuptools notes that an install
# is editable on every run: known, and nothing to act on, so it is filtered.
$(VENV)/.installed: pyproject.toml
	@echo "setting up $(VENV): Bridge and its dependencies"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --upgrade pip
	@PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install --quiet -e '.[test]'
	@touch $@

# `make run CONFIG=bridge.toml` runs on that config (or set BRIDGE_CONFIG).
run: setup
	$(BIN)/bridge run$(if $(CONFIG), --config $(CONFIG))

lint: setup
	$(BIN)/ruff check bridge tests bench
	$(BIN)/ruff format --check bridge tests bench
	$(BIN)/mypy

test: setup lint
	$(BIN)/pytest
