# The two commands of the README: `make demo` (the main job on the embedded Shapes data) and `make test`.
# Both create .venv on first use and install the project with its pinned dependencies; the stamp file
# makes a second run reinstall nothing unless settings.ini or setup.py changed.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Without a real Quarto, tools/quarto (smalldocs underneath) renders the same site from _proc/.
QUARTO_PATH := $(if $(shell command -v quarto 2>/dev/null | grep -v '^$(CURDIR)/tools'),,$(CURDIR)/tools:)
export PATH := $(QUARTO_PATH)$(CURDIR)/$(BIN):$(PATH)

# tools/quarto typesets the site's maths at build time with KaTeX from npm (pinned in package-lock.json); only that
# path needs Node.js. katex 0.19's CLI dependency (commander) declares node>=22: npm warns on node 20, the library works.
KATEX := node_modules/.katex-installed

.PHONY: install katex demo test sync nbtest pytest docs docs-check sysdeps bench coco-scale gpu-check gpu-wheels clean

$(STAMP): settings.ini setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[dev]"
	@if [ -e .git ]; then $(BIN)/nbdev_install_hooks >/dev/null; fi
	@touch $(STAMP)

install: $(STAMP)

$(KATEX): package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "error: the docs' maths needs Node.js and npm: run \`make sysdeps\` (apt-get install nodejs npm)"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $(KATEX)

katex: $(KATEX)

demo: install
	$(BIN)/sat_reproduce shapes --out demo_out

# JupyterLab with this venv as the kernel (its python3 kernel is .venv's ipykernel): run the notebooks step by step.
lab: install
	$(BIN)/jupyter lab --notebook-dir=nbs

# System packages the tests need: Chromium for the docs check, Java for METEOR (coco-caption).
sysdeps:
	@bash tools/sysdeps.sh

test: install sysdeps sync nbtest pytest docs docs-check

# Fail when the committed notebooks are not clean or the exported library is stale.
sync: install
	@bash tools/check_sync.sh

nbtest: install
	$(BIN)/nbdev_test --n_workers 2 --timing

pytest: install
	$(BIN)/python -m pytest -q tests --ignore=tests/docs

docs: install $(if $(QUARTO_PATH),katex)
	@rm -rf _docs
	$(BIN)/nbdev_readme
	$(BIN)/nbdev_docs --n_workers 1

# README.md is generated from nbs/index.ipynb: a stale committed copy fails the check.
docs-check: install
	@git diff --quiet -- README.md index_files 2>/dev/null || { echo "error: README.md differs from what nbs/index.ipynb renders to; commit the regenerated README.md and index_files/"; exit 1; }
	$(BIN)/python -m pytest -q tests/docs

# The CPU suite of bench/ (bench/README.md), about 8 minutes on 2 cores: the summary in bench/results/latest.md and latest.json,
# each topic's results in bench/results/cpu/.
bench: install
	$(BIN)/python bench/run.py

# The COCO run rehearsed at full size on the CPU (bench/coco_scale.py): synthetic COCO-sized data through sat_prepare, a capped
# epoch of sat_train, sat_evaluate and SCST's reward statistics, each stage's time, peak memory and disk in
# bench/results/coco_scale.md and .json. About a quarter of an hour on 2 cores (13 min measured) and 27 GB of disk (its --work folder; checked
# first); resumable. Not part of `make test`. Smaller: `$(BIN)/python bench/coco_scale.py --scale 0.1`.
coco-scale: install
	$(BIN)/python bench/coco_scale.py

# The GPU checks on a machine with CUDA (tools/gpu_check.sh): install, the #| gpu notebook cells, pytest -m gpu, and the GPU
# suite of bench/ (bench/run.py --device cuda). Results in bench/results/ (the summary; bench/results/gpu/ for the rest), or
# under $OUT; without a CUDA device it fails at once with "error: no CUDA device ...".
gpu-check:
	@bash tools/gpu_check.sh

# On a machine with network: the wheels gpu-check needs on a GPU machine without network (whose python3 has torch but not
# fastai, nbdev, ...), into .whl/; copy the tree with .whl/ there (tools/gpu_check.sh's header gives the steps).
gpu-wheels:
	@bash tools/gpu_wheels.sh

clean:
	rm -rf _docs _proc build *.egg-info node_modules
