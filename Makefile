# Two commands from a fresh clone: `make run` (the pipeline on the built-in sample) and
# `make test`. Both create .venv and install the pinned dependencies on first use only.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sceneseg-installed
PLOTS_TEMPLATE := .dvc/plots_template.html

.PHONY: setup run test plots exp show sweep mutants clean-venv

setup: $(STAMP) $(PLOTS_TEMPLATE)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# `dvc plots show/diff` pages with vega inlined (from the npm registry), so they render offline.
# Wired in .dvc/config.local only once the template exists; without npm, DVC's CDN page is used.
$(PLOTS_TEMPLATE): sceneseg/evaluation/plots_template.py | $(STAMP)
	@if $(BIN)/python -m sceneseg.evaluation.plots_template --out $@ --cache build/npm; then \
		$(BIN)/dvc config --local plots.html_template plots_template.html; \
	else echo "warning: no offline plots template (npm registry unreachable?); dvc plots pages will load vega from a CDN"; fi

# Stage commands call `python`: the venv's, first on PATH (as after `source .venv/bin/activate`).
run: setup
	PATH="$(abspath $(BIN)):$$PATH" dvc repro

plots: setup
	PATH="$(abspath $(BIN)):$$PATH" dvc plots show

test: setup
	$(BIN)/python -m pytest -q

# `dvc exp run $(ARGS)` after checking the params it would run with (the -S overrides applied to a
# copy of params.yaml, validated as the stages do): a bad value or key is one line and exit 1 before
# DVC changes params.yaml or deletes any output. E.g. make exp ARGS='-S train.lr=0.001'
exp: setup
	PYTHONPATH=. $(BIN)/python -m sceneseg.exp $(ARGS)

# The experiments' table without what did not change, the model's AP and Miou always, no file hashes.
show: setup
	PATH="$(abspath $(BIN)):$$PATH" dvc exp show --only-changed --keep '^(AP|Miou)$$' --drop '^(data|models|stages|sceneseg)/'

# Run the experiments queued with `dvc exp run --queue ...`, JOBS at a time, and wait for all of them.
# SCENESEG_JOBS tells every run how many share the machine (CPU threads = cores / JOBS; on several
# GPUs each run claims its own). PYTHONPATH=.: a queued run imports the sceneseg of its own copy of
# the repo (.dvc/tmp/exps/...), not the workspace's that the editable install points to.
JOBS ?= 2
sweep: setup
	PATH="$(abspath $(BIN)):$$PATH" SCENESEG_JOBS=$(JOBS) PYTHONPATH=. dvc queue start -j $(JOBS)
	@while PATH="$(abspath $(BIN)):$$PATH" dvc queue status | grep -qE 'Queued|Running'; do sleep 10; done
	@PATH="$(abspath $(BIN)):$$PATH" dvc queue status
	@! PATH="$(abspath $(BIN)):$$PATH" dvc queue status | grep -q Failed || \
		{ echo "some experiments failed: dvc queue logs <task> shows why"; exit 1; }

# Mutation testing of the modules that decide the numbers and of the models' packages (config:
# [tool.mutmut] in pyproject.toml). A development check, too slow for `make test` or CI: on 2 shared
# cores the measured modules took ~25 + ~7 minutes run module by module, LGSS's training loop alone
# over an hour on a loaded machine (bench/RESULTS_mutants.md); the whole list takes longer.
# Prints killed / total per module (its dotted path under sceneseg); `.venv/bin/mutmut results`
# lists the survivors, `mutmut show NAME` one. mutmut's forked runner has reported false kills here
# (models/lgss/network.py): read a count as an upper bound, check with bench/mutants_forked.py (docs/testing.md).
MUTANTS_BUDGET_S ?= 3600
MUTANTS_CHILDREN ?= 2
mutants: $(STAMP)
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	rm -rf mutants && mkdir mutants
	-OMP_NUM_THREADS=1 timeout $(MUTANTS_BUDGET_S) $(BIN)/mutmut run --max-children $(MUTANTS_CHILDREN) > mutants/run.log 2>&1
	@$(BIN)/mutmut results --all true | awk -F': ' '{ m = $$1; gsub(/^[ \t]+/, "", m); sub(/\.[^.]*$$/, "", m); \
		sub(/^sceneseg\./, "", m); total[m]++; n++; \
		if ($$2 == "killed") { killed[m]++; k++ } else if ($$2 == "timeout") { slow[m]++; t++ } \
		else if ($$2 != "survived") other[m]++ } \
		END { for (m in total) printf "%-26s %4d / %4d killed (%5.1f%%)  %d timed out (check by hand)  %d not run or no tests\n", \
		m, killed[m], total[m], 100 * killed[m] / total[m], slow[m], other[m]; \
		if (n) printf "%-26s %4d / %4d killed (%5.1f%%)  %d timed out\n", "all", k, n, 100 * k / n, t; \
		else print "no mutants: see mutants/run.log" }'

clean-venv:
	rm -rf $(VENV)
