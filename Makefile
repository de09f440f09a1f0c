# DAPO companion. `make test` and `make reproduce` build .venv from nothing when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= synthetic
STAMP := $(VENV)/.installed

.PHONY: venv lint test test-notebooks nbval-refs reproduce benchmarks clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
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
	TQDM_DISABLE=1 $(SAME_NUMERICS) $(PY) -m dapo.run_notebooks --smoke --references tests/notebooks -p precision fp32

## Execute the notebooks in order with papermill (synthetic profile by default). Resumes: a
## notebook that completed with unchanged inputs (results/<profile>/notebooks/manifest.json) is
## skipped. FORCE=1 reruns every notebook; JOBS=2 runs two at once, one thread each.
JOBS ?= 1
reproduce: venv
	$(PY) -m dapo.run_notebooks --profile $(PROFILE) -j $(JOBS) $(if $(FORCE),--force)

## A reviewer's check: every number of a re-run beside the committed one, in committed seed stds.
## RERUN (default results/$(PROFILE), as `make reproduce` rewrote it) is compared with the tables
## committed at GIT_REV (default HEAD); COMMITTED=dir compares with a folder instead.
RERUN ?= results/$(PROFILE)
GIT_REV ?= HEAD
.PHONY: verify
verify: venv
	$(PY) -m dapo.reproduce compare $(RERUN) --committed $(or $(COMMITTED),results/$(PROFILE)) \
		$(if $(COMMITTED),,$(if $(GIT_REV),--git $(GIT_REV)))

benchmarks: venv
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_pretrain_loader.py

clean-venv:
	rm -rf $(VENV)
