# Routilux developer tasks. Everything runs from .venv/bin, no activation needed.

PYTHON ?= python3
SHARED ?= ../shared
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PIP_Q  := -q --disable-pip-version-check
# Where `make test` builds the wheel and the fresh venv it installs it into.
WHEEL_DIR  := build/wheel
WHEEL_VENV := build/wheel-venv

# Lint only the folders that exist yet (ruff errors on a missing path).
LINT_PATHS := $(wildcard src tests benchmarks examples)

.PHONY: venv demo test wheel-check docs docs-picture docs-ui-picture seed-check bench format clean

venv: $(PY)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_Q) --upgrade pip

# The main job the way users run it: a flow file through `routilux run`, with live
# progress, the final summary and the flow's Mermaid diagram. Journaled in the
# embedded store (.routilux/jobs.db) when this installation has routilux.store.
demo: venv
	$(PIP) install $(PIP_Q) -e '.[cli]'
	@store=""; \
	if $(PY) -c "import routilux.store" 2>/dev/null; then \
		mkdir -p .routilux; store="--store sqlite:///.routilux/jobs.db"; \
	fi; \
	echo "$$ routilux run examples/flows/orders.yaml -p n=100 --diagram $$store"; \
	$(VENV)/bin/routilux run examples/flows/orders.yaml -p n=100 --diagram $$store

test: venv
	$(PIP) install $(PIP_Q) -e '.[dev]'
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	$(MAKE) --no-print-directory wheel-check
	$(MAKE) --no-print-directory seed-check

# A packaging mistake fails here: build the wheel, install it (with the cli and ui
# extras) into a fresh venv, and run the quick start, the example flow file and the web
# UI's demo from outside the checkout's source folder. The web UI's Mermaid bundle (hatch_build.py, needs npm)
# must be inside the wheel, at the version ui/package-lock.json pins.
VENDOR_BUNDLE := routilux/ui/static/vendor/mermaid.min.js
wheel-check: venv
	rm -rf $(WHEEL_DIR) $(WHEEL_VENV)
	$(PIP) wheel $(PIP_Q) --no-deps -w $(WHEEL_DIR) .
	@$(PY) -m zipfile -l "$$(ls $(WHEEL_DIR)/routilux-*.whl)" | grep -q '$(VENDOR_BUNDLE)' || { \
		echo "wheel-check: $(VENDOR_BUNDLE) is not in the wheel (is npm installed?)"; exit 1; }
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install $(PIP_Q) "$$(ls $(WHEEL_DIR)/routilux-*.whl)[cli,ui]"
	cd $(WHEEL_DIR) && ../wheel-venv/bin/python -c \
		"import routilux; assert 'site-packages' in routilux.__file__, routilux.__file__"
	cd $(WHEEL_DIR) && ../wheel-venv/bin/python -c \
		"import json, pathlib, routilux; \
		vendor = pathlib.Path(routilux.__file__).parent / 'ui/static/vendor'; \
		lock = json.load(open('../../ui/package-lock.json'))['packages']['node_modules/mermaid']; \
		stamp = json.load(open(vendor / 'mermaid.json')); \
		assert stamp['version'] == lock['version'], (stamp, lock['version']); \
		assert b'globalThis[\"mermaid\"]' in (vendor / 'mermaid.min.js').read_bytes()[-4096:]; \
		assert (vendor / 'mermaid.LICENSE').stat().st_size > 0; \
		from routilux.ui.pages import has_mermaid; assert has_mermaid()"
	cd $(WHEEL_DIR) && ../wheel-venv/bin/python ../../examples/ui_demo.py --check > /dev/null
	cd $(WHEEL_DIR) && ../wheel-venv/bin/python ../../examples/quickstart.py > /dev/null
	$(WHEEL_VENV)/bin/routilux run examples/flows/orders.yaml -p n=100 --json > /dev/null
	@echo "wheel-check: $$(ls $(WHEEL_DIR)) installs and runs"

# The design document's examples (../shared). A fresh clone without that folder skips
# the check, except in CI, where a missing folder is an error.
seed-check: venv
	@if [ -f "$(SHARED)/conformance/check_seed.py" ]; then \
		$(PY) "$(SHARED)/conformance/check_seed.py"; \
	elif [ -n "$$CI" ]; then \
		echo "error: $(SHARED)/conformance/check_seed.py not found (CI needs it; set SHARED=...)"; \
		exit 1; \
	else \
		echo "skipped: the design-document check ($(SHARED)/conformance/check_seed.py is not here; set SHARED=/path/to/shared to run it)"; \
	fi

docs: venv
	$(PIP) install $(PIP_Q) -e '.[dev]'
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
	@echo "open site/index.html"

# The front page's picture: the orders flow after a run with n=100 (needs Graphviz's dot).
docs-picture: venv
	$(PIP) install $(PIP_Q) -e '.[cli]'
	$(PY) -c "from routilux.flowfile import read_flow_file; \
	from routilux.flow.diagram import render; \
	f = read_flow_file('examples/flows/orders.yaml'); \
	job = f.flow.execute(f.entry, {'n': 100}); \
	open('docs/assets/orders.svg', 'wb').write(render(f.flow, 'svg', job, direction='TB'))"

# The web UI page in the docs: the browser test's screenshot of a job page
# (tests/ui/test_browser.py, headless Chromium), written to docs/assets as well.
docs-ui-picture: venv
	$(PIP) install $(PIP_Q) -e '.[dev]'
	ROUTILUX_REQUIRE_SERVICES=1 ROUTILUX_UI_PICTURE=docs/assets/ui-job-page.png \
		$(VENV)/bin/pytest -q -p no:randomly tests/ui/test_browser.py -k node_counts

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
	rm -rf $(VENV) build dist site .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -print \
		| xargs rm -rf
