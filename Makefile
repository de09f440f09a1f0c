# DAPO companion. `make test` and `make reproduce` build .venv from nothing when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= synthetic
STAMP := $(VENV)/.installed

.PHONY: venv test test-notebooks nbval-refs reproduce benchmarks clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

## Unit tests (the paper path on tiny official trees included), then every notebook under nbval.
test: venv
	$(PY) -m pytest -q tests
	$(MAKE) test-notebooks

# nbval executes each committed reference tests/notebooks/NN_*.ipynb (an executed smoke-size
# notebook, papermill's parameters included) once, in order, from an empty results/smoke, and
# compares every text output with the reference after tests/nbval_sanitize.cfg (progress bars:
# their final line, without timings). TQDM_DISABLE=1 silences the bars that appear only when
# the synthetic worlds are missing (data/ persists); training and evaluation bars stay, the same
# in every run that starts from an empty results/smoke.
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 1800
test-notebooks: venv
	rm -rf results/smoke figures/smoke
	TQDM_DISABLE=1 $(PY) -m pytest -q -p no:cacheprovider $(NBVAL) tests/notebooks

## Regenerate the nbval references on purpose (after a change that alters an output): every
## notebooks/NN_*.ipynb at smoke size, in order, from an empty results/smoke, fp32 pinned.
nbval-refs: venv
	rm -rf results/smoke figures/smoke tests/notebooks
	TQDM_DISABLE=1 $(PY) -m dapo.run_notebooks --smoke --references tests/notebooks -p precision fp32

## Execute the notebooks in order with papermill (synthetic profile by default).
reproduce: venv
	$(PY) -m dapo.run_notebooks --profile $(PROFILE)

benchmarks: venv
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_pretrain_loader.py

clean-venv:
	rm -rf $(VENV)
