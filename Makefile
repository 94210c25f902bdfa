# CoFEE: every target installs what it needs on a fresh machine (once, guarded by a stamp file).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Hydra overrides for the CLI targets, e.g. make pretrain-all ARGS="stages.esi.lr=1e-5"
ARGS ?=
# make sweep: a sweep YAML in W&B's format and how many runs (empty COUNT: the whole grid)
SWEEP ?= conf/sweep/finetune.yaml
COUNT ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export WANDB_MODE ?= offline

.PHONY: help install test test-slow pretrain-all build-anchors build-gazetteer build-cache denoising denoising-ablation esi-repeats fet-report fet-drift bench gpu-check study study-report study-esi study-esi-full study-fet study-quick study-gold study-stages study-kshot study-split study-all sweep lint format clean

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

test-slow: $(STAMP)  ## run only the slow tests (DDP, full builds, kill -9 and soak tests)
	$(BIN)/python -m pytest -m slow -q

build-anchors: $(STAMP)  ## build the Wikipedia anchor corpus (skipped when unchanged)
	$(BIN)/cofee-build-anchors $(ARGS)

build-gazetteer: $(STAMP)  ## build the gazetteer and the gazetteer-labelled corpus (skipped when unchanged)
	$(BIN)/cofee-build-gazetteer $(ARGS)

build-cache: $(STAMP)  ## the token caches a pretrain run with the same ARGS reads, built before a multi-GPU job
	$(BIN)/cofee-build-cache $(ARGS)

pretrain-all: $(STAMP)  ## build the corpora, then run the curriculum on the default data
	$(BIN)/cofee-build-anchors $(ARGS)
	$(BIN)/cofee-build-gazetteer $(ARGS)
	$(BIN)/cofee-pretrain $(ARGS)

bench: $(STAMP)  ## run the benchmarks; figures go to benchmarks/results/*.json and the table in benchmarks/README.md
	$(BIN)/python -m benchmarks.run_all $(BENCH)
	$(BIN)/python -m benchmarks.report benchmarks/README.md

# GPU_CHECK_ARGS: --device cpu (the dry path), --model /path/to/encoder, --batch-size N, --no-ddp
gpu-check: $(STAMP)  ## on a GPU machine: bf16 stage vs plain loop, 2-GPU DDP vs 1, FAISS GPU k-means (benchmarks/results/gpu_check.json)
	$(BIN)/python -m benchmarks.gpu_check $(GPU_CHECK_ARGS)

denoising: $(STAMP)  ## NEE per noise strategy vs. the gazetteer, on gold NER (conf/denoising.yaml; docs/results.md)
	$(BIN)/cofee-denoising $(ARGS)

# NEE loss settings against the defaults (noise.unknown=ignore, type_balance=0.5; `make denoising` first):
# each run is skipped when done, then scored; the table between the nee-ablation markers of docs/results.md.
ABLATION = $(BIN)/cofee-denoising denoising.readme=null
denoising-ablation: $(STAMP)  ## NEE loss settings compared (unknown=marginal/ignore, type balance): docs/results.md
	$(ABLATION) run_name=denoising-marginal 'denoising.strategies=[none,partial]' stages.nee.noise.unknown=marginal stages.nee.type_balance=0.0 denoising.results=results/nee_ablation_marginal.json
	$(ABLATION) run_name=denoising-ignore 'denoising.strategies=[partial]' stages.nee.type_balance=0.0 denoising.results=results/nee_ablation_ignore.json
	$(BIN)/cofee-report report=nee_ablation

# ESI on the corpus with unlinked repeats marked, then both ESI exports scored on both dev sets (docs/results.md);
# one epoch, as denoising's ESI (conf/denoising.yaml) that it is compared with.
REPEATS = data.anchors.build.mark_repeats=true data.anchors.corpus_dir=data/anchors-repeats
esi-repeats: $(STAMP)  ## what marking unlinked repeats does to ESI (needs the default ESI run of make denoising)
	$(BIN)/cofee-build-anchors $(REPEATS)
	$(BIN)/cofee-pretrain run_name=esi-repeats 'curriculum.stages=[esi]' stages.esi.max_epochs=1 $(REPEATS)
	$(BIN)/cofee-report report=esi_repeats

