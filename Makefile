# Every target creates .venv and installs what it needs on a fresh machine, offline models included.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# This machine keeps a CPU wheel of torch 2.13.0 on disk; elsewhere override, e.g. TORCH_SPEC="torch>=2.4".
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export HAYSTACK_TELEMETRY_ENABLED := False
PYTEST_ARGS ?=

STAMP := $(VENV)/.installed
INTEGRATIONS := $(wildcard integrations/langchain/pyproject.toml integrations/llama_index/pyproject.toml integrations/haystack/pyproject.toml)

.PHONY: venv wheels check-wheels bump demo serve test test-fast test-long test-ray lint docs docs-serve bench bench-standard bench-full bench-needle bench-structured bench-speed bench-cache bench-serve calibrate clean

$(STAMP): pyproject.toml $(INTEGRATIONS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev,serve,ray,docs,examples]" $(foreach p,$(INTEGRATIONS),-e "$(dir $(p))[test]")
	touch $@

venv: $(STAMP)

demo: $(STAMP)  ## the main job: plain RAG vs GemFilter RAG on the essays, offline
	$(BIN)/python examples/demo.py

serve: $(STAMP)  ## the compression service on the embedded default model, http://127.0.0.1:8000 (Ctrl-C stops it)
	$(BIN)/gemfilter serve --host 127.0.0.1 --port 8000

test: $(STAMP)  ## unit tests on tiny models + the real-model suite (the service and Ray Serve included)
	$(BIN)/python -m pytest -q -m "not slow and not gpu" $(PYTEST_ARGS)

test-fast: $(STAMP)  ## tiny models only
	$(BIN)/python -m pytest -q -m "not slow and not gpu and not real and not ray" $(PYTEST_ARGS)

test-ray: $(STAMP)  ## only the Ray Serve tests (a local Ray instance, two replicas)
	$(BIN)/python -m pytest -q -m ray $(PYTEST_ARGS)

test-long: $(STAMP)  ## property tests with many more examples
	GEMFILTER_HYPOTHESIS_PROFILE=long $(BIN)/python -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff, mypy, and the import layers (lint-imports: pyproject's [tool.importlinter])
	$(BIN)/ruff check gemfilter_rag integrations tests benchmarks examples docs/hooks.py conftest.py scripts
	$(BIN)/ruff format --check gemfilter_rag integrations tests benchmarks examples docs/hooks.py conftest.py scripts
	$(BIN)/mypy gemfilter_rag
	$(BIN)/lint-imports

docs: $(STAMP)  ## the documentation site into site/; --strict: a broken link or a missing docstring fails
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: $(STAMP)  ## the documentation site at http://127.0.0.1:8001, rebuilt on every change
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:8001

bench: $(STAMP)  ## quick quality benchmark: a smoke run of every data set, method and reader (< 20 min on 2 CPU cores)
	$(BIN)/python -m benchmarks.run --preset quick

bench-standard: $(STAMP)  ## the measurement: every peer and reader, CIs, paired tests, plots (about 2.3 h on 2 CPU cores; resumes)
	$(BIN)/python -m benchmarks.run --preset standard

bench-full: $(STAMP)  ## the standard run at issue 13's minimum sizes (5-6 h on 2 CPU cores; resumes after a crash)
	$(BIN)/python -m benchmarks.run --preset full

bench-needle: $(STAMP)  ## needle benchmark of every scoring and granularity (issue 4; hours on a CPU), then its report
	$(BIN)/python -m benchmarks.needle
	$(BIN)/python -m benchmarks.needle --report

bench-structured: $(STAMP)  ## structured lookups (JSON, tables, logs, code): answer kept, whole identifiers; GemFilter vs RAG vs BM25
	$(BIN)/python -m benchmarks.structured

bench-speed: $(STAMP)  ## filter pass vs full prefill, and end-to-end generation, on the default model
	$(BIN)/python -m benchmarks.speed

bench-cache: $(STAMP)  ## compress over 20 NQ passages with every chunk cached vs a cold call (the chunk cache's speed)
	$(BIN)/python -m benchmarks.cache_speed

bench-serve: $(STAMP)  ## the service under 1-64 concurrent clients, batching vs none, load shedding, faults (~15 min)
	$(BIN)/python -m benchmarks.serve

wheels: check-wheels

check-wheels: $(STAMP)  ## sdist + wheel of every package, twine check, a fresh venv from the wheels, a smoke test outside the checkout
	$(BIN)/python scripts/check_wheels.py --torch-spec "$(TORCH_SPEC)"

bump: $(STAMP)  ## one version for every package and the requirements between them: make bump VERSION=0.2.0
	@test -n "$(VERSION)" || { echo "usage: make bump VERSION=X.Y.Z" >&2; exit 2; }
	$(BIN)/python scripts/versions.py bump "$(VERSION)"

calibrate: $(STAMP)  ## measure the best filter layer of the default model
	$(BIN)/gemfilter calibrate --budget 256

clean:
	rm -rf $(VENV) build dist site *.egg-info .pytest_cache .mypy_cache .ruff_cache
