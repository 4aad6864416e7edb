# fer-study: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fer-study-installed

.PHONY: demo test lint env bench clean-demo ferplus-cpu help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

env: $(STAMP)  ## create .venv, install the package, register the Jupyter kernel, enable nbdime diffs (.gitconfig)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name fer-study --display-name "fer-study (Python 3.11)"
	-git config --local include.path ../.gitconfig  # notebook diffs via .venv's nbdime, from any shell (.gitconfig)
	touch $(STAMP)

demo: $(STAMP)  ## run the whole study on the embedded SynthFER data set (CPU-sized)
	$(BIN)/fer-study demo

test: $(STAMP)  ## ruff + pytest (unit tests and nbval notebook regression)
	$(BIN)/ruff check fer_study tests scripts
	FER_STUDY_SCRATCH=$$(mktemp -d) $(BIN)/python -m pytest -q tests --nbval-lax --nbval-current-env \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg $$($(BIN)/python -m fer_study.tables --nbval)

lint: $(STAMP)  ## ruff only
	$(BIN)/ruff check fer_study tests scripts

bench: $(STAMP)  ## CPU benchmark (results/bench/)
	$(BIN)/fer-study bench --device cpu --backbone swin_s --batch 8 --steps 10 --warmup 2 --baseline-images 64

# Table 2 on real FERPlus at CPU scale (README: Real faces). FERPLUS_ROOT: your FERPlus (FER2013Train/,
# FER2013Valid/, FER2013Test/, fer2013new.csv); this project's development copy by default.
FERPLUS_ROOT ?= ../shared/data/ferplus
FERPLUS_SR   := cache/facesr/facesr_ferplus.pt

ferplus-cpu: $(STAMP) results/ferplus_cpu/sr_eval.json  ## Table 2 on real FERPlus, CPU scale (FERPLUS_ROOT=...; hours on 2 cores; re-run resumes)
	$(BIN)/fer-study sr cache --profile ferplus-cpu --set ferplus_root=$(FERPLUS_ROOT)  # once, before two workers need it
	$(BIN)/fer-study run table2 --profile ferplus-cpu --seeds 0 1 2 --executor workers --jobs 2 \
	  --set ferplus_root=$(FERPLUS_ROOT)
	$(BIN)/fer-study report --profile ferplus-cpu

$(FERPLUS_SR): | $(STAMP)  # facesr self-supervised on the FERPlus training faces (24 -> 48)
	$(BIN)/fer-study sr train --folder $(FERPLUS_ROOT)/FER2013Train --lr-size 24 --holdout 0 --steps 1500 \
	  --batch-size 32 --out $(FERPLUS_SR)

results/ferplus_cpu/sr_eval.json: $(FERPLUS_SR)  # re-evaluated only when the weights are newer
	$(BIN)/fer-study sr eval --folder $(FERPLUS_ROOT)/FER2013Test --lr-size 24 --holdout 1 \
	  --model facesr=$(FERPLUS_SR) --out results/ferplus_cpu/sr_eval

clean-demo:  ## remove generated data, caches and run directories (never committed)
	rm -rf data/synthfer data/synthfer_rafdb cache results/runs
