# Every target creates .venv and installs what it needs on a fresh machine, offline models included.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# This machine keeps a CPU wheel of torch 2.13.0 on disk; elsewhere override, e.g. TORCH_SPEC="torch>=2.4".
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
PYTEST_ARGS ?=

STAMP := $(VENV)/.installed
INTEGRATIONS := $(wildcard integrations/langchain/pyproject.toml integrations/llama_index/pyproject.toml)

.PHONY: venv demo test test-fast test-long lint bench bench-standard bench-needle bench-speed calibrate clean

$(STAMP): pyproject.toml $(INTEGRATIONS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]" $(foreach p,$(INTEGRATIONS),-e "$(dir $(p))[test]")
	touch $@

venv: $(STAMP)

demo: $(STAMP)  ## the main job: plain RAG vs GemFilter RAG on the essays, offline
	$(BIN)/python examples/demo.py

test: $(STAMP)  ## unit tests on tiny models + the real-model suite
	$(BIN)/python -m pytest -q -m "not slow and not gpu" $(PYTEST_ARGS)

test-fast: $(STAMP)  ## tiny models only
	$(BIN)/python -m pytest -q -m "not slow and not gpu and not real" $(PYTEST_ARGS)

test-long: $(STAMP)  ## property tests with many more examples
	GEMFILTER_HYPOTHESIS_PROFILE=long $(BIN)/python -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check gemfilter_rag integrations tests benchmarks examples
	$(BIN)/ruff format --check gemfilter_rag integrations tests benchmarks examples
	$(BIN)/mypy gemfilter_rag

bench: $(STAMP)  ## quick quality benchmark: a smoke run of every data set, method and reader (< 20 min on 2 CPU cores)
	$(BIN)/python -m benchmarks.run --preset quick

bench-standard: $(STAMP)  ## the measurement of issue 13 (hours on 2 CPU cores; resumes after a crash): tables, CIs, plots
	$(BIN)/python -m benchmarks.run --preset standard

bench-needle: $(STAMP)  ## needle benchmark of every scoring and granularity (issue 4; hours on a CPU), then its report
	$(BIN)/python -m benchmarks.needle
	$(BIN)/python -m benchmarks.needle --report

bench-speed: $(STAMP)  ## filter pass vs full prefill, and end-to-end generation, on the default model
	$(BIN)/python -m benchmarks.speed

calibrate: $(STAMP)  ## measure the best filter layer of the default model
	$(BIN)/gemfilter calibrate --budget 256

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
