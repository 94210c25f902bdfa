# CoFEE: every target installs what it needs on a fresh machine (once, guarded by a stamp file).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Hydra overrides for the CLI targets, e.g. make pretrain-all ARGS="stages.esi.lr=1e-5"
ARGS ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export WANDB_MODE ?= offline

.PHONY: help install test test-slow pretrain-all build-anchors bench study lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install cofee with its dev tools

test: $(STAMP)  ## run the test suite (fast tests; slow ones are marked)
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: $(STAMP)  ## run only the slow tests (DDP, full builds)
	$(BIN)/python -m pytest -m slow -q

build-anchors: $(STAMP)  ## build the Wikipedia anchor corpus (skipped when unchanged)
	$(BIN)/cofee-build-anchors $(ARGS)

pretrain-all: $(STAMP)  ## build the corpus, then run the curriculum on the default data
	$(BIN)/cofee-build-anchors $(ARGS)
	$(BIN)/cofee-pretrain $(ARGS)

bench: $(STAMP)  ## run the benchmarks; figures go to benchmarks/results/*.json and the README table
	$(BIN)/python -m benchmarks.run_all $(BENCH)
	$(BIN)/python -m benchmarks.report README.md

study: $(STAMP)  ## the low-resource study (conf/study.yaml): results/study.csv, README table, docs/low_resource.png
	$(BIN)/cofee-study $(ARGS)

lint: $(STAMP)  ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:  ## remove the venv, build outputs and caches (not data/ or outputs/)
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
