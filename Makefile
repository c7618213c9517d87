# Two commands on a fresh machine: `make run` (launch tuitune with the offline demo models) and `make test`.
# The environment lives in .venv/; it is rebuilt when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tuitune-installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# llama-cpp-python compiles llama.cpp on first install (10–15 min on 2 cores); pip caches the wheel.
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/python -m pip install --quiet -e '.[demo,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tuitune compare "Tell me how to train my dog to sit" --models gemma-3-270m,smollm2-135m-instruct --temperature 0

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/bench_engine.py
	$(BIN)/python bench/bench_compare.py

clean:
	rm -rf $(VENV)
