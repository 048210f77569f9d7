# riemannian-flows developer entry points.
#
#   make demo                  # main job: create .venv if needed, install, run `python -m experiments main`
#   make test                  # whole test suite
#   make test SYSTEM_TORCH=1   # reuse the torch you already have (venv gets --system-site-packages)
#   make test RF_DATA_ROOT=/path/to/shared/data PYTEST_ARGS='-m "not slow" --dtype float32'
#   make bench                 # install the baseline flow libraries (.[bench]) and benchmark
#   make docs                  # API reference with Sphinx (.[docs]); a warning is an error
#   make clean                 # remove .venv and build/test caches
#
# torch is installed FIRST and pinned (TORCH_SPEC) so that the package's `torch>=2.1`
# requirement is already satisfied and pip never resolves torch on its own (which would
# pull a multi-GB CUDA build).

PYTHON       ?= python3
VENV         ?= .venv
TORCH_SPEC   ?= torch==2.13.0
SYSTEM_TORCH ?=
RF_DATA_ROOT ?=
PYTEST_ARGS  ?=
BENCH_ARGS   ?=

PY          := $(VENV)/bin/python
BENCH_STAMP := $(VENV)/.installed-bench
DOCS_STAMP  := $(VENV)/.installed-docs

# The stamp name records the mode, so switching SYSTEM_TORCH re-runs (and checks) the install step.
ifeq ($(SYSTEM_TORCH),1)
VENV_FLAGS := --system-site-packages
STAMP      := $(VENV)/.installed-system-torch
else
VENV_FLAGS :=
STAMP      := $(VENV)/.installed
endif

.PHONY: venv test demo bench docs clean

venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)

$(STAMP): setup.cfg pyproject.toml | $(PY)
ifeq ($(SYSTEM_TORCH),1)
	@grep -qi '^include-system-site-packages *= *true' $(VENV)/pyvenv.cfg || { \
	  echo "error: $(VENV) was created without --system-site-packages; run 'make clean' and retry with SYSTEM_TORCH=1" >&2; exit 1; }
	@$(PY) -c "import sys, torch; v = tuple(int(p) for p in torch.__version__.split('+')[0].split('.')[:2]); \
	print('SYSTEM_TORCH=1: using torch', torch.__version__, 'from', torch.__file__); \
	sys.exit(0 if v >= (2, 1) else 'error: torch>=2.1 required; unset SYSTEM_TORCH to install $(TORCH_SPEC) in $(VENV)')" \
	|| { echo "error: SYSTEM_TORCH=1 needs a usable torch>=2.1 visible to $(PYTHON); unset SYSTEM_TORCH to install $(TORCH_SPEC)" >&2; exit 1; }
else
	$(PY) -m pip install '$(TORCH_SPEC)'
endif
	$(PY) -m pip install -e '.[test]'
	touch $@

# nflows/normflows require an unpinned `torch`; the torch already in the venv satisfies it.
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -e '.[bench]'
	touch $@

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -e '.[docs]'
	touch $@

docs: $(DOCS_STAMP)
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

test: $(STAMP)
	RF_DATA_ROOT='$(RF_DATA_ROOT)' $(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	RF_DATA_ROOT='$(RF_DATA_ROOT)' $(PY) -m experiments main

bench: $(BENCH_STAMP)
	RF_DATA_ROOT='$(RF_DATA_ROOT)' $(PY) -m experiments.bench flows --maf $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis docs/_build
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
