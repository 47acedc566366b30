# nlcore: the front door. `make` alone lists the targets (each target's `## comment`).
# Every target is one line over Python, so each works without make too.

.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp
PIP := $(PY) -m pip --disable-pip-version-check -q

# torch first, then the package: pip then finds torch satisfied and pulls nothing more.
# - an NVIDIA GPU: whatever pip gives (the CUDA build);
# - Linux without one: the CPU build, pinned +cpu so that pip fails loudly rather than download
#   several GB of CUDA packages; PyTorch's CPU index serves it, and a machine without network
#   access finds it in a local wheel folder of pip's configuration (find-links);
# - elsewhere (macOS, Windows): the default build, which is the CPU one there.
# `make torch-spec` prints the choice; override it with make env TORCH_SPEC="...".
TORCH_VERSION ?= 2.13.0
CPU_INDEX ?= https://download.pytorch.org/whl/cpu
HAS_GPU ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
UNAME_S ?= $(shell uname -s)
TORCH_SPEC ?= $(if $(HAS_GPU),torch,$(if $(filter Linux,$(UNAME_S)),torch==$(TORCH_VERSION)+cpu --extra-index-url $(CPU_INDEX),torch==$(TORCH_VERSION)))

# Data: ../shared/data (absolute) when it exists; otherwise empty, and loaders fall back.
NLCORE_DATA ?= ../shared/data
override NLCORE_DATA := $(if $(wildcard $(NLCORE_DATA)),$(abspath $(NLCORE_DATA)),$(if $(filter ../shared/data,$(NLCORE_DATA)),,$(NLCORE_DATA)))
export NLCORE_DATA
export HF_DATASETS_OFFLINE ?= 1
export HF_HUB_OFFLINE ?= 1
export MPLBACKEND ?= Agg
export PYTHONHASHSEED ?= 0

NOTEBOOKS := $(wildcard notebooks/[0-9][0-9]_*.py notebooks/[0-9][0-9]_*.ipynb)
# xdist workers and notebook kernels get one thread each (two 2-thread processes on 2 cores
# contend and slow down 30-40x; see the environment notes).
ONE_THREAD := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

.PHONY: help env torch-spec test test-fast smoke figures notebooks docs lint clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install $(TORCH_SPEC) && $(PIP) install -e ".[notebooks,dev]" && touch $(STAMP)

env: $(STAMP) ## create .venv and install torch + nlcore[notebooks,dev] (instant when done)

torch-spec: ## print the torch requirement `make env` installs on this machine
	@echo "$(TORCH_SPEC)"

test: env ## the full test suite: unit tests, then every notebook in the committed and smoke views (2 workers)
	$(ONE_THREAD) $(PY) -m pytest -m "not notebooks" -n 2 && { rc=0; $(PY) -m pytest -q --collect-only -m notebooks >/dev/null 2>&1 || rc=$$?; if [ $$rc -eq 5 ]; then echo "no notebook tests yet: notebook stage skipped"; else $(ONE_THREAD) $(PY) -m pytest -m notebooks -n 2; fi; }

test-fast: env ## unit tests only, without those marked slow
	$(PY) -m pytest -m "not notebooks and not slow" -q

smoke: env ## every notebook in the smoke view: the whole pipeline small, offline, on any CPU (build/smoke/)
	$(ONE_THREAD) $(PY) -m nlcore notebooks --view smoke

figures: env ## redraw figures/ from the committed results (the committed view), on any CPU
	$(ONE_THREAD) $(PY) -m nlcore notebooks --view committed --publish $(if $(ONLY),--only $(ONLY))

notebooks: env ## re-execute every notebook in the committed view into notebooks/NN_name.ipynb, and figures/
	$(ONE_THREAD) $(PY) -m nlcore notebooks --view committed --publish --write-ipynb $(if $(ONLY),--only $(ONLY))

docs: env ## regenerate the generated tables of README.md and docs/*.md from results/
	$(PY) scripts/readme_tables.py

lint: env ## ruff over nlcore, tests, scripts and notebooks/*.py
	$(PY) -m ruff check .

clean: ## remove build outputs and caches (keeps .venv, figures/, results/)
	rm -rf build .pytest_cache .ruff_cache && find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
