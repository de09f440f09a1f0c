# DAPO companion. `make test` and `make reproduce` build .venv from nothing when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= synthetic
STAMP := $(VENV)/.installed

.PHONY: venv test test-notebooks reproduce benchmarks clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

## Unit tests, then every notebook at smoke size.
test: venv
	$(PY) -m pytest -q tests
	$(MAKE) test-notebooks

test-notebooks: venv
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
	  $(PY) -m dapo.run_notebooks --smoke; \
	else echo "no notebooks yet"; fi

## Execute the notebooks in order with papermill (synthetic profile by default).
reproduce: venv
	$(PY) -m dapo.run_notebooks --profile $(PROFILE)

benchmarks: venv
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_pretrain_loader.py

clean-venv:
	rm -rf $(VENV)