fet-report: $(STAMP)  ## stage-3 clusters vs fine types, before/after FET (results/fet_quality.json; docs/results.md)
	$(BIN)/cofee-report report=fet $(ARGS)

fet-drift: $(STAMP)  ## how far each of study-fet's FET variants moved the encoder, from NEE and from FET without clusters (docs/results.md)
	$(BIN)/cofee-report report=encoder_drift $(ARGS)

study: $(STAMP)  ## the low-resource study (conf/study.yaml): results/study.csv, docs/results.md table, docs/low_resource.png
	$(BIN)/cofee-study $(ARGS)

# the study and every follow-up, one after the other; each resumes from its finished rows (days on 2 CPU cores)
study-all: study study-quick study-stages study-kshot study-split study-gold study-esi study-esi-full study-fet  ## every study block of docs/results.md, in order

study-report: $(STAMP)  ## the study's table and plot from the rows in results/study.csv so far (no training)
	$(BIN)/cofee-study report_only=true $(ARGS)

study-esi: $(STAMP)  ## ESI's levers (MLM, distillation, BIOES boundaries, half and twice the steps, a span-level objective, unlinked repeats) against baseline and esi at 1% and 10% (conf/study_esi.yaml)
	$(BIN)/cofee-study --config-name study_esi $(ARGS)

study-esi-full: $(STAMP)  ## the best ESI levers followed by NEE and FET, against the one-epoch curriculum and the one without ESI at 1% and 4-shot (conf/study_esi_full.yaml)
	$(BIN)/cofee-study --config-name study_esi_full $(ARGS)

study-gold: $(STAMP)  ## whether the study hangs on NEE settings chosen with gold labels: two NEE loss settings against the default at 10% and 4-shot (conf/study_gold.yaml)
	$(BIN)/cofee-study --config-name study_gold $(ARGS)

study-fet: $(STAMP)  ## FET's levers (within types, typed spans, prototypes, cluster-head rate, k, refreshing by steps) against esi_nee_fet and its no-cluster control at 1% and 4-shot (conf/study_fet.yaml)
	$(BIN)/cofee-study --config-name study_fet $(ARGS)

study-stages: $(STAMP)  ## each stage left out of the one-epoch curriculum (nee_fet, esi_fet, esi_nee) against the whole at 1% and 4-shot (conf/study_stages.yaml)
	$(BIN)/cofee-study --config-name study_stages $(ARGS)

study-kshot: $(STAMP)  ## the k-shot protocol, k = 1, 4, 16 mentions per type: baseline against esi_nee_fet, 5 seeds (conf/study_kshot.yaml)
	$(BIN)/cofee-study --config-name study_kshot $(ARGS)

study-split: $(STAMP)  ## the main comparison on a second seeded split of WNUT16 beside the first, 1% and 10% (conf/study_split.yaml)
	$(BIN)/cofee-study --config-name study_split $(ARGS)

study-quick: $(STAMP)  ## baseline against the default curriculum (pre-trained afresh) at 10% and 4-shot, 5 seeds (conf/study_quick.yaml): results/study_quick.csv, its own block
	$(BIN)/cofee-study --config-name study_quick $(ARGS)

sweep: $(STAMP)  ## a W&B sweep YAML run offline: make sweep SWEEP=conf/sweep/finetune.yaml COUNT=8 (sweeps/<name>/results.csv)
	$(BIN)/cofee-sweep $(SWEEP) $(if $(COUNT),--count $(COUNT)) $(SWEEP_ARGS)

lint: $(STAMP)  ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:  ## remove the venv, build outputs and caches (not data/ or outputs/)
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
