# cryoorient: `make test` and `make figures` each work as the first command on a fresh clone.
SHELL := bash
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help

PYTHON  ?= python3
# PyTorch is pinned explicitly: an open requirement can pull a multi-GB CUDA build.
# On a GPU machine set e.g. TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126".
TORCH   ?= torch==2.13.0
PROFILE ?= default
VENV    := .venv
PY      := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# The paper's 5j0n map, when ../shared/data holds it (searched, never copied); else the notebooks
# download it or fall back to the embedded pseudo-protein with a warning.
export CRYOORIENT_MAPS ?= $(abspath $(wildcard ../shared/data))

.PHONY: help install test lint figures notebooks benchmark clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: $(INSTALLED)  ## create .venv and install the package with its notebook and test extras

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(TORCH)
	$(PY) -m pip install -e ".[notebooks,test]"
	touch $@

test: install lint  ## unit tests, notebook pairing checks and nbval on the notebooks
	$(PY) -m pytest

lint: install  ## ruff on the package, tests and notebook sources
	$(PY) -m ruff check cryoorient tests notebooks benchmarks conftest.py

figures: install  ## run the notebooks in order at PROFILE (default|paper) into build/, figures into figures/
	$(PY) -m cryoorient._notebooks run --profile $(PROFILE)

notebooks: install  ## re-execute every notebook at its defaults and refresh the paired .ipynb
	$(PY) -m cryoorient._notebooks refresh

benchmark: install  ## time the projector beside ASPIRE (see benchmarks/README.md); results in benchmarks/results/
	$(PY) benchmarks/projection.py

clean:  ## remove build products (keeps the data cache and .venv)
	rm -rf build
