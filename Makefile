# fer-study: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fer-study-installed

.PHONY: demo test lint env bench clean-demo help

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

clean-demo:  ## remove generated data, caches and run directories (never committed)
	rm -rf data/synthfer data/synthfer_rafdb cache results/runs
