# cryoorient: `make test` and `make figures` each work as the first command on a fresh clone.
SHELL := bash
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help

PYTHON  ?= python3
# PyTorch is pinned, and its CPU build is the default: on Linux, PyPI's torch is the CUDA build
# (~4 GB with its NVIDIA libraries). PyTorch's CPU index is offered beside PyPI, and pip prefers
# its 2.13.0+cpu to PyPI's 2.13.0; where that index cannot be reached pip warns and goes on with
# what it finds (a local CPU wheel from find-links, or else PyPI's build).
# On a GPU machine: make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
TORCH   ?= torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu
PROFILE ?= default
VENV    := .venv
PY      := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
BOOK_INSTALLED := $(VENV)/.installed-book
# The paper's 5j0n map, when ../shared/data holds it (searched, never copied); else the notebooks
# download it or fall back to the embedded pseudo-protein with a warning.
export CRYOORIENT_MAPS ?= $(abspath $(wildcard ../shared/data))

.PHONY: help install test test-fast lint figures notebooks book paper benchmark clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: $(INSTALLED)  ## create .venv and install the package with its notebook and test extras

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(TORCH)
	$(PY) -m pip install -e ".[notebooks,test]"
	touch $@

# The book extra beside the others, for make book and for make test (tests/test_book.py builds it)
$(BOOK_INSTALLED): $(INSTALLED)
	$(PY) -m pip install -e ".[book]"
	touch $@

test: install $(BOOK_INSTALLED) lint  ## unit tests, notebook pairing checks and nbval on the notebooks
	$(PY) -m pytest

test-fast: install  ## unit tests not marked slow (no notebooks): the edit-test loop, < 2 min
	$(PY) -m pytest -m "not slow" tests

lint: install  ## ruff on the package, tests and notebook sources; the package's import layers
	$(PY) -m ruff check cryoorient tests notebooks benchmarks book conftest.py
	$(VENV)/bin/lint-imports --no-cache

figures: install  ## run the notebooks (01-11, 99) at PROFILE (default|paper): figures/, paper/ report, README table (default: the paired .ipynb too)
	$(PY) -m cryoorient._notebooks run --profile $(PROFILE)
	$(PY) -m cryoorient.report

notebooks: install  ## re-execute every notebook at its defaults and refresh the paired .ipynb
	$(PY) -m cryoorient._notebooks refresh

benchmark: install  ## projection, recovery, reconstruction, training, common-lines, scale and matching benchmarks -> paper/benchmarks.md
	$(PY) benchmarks/run_all.py

book: $(BOOK_INSTALLED)  ## the course: executed notebooks (as stored, none re-run), results, figures, report -> build/book/
	$(PY) book/build.py --out build/book

paper: paper/main.pdf  ## the companion note paper/main.pdf (needs LaTeX; numbers and figures from make figures)

paper/main.pdf: paper/main.tex paper/numbers.tex $(wildcard figures/fig_*.pdf)
	@command -v latexmk >/dev/null || { \
	  echo "make paper needs latexmk and a LaTeX distribution; latexmk is not on the PATH."; \
	  echo "Install them, e.g.: sudo apt-get install --no-install-recommends latexmk texlive-latex-base"; \
	  echo "(macOS: brew install --cask mactex-no-gui; conda: conda install -c conda-forge texlive-core latexmk)."; \
	  echo "Or upload paper/main.tex, paper/numbers.tex and figures/ to Overleaf."; exit 1; }
	cd paper && latexmk -pdf -interaction=nonstopmode -halt-on-error main.tex

clean:  ## remove build products (keeps the data cache and .venv)
	rm -rf build
	cd paper && rm -f main.pdf main.aux main.log main.fls main.fdb_latexmk main.out
