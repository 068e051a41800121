# Routilux developer tasks. Everything runs from .venv/bin, no activation needed.

PYTHON ?= python3
SHARED ?= ../shared
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PIP_Q  := -q --disable-pip-version-check

# Lint only the folders that exist yet (ruff errors on a missing path).
LINT_PATHS := $(wildcard src tests benchmarks examples)

.PHONY: venv demo test bench format clean

venv: $(PY)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_Q) --upgrade pip

demo: venv
	$(PIP) install $(PIP_Q) -e .
	$(PY) examples/quickstart.py

test: venv
	$(PIP) install $(PIP_Q) -e '.[dev]'
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest
	$(PY) $(SHARED)/conformance/check_seed.py

bench: venv
	$(PIP) install $(PIP_Q) -e .
	@set -e; for f in benchmarks/w*.py; do \
		[ -e "$$f" ] || { echo "no benchmarks yet"; break; }; \
		echo "== $$f"; \
		$(PY) "$$f"; \
	done

format: venv
	$(VENV)/bin/ruff format $(LINT_PATHS)
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -print \
		| xargs rm -rf
