# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the project's metadata changed.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

demo: system-deps $(STAMP)
	@bash scripts/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check cpms_admin tests bench scripts
	$(BIN)/ruff format --check cpms_admin tests bench scripts
	$(BIN)/mypy

test: system-deps $(STAMP) lint
	$(BIN)/pytest

bench: system-deps $(STAMP)
	$(BIN)/python bench/letters.py
	$(BIN)/python bench/import.py
	$(BIN)/python bench/campaign.py
	$(BIN)/python bench/places.py
	$(BIN)/python bench/xlsx.py

clean:
	rm -rf $(VENV) data/demo* build dist *.egg-info
