# Two commands on a fresh machine: `make run` (launch tuitune with the offline demo models) and `make test`.
# The environment lives in .venv/; it is rebuilt when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tuitune-installed

.PHONY: run test lint bench train-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "Installing tuitune into $(VENV)/ — the first time, llama-cpp-python compiles llama.cpp (10-15 min on 2 cores);"
	@echo "pip caches the built wheel, so later installs take seconds."
	@echo "torch first: 'torch==2.13.0' is the machine's local CPU build, so the train extra's 'torch>=2.13.0' is"
	@echo "already satisfied and pip never fetches torch's multi-GB CUDA wheels."
	$(BIN)/python -m pip install --quiet torch==2.13.0
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/python -m pip install --quiet -e '.[demo,dev,train,server]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tuitune

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/bench_engine.py
	$(BIN)/python bench/bench_compare.py
	$(BIN)/python bench/bench_tui.py
	$(BIN)/python bench/bench_download.py
	$(BIN)/python bench/bench_train.py

# Kept for older instructions: the environment above already has the training dependencies.
train-deps: $(STAMP)

clean:
	rm -rf $(VENV)
