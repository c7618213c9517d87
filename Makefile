# Two commands on a fresh machine: `make run` (launch tuitune with the offline demo models) and `make test`.
# The environment lives in .venv/; it is rebuilt when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tuitune-installed

.PHONY: run test lint bench train-deps doctor clean

# GPU: the llama.cpp backend `make run` builds llama-cpp-python for — cuda (the default when nvcc is on PATH and
# nvidia-smi lists a GPU: a CUDA build cannot even load without the driver), metal (the default on Apple silicon),
# vulkan, or cpu (the default otherwise). The install above is always the CPU build, which `make test` and CI use;
# another backend reinstalls llama-cpp-python from source with its CMake flag (10-15 min, never from or into pip's
# wheel cache), and switching back to cpu reinstalls the cached CPU wheel.
GPU_BACKENDS := cuda metal vulkan cpu
ifeq ($(origin GPU),undefined)
GPU := $(shell if command -v nvcc >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then echo cuda; \
	elif [ "$$(uname -s)-$$(uname -m)" = Darwin-arm64 ]; then echo metal; else echo cpu; fi)
endif
LLAMA_STAMP := $(VENV)/.llama-$(strip $(GPU))
CMAKE_FLAGS_cuda := -DGGML_CUDA=on
CMAKE_FLAGS_metal := -DGGML_METAL=on
CMAKE_FLAGS_vulkan := -DGGML_VULKAN=on
GPU_CHECK_cuda := command -v nvcc >/dev/null || { echo "GPU=cuda needs the CUDA toolkit: nvcc on PATH" >&2; exit 1; }
GPU_CHECK_metal := [ "$$(uname -s)" = Darwin ] || { echo "GPU=metal needs macOS on Apple silicon" >&2; exit 1; }
GPU_CHECK_vulkan := command -v glslc >/dev/null || { echo "GPU=vulkan needs the Vulkan SDK: glslc on PATH" >&2; exit 1; }
OTHER_LLAMA_BUILDS = $(filter-out $(LLAMA_STAMP),$(wildcard $(VENV)/.llama-*))
LLAMA_VERSION = $$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
GPU_ERROR = GPU='$(GPU)' is not a llama.cpp backend tuitune builds: use GPU=cuda, GPU=metal, GPU=vulkan or GPU=cpu

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

# One stamp per backend: the one present says which build is installed; a different GPU rebuilds.
$(LLAMA_STAMP): $(STAMP)
	$(if $(and $(filter 1,$(words $(GPU))),$(filter $(GPU),$(GPU_BACKENDS))),,$(error $(GPU_ERROR)))
ifeq ($(strip $(GPU)),cpu)
	$(if $(OTHER_LLAMA_BUILDS),CMAKE_ARGS= $(BIN)/python -m pip install --quiet --force-reinstall --no-deps \
		"llama-cpp-python==$(LLAMA_VERSION)")
else
	@$(GPU_CHECK_$(strip $(GPU)))
	@echo "Rebuilding llama-cpp-python for $(GPU) (10-15 min); make run GPU=cpu goes back to the CPU build."
	CMAKE_ARGS="$(CMAKE_FLAGS_$(strip $(GPU)))" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc 2>/dev/null || sysctl -n hw.ncpu) \
		$(BIN)/python -m pip install --force-reinstall --no-deps --no-binary llama-cpp-python --no-cache-dir \
		"llama-cpp-python==$(LLAMA_VERSION)"
endif
	rm -f $(VENV)/.llama-*
	touch $@

run: $(LLAMA_STAMP)
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
	$(BIN)/python bench/bench_discovery.py
	$(BIN)/python bench/bench_train.py

doctor: $(STAMP)
	$(BIN)/tuitune doctor

# Kept for older instructions: the environment above already has the training dependencies.
train-deps: $(STAMP)

clean:
	rm -rf $(VENV)
