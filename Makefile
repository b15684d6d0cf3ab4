# Two commands from a fresh clone: `make run` (the pipeline on the built-in sample) and
# `make test`. Both create .venv and install the pinned dependencies on first use only.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sceneseg-installed
PLOTS_TEMPLATE := .dvc/plots_template.html

.PHONY: setup run test plots clean-venv

setup: $(STAMP) $(PLOTS_TEMPLATE)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# `dvc plots show/diff` pages with vega inlined (from the npm registry), so they render offline.
# Wired in .dvc/config.local only once the template exists; without npm, DVC's CDN page is used.
$(PLOTS_TEMPLATE): sceneseg/plots_template.py | $(STAMP)
	@if $(BIN)/python -m sceneseg.plots_template --out $@ --cache build/npm; then \
		$(BIN)/dvc config --local plots.html_template plots_template.html; \
	else echo "warning: no offline plots template (npm registry unreachable?); dvc plots pages will load vega from a CDN"; fi

# Stage commands call `python`: the venv's, first on PATH (as after `source .venv/bin/activate`).
run: setup
	PATH="$(abspath $(BIN)):$$PATH" dvc repro

plots: setup
	PATH="$(abspath $(BIN)):$$PATH" dvc plots show

test: setup
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
