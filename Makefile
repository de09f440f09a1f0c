# DAPO companion. `make test` and `make reproduce` build .venv from nothing when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= synthetic
STAMP := $(VENV)/.installed

.PHONY: venv lint test test-notebooks nbval-refs reproduce benchmarks clean-venv lock claims book lab

venv: $(STAMP)

# Every distribution comes at its constraints.txt pin (tests/test_lock.py checks the venv).
# cffconvert goes in with --no-deps: it declares jsonschema<4, which jupyterlab excludes (pyproject.toml).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt pip setuptools
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	$(PY) -m pip install -q -c constraints.txt --no-deps cffconvert
	touch $(STAMP)

## ruff over the package, tests, benchmarks, scripts and notebooks (rules in pyproject.toml).
lint: venv
	$(VENV)/bin/ruff check .

## Lint, unit tests (the paper path on tiny official trees included), then every notebook under nbval.
test: venv lint
	$(PY) -m pytest -q tests
	$(MAKE) test-notebooks

# nbval executes each committed reference tests/notebooks/NN_*.ipynb (an executed smoke-size
# notebook, papermill's parameters included) once, in order, from an empty results/smoke, and
# compares every text output with the reference after tests/nbval_sanitize.cfg (progress bars:
# their final line, without timings). TQDM_DISABLE=1 silences the bars that appear only when
# the synthetic worlds are missing (data/ persists); training and evaluation bars stay, the same
# in every run that starts from an empty results/smoke.
# The references are compared digit for digit, so every machine must compute them alike: fp32 is
# pinned in them (and for every `auto` inside them), and these variables hold torch, MKL, oneDNN
# and NumPy to their AVX2 code paths and two threads, whatever the CPU offers beyond (AVX-512 and
# AMX sum in other orders).
SAME_NUMERICS := DAPO_AUTO_PRECISION=fp32 ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \
	NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 1800
test-notebooks: venv
	rm -rf results/smoke figures/smoke
	TQDM_DISABLE=1 $(SAME_NUMERICS) $(PY) -m pytest -q -p no:cacheprovider $(NBVAL) tests/notebooks

## Regenerate the nbval references on purpose (after a change that alters an output): every
## notebooks/NN_*.ipynb at smoke size, in order, from an empty results/smoke, fp32 pinned.
nbval-refs: venv
	rm -rf results/smoke figures/smoke tests/notebooks
	TQDM_DISABLE=1 $(SAME_NUMERICS) $(PY) -m dapo.experiments.run_notebooks --smoke --references tests/notebooks -p precision fp32

## Execute the notebooks in order with papermill (synthetic profile by default). Resumes: a
## notebook that completed with unchanged inputs (results/<profile>/notebooks/manifest.json) is
## skipped. FORCE=1 reruns every notebook. JOBS=2 (the default, as the committed results were
## made) runs two notebooks at once, one torch thread each; JOBS=1 runs one with torch's default
## threads, whose trainings end a few last digits away (docs/REPRODUCING.md).
JOBS ?= 2
reproduce: venv
	$(PY) -m dapo.experiments.run_notebooks --profile $(PROFILE) -j $(JOBS) $(if $(FORCE),--force)

## A reviewer's check: every number of a re-run beside the committed one, in committed seed stds.
## RERUN (default results/$(PROFILE), as `make reproduce` rewrote it) is compared with the tables
## committed at GIT_REV (default HEAD); COMMITTED=dir compares with a folder instead.
RERUN ?= results/$(PROFILE)
GIT_REV ?= HEAD
.PHONY: verify
verify: venv
	$(PY) -m dapo.experiments.reproduce compare $(RERUN) --committed $(or $(COMMITTED),results/$(PROFILE)) \
		$(if $(COMMITTED),,$(if $(GIT_REV),--git $(GIT_REV)))

benchmarks: venv
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_pretrain_loader.py
	$(PY) benchmarks/bench_pipeline.py

clean-venv:
	rm -rf $(VENV)

## Refresh constraints.txt on purpose: resolve .[dev] afresh (newest releases the ranges in
## pyproject.toml allow, LOCK_HELD kept) in a throw-away venv, then pin every distribution at ==.
## Reference: Python 3.11 on Linux x86-64 (PYTHON must be a 3.11). Commit the result on its own.
LOCK_VENV ?= /tmp/dapo-lock-venv
LOCK_HELD := torch==2.14.1 torchvision==0.29.1
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "make lock: PYTHON must be a Python 3.11"'
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip setuptools
	printf '%s\n' $(LOCK_HELD) > $(LOCK_VENV)/held.txt
	$(LOCK_VENV)/bin/python -m pip install -q -c $(LOCK_VENV)/held.txt -e ".[dev]"
	$(LOCK_VENV)/bin/python -m pip install -q --no-deps cffconvert
	{ printf '%s\n' "# Every distribution of .[dev] pinned (Python 3.11, Linux x86-64): written by \`make lock\`," \
	    "# do not edit by hand (torch and torchvision: LOCK_HELD in the Makefile). README: Updating the pins."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --all --exclude dapo | grep -v '^-e '; } > constraints.txt
	rm -rf $(LOCK_VENV)

## Rewrite the result numbers that README.md and docs/*.md quote (generated blocks) from results/synthetic/.
claims: venv
	$(PY) -m dapo.experiments.claims

## The book: README, docs/, results/README.md and the executed notebooks as a static site (offline; the
## notebooks are rendered as committed, never executed). Open docs/_build/html/index.html.
BOOK ?= docs/_build/html
book: venv
	$(PY) -m sphinx -W --keep-going -q -b html -c docs -d docs/_build/doctrees . $(BOOK)
	@echo "book: $(BOOK)/index.html"

## JupyterLab on notebooks/, with the project's venv as the kernel (ipywidgets included).
lab: venv
	$(PY) -m ipykernel install --sys-prefix --name dapo --display-name "DAPO companion (.venv)"
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)
