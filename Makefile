# Two commands on a fresh machine: `make demo` and `make test`.
# Debian's Python 3.11+ when the machine has it: built with profile-guided and link-time
# optimisation, it runs this project a tenth to a third faster than a plain build of the same
# version (pyenv's); `make PYTHON=...` chooses another. (Remove .venv to change.)
DEBIAN_PYTHON := $(shell /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	2>/dev/null && echo /usr/bin/python3)
PYTHON ?= $(or $(DEBIAN_PYTHON),python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench bench-scale system-deps clean docs bytecode

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the project's metadata changed.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

# The package's bytecode, so that the hundreds of commands the tests and the demo run do not
# each compile it again (about 80 CPU ms a command): an editable install compiles nothing,
# and PYTHONDONTWRITEBYTECODE, set on some machines, stops Python caching what it compiles
# on import. Only the files changed since are compiled.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q cpms_admin

demo: system-deps $(STAMP) bytecode
	@bash scripts/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check cpms_admin tests bench scripts
	$(BIN)/ruff format --check cpms_admin tests bench scripts
	$(BIN)/mypy

# pytest keeps its rewritten test modules (their asserts made to explain themselves) only where
# bytecode may be written: without PYTHONDONTWRITEBYTECODE, a second run does not pay about 4 s
# of CPU to rewrite them all again.
test: system-deps $(STAMP) lint bytecode
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest

# The generated documents: the command reference from the commands' own help, and a support
# session (the README's tour) run for real against the demo database.
docs: $(STAMP) data/demo.db
	$(BIN)/python scripts/command_reference.py
	$(BIN)/python scripts/transcript.py

# The demo database for `make docs`, rebuilt when the code or the demo changed; the demo's
# own transcript goes to data/demo.log. (`make demo` always rebuilds it, and shows it.)
DEMO_SOURCES := scripts/demo.py scripts/demo_members.py $(shell find cpms_admin templates \
	-type f \( -name '*.py' -o -name '*.html' -o -name '*.css' \) 2>/dev/null)
data/demo.db: $(DEMO_SOURCES) $(STAMP) | system-deps
	@bash scripts/demo.sh > data/demo.log 2>&1 || { rm -f $@; tail -n 30 data/demo.log; exit 1; }
	@echo "rebuilt data/demo.db (the demo's transcript: data/demo.log)"

bench: system-deps $(STAMP)
	$(BIN)/python bench/letters.py
	$(BIN)/python bench/import.py
	$(BIN)/python bench/campaign.py
	$(BIN)/python bench/places.py
	$(BIN)/python bench/search.py
	$(BIN)/python bench/xlsx.py
	$(BIN)/python bench/audit_chain.py

# Issue 18 at a million members (bench/scale.py): builds its databases the first time (minutes),
# then keeps them; PostgreSQL too when CPMS_BENCH_DATABASE_URL names a server.
bench-scale: system-deps $(STAMP)
	$(BIN)/python bench/scale.py

clean:
	rm -rf $(VENV) data/demo* build dist *.egg-info
